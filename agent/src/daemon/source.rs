//! Where the agent's model comes from: the manifest directory (polled by fingerprint) or the
//! Kubernetes API (a [`KubeSource`] snapshot, taken whenever its generation changes).

use std::path::{Path, PathBuf};

use super::{watch, DaemonError, Settings, ENDPOINT_FILE_SUFFIX};
use crate::{
    cni::discover::{Candidate, Discoverer},
    model::Model,
    source::{
        kube::{Health, KubeError, KubeSettings, KubeSource},
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
        /// This node's name and endpoint-report directory, for discovery.
        node: String,
        endpoints: PathBuf,
        discoverer: Discoverer,
    },
}

/// What the source looked like at a pass: a change means reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Mark {
    Dir(watch::Fingerprint),
    /// The API model's generation, and how many watches are failing (so that the status shows
    /// an outage as it starts and ends, although the model does not change).
    Generation(u64, usize),
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
                source: KubeSource::start(KubeSettings {
                    node: Some(settings.node.clone()),
                    ..kube.clone()
                })?,
                node: settings.node.clone(),
                endpoints: settings.endpoints.clone(),
                discoverer: Discoverer::start().map_err(KubeError::Thread)?,
            },
        })
    }

    /// `None` while the API source has not listed everything once (nothing to apply yet).
    pub fn mark(&self) -> Option<Mark> {
        match self {
            Self::Manifests(dir) => Some(Mark::Dir(watch::fingerprint(dir))),
            Self::Kube { source, .. } => source
                .generation()
                .map(|g| Mark::Generation(g, source.failing())),
        }
    }

    /// The source's model now (`None`: the API source has no complete model yet).
    pub fn load(&self, mark: Mark) -> Result<Option<Loaded>, DaemonError> {
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
                discoverer,
            } => {
                let Some((generation, model)) = source.snapshot() else {
                    return Ok(None);
                };
                discoverer.offer(local_pods(&model, node, endpoints));
                Ok(Some(Loaded {
                    mark: Mark::Generation(generation, source.failing()),
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

/// This node's pods that have IPs, for discovery: a pod with an IP but no endpoint report was
/// wired without the CNI plugin (before Palisade was installed, or while the node's CNI had
/// rewritten its configuration), so no CNI ADD will report it.
fn local_pods(model: &Model, node: &str, endpoints: &Path) -> Vec<Candidate> {
    model
        .pods
        .values()
        .filter(|p| p.node_name.as_deref() == Some(node) && p.is_endpoint())
        .map(|p| Candidate {
            namespace: p.namespace.clone(),
            name: p.name.clone(),
            ips: p.ips.clone(),
            // The name the socket's `cni_add` gives a pod's report.
            report: endpoints.join(format!("{}_{}{ENDPOINT_FILE_SUFFIX}", p.namespace, p.name)),
        })
        .collect()
}
