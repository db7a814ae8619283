//! Loading the embedded object with every map pinned by name under a versioned directory, so that
//! a restarted agent adopts the maps the running programs use instead of replacing them.

use std::path::{Path, PathBuf};

use aya::{programs::SchedClassifier, Ebpf, EbpfLoader};
use palisade_common::{
    conntrack::{MAP_CONNTRACK, MAP_FRAGMENTS},
    endpoint::{MAP_CONFIG, MAP_ENDPOINTS, MAP_SERVICES, MAP_SLOTS},
    event::{MAP_AUDITED, MAP_COUNTERS, MAP_EVENTS},
    identity::MAP_IDENTITY,
    policy::MAP_POLICY,
    PIN_VERSION,
};

use super::{attach::Hook, DataplaneError};

/// The eBPF object built by `build.rs` (empty when built with `AYA_BUILD_SKIP=1`).
pub static OBJECT_EMBEDDED: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/palisade-ebpf"));

/// Maps pinned by name. The scratch map is per-CPU working memory and is pinned too so that every
/// program generation shares one layout.
const PINNED_MAPS: [&str; 13] = [
    MAP_ENDPOINTS,
    MAP_SLOTS,
    MAP_CONFIG,
    MAP_IDENTITY,
    MAP_POLICY,
    MAP_SERVICES,
    MAP_CONNTRACK,
    MAP_FRAGMENTS,
    MAP_EVENTS,
    MAP_COUNTERS,
    MAP_AUDITED,
    "PAL_SCRATCH_V1",
    "PAL_RATE_V1",
];

/// The loaded programs and maps. Owns them; every map access goes through its typed accessors.
pub struct Dataplane {
    pub(super) ebpf: Ebpf,
    pub(super) root: PathBuf,
}

impl std::fmt::Debug for Dataplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dataplane")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

/// Map sizes to use instead of the defaults (capacity tests use small tables). A size only
/// applies when the map is created; an adopted pinned map keeps its size.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    pub conntrack_entries: Option<u32>,
    pub policy_entries: Option<u32>,
    pub identity_entries: Option<u32>,
    pub endpoint_entries: Option<u32>,
}

impl Dataplane {
    /// Loads the programs, pinning (or adopting) every map under `<bpffs>/palisade/<version>/`.
    /// `bpffs` must be a bpffs mount (for example `/sys/fs/bpf` or a [`super::PrivateBpffs`]).
    pub fn load(bpffs: &Path) -> Result<Self, DataplaneError> {
        Self::load_with(bpffs, &LoadOptions::default())
    }

    /// [`Dataplane::load`] with map sizes of the caller's choosing.
    pub fn load_with(bpffs: &Path, options: &LoadOptions) -> Result<Self, DataplaneError> {
        if OBJECT_EMBEDDED.is_empty() {
            return Err(DataplaneError::NoObject);
        }
        let root = bpffs.join("palisade").join(PIN_VERSION);
        let maps_dir = root.join("maps");
        for dir in [&maps_dir, &root.join("links")] {
            std::fs::create_dir_all(dir).map_err(|source| DataplaneError::Bpffs {
                path: dir.clone(),
                source,
            })?;
        }
        let mut loader = EbpfLoader::new();
        let paths: Vec<(&str, PathBuf)> =
            PINNED_MAPS.iter().map(|m| (*m, maps_dir.join(m))).collect();
        for (name, path) in &paths {
            loader.map_pin_path(name, path.as_path());
        }
        let sizes = [
            (MAP_CONNTRACK, options.conntrack_entries),
            (MAP_POLICY, options.policy_entries),
            (MAP_IDENTITY, options.identity_entries),
            (MAP_ENDPOINTS, options.endpoint_entries),
        ];
        for (name, size) in sizes {
            if let Some(size) = size {
                loader.map_max_entries(name, size);
            }
        }
        let mut ebpf = loader.load(OBJECT_EMBEDDED)?;
        for hook in Hook::ALL {
            let name = hook.program_name();
            let prog: &mut SchedClassifier = ebpf
                .program_mut(name)
                .ok_or(DataplaneError::MissingProgram(name))?
                .try_into()
                .map_err(|source| DataplaneError::Program { name, source })?;
            prog.load()
                .map_err(|source| DataplaneError::Program { name, source })?;
        }
        Ok(Self { ebpf, root })
    }

    /// The versioned pin directory.
    pub fn pin_root(&self) -> &Path {
        &self.root
    }

    pub(super) fn program(&mut self, hook: Hook) -> Result<&mut SchedClassifier, DataplaneError> {
        let name = hook.program_name();
        self.ebpf
            .program_mut(name)
            .ok_or(DataplaneError::MissingProgram(name))?
            .try_into()
            .map_err(|source| DataplaneError::Program { name, source })
    }

    /// Removes everything this agent pinned (clean uninstall). Attached tcx links go with their
    /// pins once the last fd closes; clsact filters (kernels without tcx) are removed from every
    /// interface of the current network namespace.
    pub fn uninstall(self) -> Result<(), DataplaneError> {
        super::attach::remove_clsact_filters();
        let root = self.root.clone();
        drop(self);
        std::fs::remove_dir_all(&root)
            .map_err(|source| DataplaneError::Bpffs { path: root, source })
    }
}
