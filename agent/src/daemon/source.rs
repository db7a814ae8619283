//! Where the agent's model comes from: the manifest directory (polled by fingerprint) or the
//! Kubernetes API (a [`KubeSource`] snapshot, taken whenever its generation changes).

use std::path::{Path, PathBuf};

use super::{watch, DaemonError, EndpointRecord, Settings, ENDPOINT_FILE_SUFFIX};
use crate::{
    cni::discover,
    model::Model,
    source::{
        kube::{Health, KubeSettings, KubeSource},
        manifest,
    },
};

/// The agent's source setting.
#[derive(Debug, Clone)]
pub enum Source {
    /// A directory of manifests (and its `.revision` counter).
    Manifests(PathBuf),
    /// The Kubernetes API.
    Kube(KubeSettings),
}

/// A started source.
#[derive(Debug)]
pub(super) enum Running {
    Manifests(PathBuf),
    Kube {
        source: KubeSource,
        /// This node's name and endpoint-report directory, for start-up discovery.
        node: String,
        endpoints: PathBuf,
        discovered: bool,
    },
}

/// What the source looked like at a pass: a change means reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Mark {
    Dir(watch::Fingerprint),
    Generation(u64),
}

/// A loaded model with its revision (the manifests' `.revision` or the API generation).
pub(super) struct Loaded {
    pub mark: Mark,
    pub revision: u64,
    pub model: Model,
    pub notes: Vec<String>,
}

impl Running {
    pub fn start(settings: &Settings) -> Result<Self, DaemonError> {
        Ok(match &settings.source {
            Source::Manifests(dir) => Self::Manifests(dir.clone()),
            Source::Kube(kube) => Self::Kube {
                source: KubeSource::start(kube.clone())?,
                node: settings.node.clone(),
                endpoints: settings.endpoints.clone(),
                discovered: false,
            },
        })
    }

    /// `None` while the API source has not listed everything once (nothing to apply yet).
    pub fn mark(&self) -> Option<Mark> {
        match self {
            Self::Manifests(dir) => Some(Mark::Dir(watch::fingerprint(dir))),
            Self::Kube { source, .. } => source.generation().map(Mark::Generation),
        }
    }

    /// The source's model now (`None`: the API source has no complete model yet).
    pub fn load(&mut self, mark: Mark) -> Result<Option<Loaded>, DaemonError> {
        match self {
            Self::Manifests(dir) => {
                let revision = watch::revision(dir);
                let loaded = manifest::load_dir(dir)?;
                let notes = loaded
                    .notes
                    .iter()
                    .map(|n| format!("{}#{}: {}", n.file.display(), n.document, n.message))
                    .collect();
                Ok(Some(Loaded {
                    mark,
                    revision,
                    model: loaded.model,
                    notes,
                }))
            }
            Self::Kube {
                source,
                node,
                endpoints,
                discovered,
            } => {
                let Some((generation, model)) = source.snapshot() else {
                    return Ok(None);
                };
                if !*discovered {
                    *discovered = true;
                    discover_local_pods(&model, node, endpoints);
                }
                Ok(Some(Loaded {
                    mark: Mark::Generation(generation),
                    revision: generation,
                    model,
                    notes: source.health().notes,
                }))
            }
        }
    }

    /// The API source's health (none for manifests).
    pub fn health(&self) -> Option<Health> {
        match self {
            Self::Manifests(_) => None,
            Self::Kube { source, .. } => Some(source.health()),
        }
    }
}

/// Start-up discovery: this node's pods that have IPs but no endpoint report were wired before
/// Palisade was installed (or while no agent ran), so no CNI ADD will report them. Their host
/// interfaces are found in the node's routes, neighbours and bridge ports, and reported as
/// the CNI plugin would have.
fn discover_local_pods(model: &Model, node: &str, endpoints: &Path) {
    let local = model
        .pods
        .values()
        .filter(|p| p.node_name.as_deref() == Some(node) && p.is_endpoint());
    for pod in local {
        // The name the socket's `cni_add` gives a pod's report.
        let path = endpoints.join(format!(
            "{}_{}{ENDPOINT_FILE_SUFFIX}",
            pod.namespace, pod.name
        ));
        if path.exists() {
            continue;
        }
        let Some(ifname) = pod.ips.iter().find_map(|ip| discover::host_interface(*ip)) else {
            tracing::warn!(pod = %pod.key(), ips = ?pod.ips, "pod found in the API but not on this node's interfaces; not attached until its next CNI ADD");
            continue;
        };
        let record = EndpointRecord {
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            ifname: ifname.clone(),
            ips: pod.ips.clone(),
        };
        let tmp = path.with_extension("discovered.tmp");
        let written = serde_json::to_vec(&record)
            .map_err(std::io::Error::other)
            .and_then(|bytes| {
                std::fs::create_dir_all(endpoints)?;
                std::fs::write(&tmp, bytes)
            })
            .and_then(|()| std::fs::rename(&tmp, &path));
        match written {
            Ok(()) => {
                tracing::info!(pod = %pod.key(), ifname, "discovered a pod wired before the agent started")
            }
            Err(e) => tracing::warn!(pod = %pod.key(), "recording a discovered pod: {e}"),
        }
    }
}
