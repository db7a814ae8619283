//! The dataplane: one struct ([`Dataplane`]) owns the loaded programs and maps; nothing else in
//! the agent knows a map's name. See `docs/dataplane.md`.

mod attach;
mod bpffs;
mod inspect;
mod loader;
mod maps;
mod testrun;

pub use attach::{ifindex, AttachMode, Hook};
pub use bpffs::{is_bpffs, mount as mount_bpffs, PrivateBpffs};
pub use inspect::MapKind;
pub use loader::{Dataplane, LoadOptions, OBJECT_EMBEDDED};
pub use maps::{
    identity_key, identity_key_raw, identity_net, policy_key, policy_value, Existing, PortBlock,
};
pub use testrun::TestRunOutcome;

/// Everything that can go wrong in the dataplane.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("this agent was built without its eBPF object (AYA_BUILD_SKIP=1); rebuild without it")]
    NoObject,
    #[error("loading the eBPF object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("program {name}: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("map {0} missing from the eBPF object")]
    MissingMap(&'static str),
    #[error("program {0} missing from the eBPF object")]
    MissingProgram(&'static str),
    #[error("pinning {path}: {source}")]
    Pin {
        path: std::path::PathBuf,
        #[source]
        source: aya::pin::PinError,
    },
    #[error("link {path}: {source}")]
    Link {
        path: std::path::PathBuf,
        #[source]
        source: aya::programs::links::LinkError,
    },
    #[error("bpffs at {path}: {source}")]
    Bpffs {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("interface {name}: {source}")]
    Interface {
        name: String,
        #[source]
        source: std::io::Error,
    },
}
