//! A real Kubernetes API server for tests, and (with the `kube` feature) a small client that
//! does what tests and the conformance runner need: namespaces, pods, services and policies
//! created as kubectl would, and pod status written as a kubelet would.
//!
//! ```no_run
//! # #[cfg(feature = "kube")]
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use palisade_tests::kube::{Binaries, ControlPlane, TestApi};
//! let cp = ControlPlane::start(&Binaries::locate()?, &std::env::temp_dir())?;
//! let api = TestApi::connect(&cp.kubeconfig())?;
//! api.namespace("x", &[("team", "a")])?;
//! api.pod("x", "a", "node-0", &[("app", "a")], &[(80, "TCP", Some("http"))])?;
//! api.pod_status("x", "a", &["10.244.0.2".parse()?], "Running")?;
//! api.policy("x", "deny-all", serde_json::json!({"podSelector": {}}))?;
//! # Ok(()) }
//! # #[cfg(not(feature = "kube"))] fn main() {}
//! ```

#[cfg(feature = "kube")]
mod api;
mod control_plane;
mod forward;
mod pki;

use std::path::{Path, PathBuf};

#[cfg(feature = "kube")]
pub use api::{ApiError, TestApi};
pub use control_plane::{cleanup_stale, stop_detached, ControlPlane, Ports, StateFile, STATE_FILE};
pub use forward::LoopbackForward;
pub use pki::Pki;

/// Overrides where the API server binaries are (a directory with `kube-apiserver` and
/// `kube-controller-manager`, and optionally `etcd`).
pub const BIN_ENV: &str = "PALISADE_K8S_BIN";

/// Errors of the control plane harness.
#[derive(Debug, thiserror::Error)]
pub enum ControlPlaneError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no {what} at {path}: build it once with `cargo xtask k8s up` (or set {BIN_ENV})")]
    NotBuilt { what: &'static str, path: PathBuf },
    #[error("no free loopback port: {0}")]
    Ports(#[source] std::io::Error),
    #[error("starting {bin}: {source}")]
    Spawn {
        bin: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{name} exited ({status}); its log ends with:\n{log}")]
    Exited {
        name: String,
        status: std::process::ExitStatus,
        log: String,
    },
    #[error("{name} did not become ready; its log ends with:\n{log}")]
    NotReady { name: String, log: String },
    #[error("running kubectl (needed to check readiness): {0}")]
    Kubectl(#[source] std::io::Error),
    #[error(transparent)]
    Exec(#[from] crate::exec::ExecError),
    #[error("writing the state file: {0}")]
    State(#[source] serde_json::Error),
    #[error("relaying the API server into a node namespace: {0}")]
    Forward(#[source] std::io::Error),
    #[error(transparent)]
    Netns(#[from] crate::netns::NetnsError),
}

/// Where `cargo xtask k8s` caches what it builds: `~/.cache/palisade/k8s`.
pub fn cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cache")
        });
    base.join("palisade").join("k8s")
}

/// The control plane's programs.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub apiserver: PathBuf,
    pub controller_manager: PathBuf,
    pub etcd: PathBuf,
}

impl Binaries {
    /// The binaries in `dir` (etcd there, or Debian's `/usr/bin/etcd`).
    pub fn in_dir(dir: &Path) -> Result<Self, ControlPlaneError> {
        let need = |what: &'static str, path: PathBuf| {
            if path.is_file() {
                Ok(path)
            } else {
                Err(ControlPlaneError::NotBuilt { what, path })
            }
        };
        let etcd = [dir.join("etcd"), PathBuf::from("/usr/bin/etcd")]
            .into_iter()
            .find(|p| p.is_file())
            .unwrap_or_else(|| PathBuf::from("/usr/bin/etcd"));
        Ok(Self {
            apiserver: need("kube-apiserver", dir.join("kube-apiserver"))?,
            controller_manager: need(
                "kube-controller-manager",
                dir.join("kube-controller-manager"),
            )?,
            etcd: need("etcd", etcd)?,
        })
    }

    /// `$PALISADE_K8S_BIN`, else the cache `cargo xtask k8s up` fills.
    pub fn locate() -> Result<Self, ControlPlaneError> {
        let dir = std::env::var_os(BIN_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| cache_dir().join("bin"));
        Self::in_dir(&dir)
    }
}
