//! `--source kube`: the case state goes to a real API server (etcd, kube-apiserver 1.20 and the
//! namespace controller, [`crate::kube::ControlPlane`]) instead of a manifest directory, and the
//! agents watch it (`--source kube --kubeconfig ...`, through a relay into each node's
//! namespace).
//!
//! Every change is a client call as kubectl would make it: namespaces, pods and Services
//! applied server-side, NetworkPolicies created or replaced, pod status (phase, `podIP(s)`) written through the
//! status subresource as the kubelet would (the pods themselves run on the test nodes, wired
//! by the real CNI plugins, and each node's endpoint reports are written as for the manifest
//! source), deletions made with a zero grace period and followed to their end.
//!
//! Readiness: each write returns the object's `resourceVersion` (etcd's revision), a deletion's
//! comes from a watch. The agents report, per kind, the highest version their model reflects
//! (`kube.resources.<kind>.resource_version`), so the runner waits until every agent has
//! applied everything it wrote ([`KubeFeed::targets`]), not for a while.
//!
//! A field the 1.20 server does not know (`endPort`) is dropped silently: every object is
//! compared with what the server stored, and a case that loses a field fails here with
//! [`KubeFeedError::Dropped`]; the runner then runs it through the manifest source.

pub mod client;
mod objects;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use client::{dropped_fields, version_of, ApiClient, Kind, ObjRef};
use serde_json::Value;

use super::manifests::{ManifestError, Runtime};
use super::world::World;
use crate::cluster::TestCluster;
use crate::kube::{Binaries, ControlPlane, ControlPlaneError, LoopbackForward};

/// How long a namespace may take to be finalized by its controller.
const NAMESPACE_GONE: Duration = Duration::from_secs(60);
/// How long any other deletion may take to show in a watch.
const OBJECT_GONE: Duration = Duration::from_secs(20);

/// Starting the API server or writing to it failed.
#[derive(Debug, thiserror::Error)]
pub enum KubeFeedError {
    #[error("API server: {0}")]
    ControlPlane(#[from] ControlPlaneError),
    #[error("kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    #[error("Kubernetes client: {0}")]
    Client(#[from] kube::Error),
    #[error("starting the client runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("cannot {action} {object}: {source}")]
    Write {
        action: &'static str,
        object: String,
        #[source]
        source: kube::Error,
    },
    #[error("{object} was not deleted: {why}")]
    NotDeleted { object: String, why: String },
    #[error("API object JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{object}: {why}")]
    BadObject { object: String, why: String },
    #[error(transparent)]
    Render(#[from] ManifestError),
    #[error("the API server dropped {} of {object} (it does not know the field{})", fields.join(", "), if fields.len() == 1 { "" } else { "s" })]
    Dropped { object: String, fields: Vec<String> },
}

impl KubeFeedError {
    fn write(r: &ObjRef, action: &'static str, source: kube::Error) -> Self {
        KubeFeedError::Write {
            action,
            object: r.to_string(),
            source,
        }
    }
}

/// The API server of one environment and what the runner has written to it. Dropped: the
/// relays stop, then the control plane (its processes by PID, its directory removed).
#[derive(Debug)]
pub struct KubeFeed {
    client: ApiClient,
    /// Each object as last applied (before the server's defaults).
    written: BTreeMap<ObjRef, Value>,
    /// Each pod's status as last written.
    statuses: BTreeMap<ObjRef, Value>,
    /// Per kind, the highest resourceVersion of the runner's writes and deletions.
    targets: BTreeMap<Kind, u64>,
    _relays: Vec<LoopbackForward>,
    control_plane: ControlPlane,
}

impl KubeFeed {
    /// Starts a control plane from the cached binaries (`cargo xtask k8s build`) and relays
    /// its port into the namespace of each of `cluster`'s first `nodes` nodes.
    pub fn start(cluster: &TestCluster, nodes: usize) -> Result<Self, KubeFeedError> {
        let parent = std::env::temp_dir();
        crate::kube::cleanup_stale(&parent);
        let control_plane = ControlPlane::start(&Binaries::locate()?, &parent)?;
        let relays = (0..nodes)
            .map(|n| control_plane.forward_into(cluster.node(n).netns_name()))
            .collect::<Result<Vec<_>, _>>()?;
        let client = ApiClient::connect(&control_plane.kubeconfig())?;
        Ok(KubeFeed {
            client,
            written: BTreeMap::new(),
            statuses: BTreeMap::new(),
            targets: BTreeMap::new(),
            _relays: relays,
            control_plane,
        })
    }

    /// The kubeconfig the agents use (valid inside the node namespaces too).
    pub fn kubeconfig(&self) -> PathBuf {
        self.control_plane.kubeconfig()
    }

    /// Per kind (its key in the agents' status), the resourceVersion every agent must have
    /// applied to reflect all the runner's changes.
    pub fn targets(&self) -> BTreeMap<&'static str, u64> {
        self.targets
            .iter()
            .map(|(k, v)| (k.health_key(), *v))
            .collect()
    }

    /// The API server's last log lines, for failure reports.
    pub fn log_tail(&self) -> String {
        self.control_plane.log_tail("kube-apiserver")
    }

    fn reached(&mut self, kind: Kind, version: Option<u64>) {
        if let Some(v) = version {
            let t = self.targets.entry(kind).or_default();
            *t = (*t).max(v);
        }
    }

    /// Brings the API to `world` (pods: those in `runtime`): deletions first, most dependent
    /// kind first (a namespace last, after its objects), then creations and changes, namespaces
    /// first. Returns whether anything changed. An object the server stored without a field
    /// it was given is [`KubeFeedError::Dropped`], reported after the whole sync.
    pub fn sync(&mut self, world: &World, runtime: &Runtime) -> Result<bool, KubeFeedError> {
        let desired = objects::render(world, runtime)?;
        let mut gone: Vec<ObjRef> = self
            .written
            .keys()
            .filter(|r| !desired.contains_key(*r))
            .cloned()
            .collect();
        gone.sort_by_key(|r| std::cmp::Reverse(r.kind));
        let changed = !gone.is_empty();
        for r in gone {
            let timeout = match r.kind {
                Kind::Namespace => NAMESPACE_GONE,
                _ => OBJECT_GONE,
            };
            let version = self.client.delete(&r, timeout)?;
            self.reached(r.kind, version);
            self.written.remove(&r);
            self.statuses.remove(&r);
        }
        let mut dropped = None;
        let mut applied = false;
        for (r, want) in desired {
            if self.written.get(&r) != Some(&want.object) {
                // Policies as `kubectl create`/`replace` would write them, so that the server
                // stores what it understands (a server-side apply refuses unknown fields).
                let stored = match r.kind {
                    Kind::NetworkPolicy => self.client.create_or_replace(&r, &want.object)?,
                    _ => self.client.apply(&r, &want.object)?,
                };
                self.reached(r.kind, version_of(&stored));
                let fields = dropped_fields(&want.object, &stored);
                if !fields.is_empty() && dropped.is_none() {
                    dropped = Some(KubeFeedError::Dropped {
                        object: r.to_string(),
                        fields,
                    });
                }
                self.written.insert(r.clone(), want.object);
                applied = true;
            }
            if let Some(status) = want.status {
                if self.statuses.get(&r) != Some(&status) {
                    let stored = self.client.pod_status(&r, &status)?;
                    self.reached(r.kind, version_of(&stored));
                    self.statuses.insert(r, status);
                    applied = true;
                }
            }
        }
        match dropped {
            Some(e) => Err(e),
            None => Ok(changed || applied),
        }
    }
}
