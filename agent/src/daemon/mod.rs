//! The node agent's main loop (manifest-directory source): watch the manifests and the endpoint
//! reports, compile, sync, write status. One pass per change; a pass never stops enforcement of
//! what it cannot change (bad input is reported and the rest applies).

mod endpoints;
mod host;
mod status;
mod watch;

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use crate::{
    compiler::{CompileOptions, Compiler},
    dataplane::{is_bpffs, mount_bpffs, Dataplane, DataplaneError, Hook},
    model::{Model, ModelChange, Node},
    source::manifest,
    sync::Syncer,
};

pub use endpoints::{EndpointRecord, ENDPOINT_FILE_SUFFIX};
pub use status::Status;

/// How the agent runs.
#[derive(Debug, Clone)]
pub struct Settings {
    pub node: String,
    pub manifests: PathBuf,
    pub endpoints: PathBuf,
    pub bpffs: PathBuf,
    pub status: Option<PathBuf>,
    pub uplink: Option<String>,
    pub allow_node_traffic: bool,
    pub poll: Duration,
}

/// Errors that stop the agent (everything else is reported and survived).
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
    #[error("reading manifests: {0}")]
    Manifests(#[from] manifest::ManifestError),
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Runs until SIGTERM or SIGINT. Nothing is detached on exit: pinned programs and maps keep
/// enforcing until a new agent adopts them.
pub fn run(settings: &Settings) -> Result<(), DaemonError> {
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(
            libc::SIGTERM,
            on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
        libc::signal(
            libc::SIGINT,
            on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
    }
    if !is_bpffs(&settings.bpffs) {
        mount_bpffs(&settings.bpffs)?;
    }
    let mut dp = Dataplane::load(&settings.bpffs)?;
    dp.set_config(config(settings.allow_node_traffic))?;
    if let Some(uplink) = &settings.uplink {
        let mode = dp.attach(uplink, Hook::Uplink)?;
        tracing::info!(uplink, ?mode, "uplink attached");
    }
    let mut agent = Agent::new(settings);
    let adopted = agent.syncer.adopt(&mut dp)?;
    if adopted > 0 {
        tracing::info!(
            endpoints = adopted,
            "adopting the state of an earlier agent (nothing flushed)"
        );
    }
    while !STOP.load(Ordering::SeqCst) {
        agent.pass(&mut dp, settings)?;
        std::thread::sleep(settings.poll);
    }
    tracing::info!("stopping; programs and maps stay pinned");
    Ok(())
}

fn config(allow_node_traffic: bool) -> palisade_common::endpoint::Config {
    let flags = if allow_node_traffic {
        palisade_common::endpoint::CFG_ALLOW_HOST
    } else {
        0
    };
    palisade_common::endpoint::Config {
        flags,
        allow_events_per_sec: 0,
    }
}

struct Agent {
    compiler: Compiler,
    syncer: Syncer,
    manifests_seen: Option<watch::Fingerprint>,
    endpoints_seen: Option<watch::Fingerprint>,
    revision: u64,
    attached: BTreeMap<crate::model::ObjectKey, crate::sync::Attachment>,
    notes: Vec<String>,
}

impl Agent {
    fn new(settings: &Settings) -> Self {
        let options = CompileOptions {
            node: Some(settings.node.clone()),
            allow_node_traffic: settings.allow_node_traffic,
        };
        Self {
            compiler: Compiler::new(options),
            syncer: Syncer::new(),
            manifests_seen: None,
            endpoints_seen: None,
            revision: 0,
            attached: BTreeMap::new(),
            notes: Vec::new(),
        }
    }

    /// One pass: reload what changed, compile, sync, and write status.
    fn pass(&mut self, dp: &mut Dataplane, s: &Settings) -> Result<(), DaemonError> {
        let m = watch::fingerprint(&s.manifests);
        let e = watch::fingerprint(&s.endpoints);
        if self.manifests_seen.as_ref() == Some(&m) && self.endpoints_seen.as_ref() == Some(&e) {
            return Ok(());
        }
        let started = Instant::now();
        let revision = watch::revision(&s.manifests);
        if self.manifests_seen.as_ref() != Some(&m) {
            self.reload_manifests(s)?;
        }
        if self.endpoints_seen.as_ref() != Some(&e) {
            self.attached = endpoints::load(&s.endpoints, &mut self.notes);
        }
        let report = self.syncer.sync(
            dp,
            self.compiler.output(),
            self.compiler.model(),
            &self.attached,
        );
        self.manifests_seen = Some(m);
        self.endpoints_seen = Some(e);
        self.revision = revision;
        tracing::info!(
            revision,
            endpoints = report.endpoints.len(),
            writes = report.map_writes,
            ms = started.elapsed().as_millis() as u64,
            "synced"
        );
        if let Some(path) = &s.status {
            let status = Status::new(revision, &report, self.compiler.output(), &self.notes);
            status.write(path);
        }
        Ok(())
    }

    fn reload_manifests(&mut self, s: &Settings) -> Result<(), DaemonError> {
        let loaded = manifest::load_dir(&s.manifests)?;
        self.notes = loaded
            .notes
            .iter()
            .map(|n| format!("{}#{}: {}", n.file.display(), n.document, n.message))
            .collect();
        for n in &self.notes {
            tracing::warn!("{n}");
        }
        let mut model = loaded.model;
        model.apply(ModelChange::UpsertNode(Node {
            name: s.node.clone(),
            addresses: host::addresses(),
        }));
        let changes = diff(self.compiler.model(), &model);
        self.compiler.apply(changes);
        for p in &self.compiler.output().problems {
            tracing::warn!("{p}");
        }
        Ok(())
    }
}

/// The changes that turn `old` into `new`.
fn diff(old: &Model, new: &Model) -> Vec<ModelChange> {
    let mut out = Vec::new();
    macro_rules! section {
        ($field:ident, $upsert:ident, $delete:ident) => {
            for (k, v) in &new.$field {
                if old.$field.get(k) != Some(v) {
                    out.push(ModelChange::$upsert(v.clone()));
                }
            }
            for k in old.$field.keys() {
                if !new.$field.contains_key(k) {
                    out.push(ModelChange::$delete(k.clone()));
                }
            }
        };
    }
    section!(namespaces, UpsertNamespace, DeleteNamespace);
    section!(nodes, UpsertNode, DeleteNode);
    section!(pods, UpsertPod, DeletePod);
    section!(services, UpsertService, DeleteService);
    section!(policies, UpsertPolicy, DeletePolicy);
    out
}
