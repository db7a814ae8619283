//! The node agent's main loop (manifest-directory source): watch the manifests and the endpoint
//! reports, compile, sync, write status. One pass per change; a pass never stops enforcement of
//! what it cannot change (bad input is reported and the rest applies).

mod endpoints;
mod host;
mod observing;
pub mod socket;
mod source;
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
    source::{kube::KubeError, manifest},
    sync::Syncer,
};

pub use endpoints::{EndpointRecord, ENDPOINT_FILE_SUFFIX};
pub use source::Source;
pub use status::Status;

/// How the agent runs.
#[derive(Debug, Clone)]
pub struct Settings {
    pub node: String,
    /// Where the cluster model comes from: a manifest directory or the Kubernetes API.
    pub source: Source,
    pub endpoints: PathBuf,
    pub bpffs: PathBuf,
    pub status: Option<PathBuf>,
    pub uplink: Option<String>,
    pub allow_node_traffic: bool,
    pub poll: Duration,
    /// The local socket for the CNI plugin and the CLI.
    pub socket: Option<PathBuf>,
    /// Flow log, metrics, audit mode.
    pub observe: crate::observe::ObserveSettings,
}

/// Errors that stop the agent (everything else is reported and survived).
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
    #[error("reading manifests: {0}")]
    Manifests(#[from] manifest::ManifestError),
    #[error("Kubernetes API source: {0}")]
    Kube(#[from] KubeError),
    #[error(transparent)]
    Observe(#[from] crate::observe::ObserveError),
    #[error("local socket {path}: {source}")]
    Socket {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
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
    let mut cfg = config(settings.allow_node_traffic);
    settings.observe.apply_to(&mut cfg);
    dp.set_config(cfg)?;
    if let Some(uplink) = &settings.uplink {
        let mode = dp.attach(uplink, Hook::Uplink)?;
        tracing::info!(uplink, ?mode, "uplink attached");
    }
    let shared = socket::Shared::new(settings.endpoints.clone());
    if let Some(path) = &settings.socket {
        socket::serve(path, shared.clone()).map_err(|source| DaemonError::Socket {
            path: path.clone(),
            source,
        })?;
        tracing::info!(socket = %path.display(), "listening");
    }
    let running = source::Running::start(settings)?;
    let observer =
        crate::observe::Observer::start(&settings.node, &settings.observe, shared.board.clone())?;
    let mut agent = Agent::new(settings, shared, running);
    agent.observer = Some(observer);
    agent.syncer.set_audit_all(settings.observe.audit);
    let adopted = agent.syncer.adopt(&mut dp)?;
    if adopted > 0 {
        tracing::info!(
            endpoints = adopted,
            "adopting the state of an earlier agent (nothing flushed)"
        );
    }
    while !STOP.load(Ordering::SeqCst) {
        agent.pass(&mut dp, settings)?;
        agent.observe(&mut dp, settings);
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
    manifests_seen: Option<source::Mark>,
    /// Whether the manifest directory is missing or unreadable (logged once per outage).
    source_down: bool,
    endpoints_seen: Option<watch::Fingerprint>,
    revision: u64,
    attached: BTreeMap<crate::model::ObjectKey, crate::sync::Attachment>,
    notes: Vec<String>,
    endpoint_notes: Vec<String>,
    /// The model as the source gives it (before CNI-reported IPs are merged in).
    source: Model,
    records: Vec<EndpointRecord>,
    shared: std::sync::Arc<socket::Shared>,
    /// When the last pass left something undone (retried after [`RETRY_EVERY`]).
    last_failed: Option<Instant>,
    running: source::Running,
    observer: Option<crate::observe::Observer>,
}

/// How often work that failed is retried.
const RETRY_EVERY: Duration = Duration::from_secs(1);

impl Agent {
    fn new(
        settings: &Settings,
        shared: std::sync::Arc<socket::Shared>,
        running: source::Running,
    ) -> Self {
        let options = CompileOptions {
            node: Some(settings.node.clone()),
            allow_node_traffic: settings.allow_node_traffic,
        };
        Self {
            compiler: Compiler::new(options),
            syncer: Syncer::new(),
            manifests_seen: None,
            source_down: false,
            endpoints_seen: None,
            revision: 0,
            attached: BTreeMap::new(),
            notes: Vec::new(),
            endpoint_notes: Vec::new(),
            source: Model::new(),
            records: Vec::new(),
            shared,
            last_failed: None,
            running,
            observer: None,
        }
    }

    /// One pass: reload what changed, compile, sync, and publish status.
    fn pass(&mut self, dp: &mut Dataplane, s: &Settings) -> Result<(), DaemonError> {
        // The API source has nothing to apply before it listed everything once.
        let Some(mut m) = self.source_mark(s) else {
            return Ok(());
        };
        let e = watch::fingerprint(&s.endpoints);
        let unchanged =
            self.manifests_seen.as_ref() == Some(&m) && self.endpoints_seen.as_ref() == Some(&e);
        // Work that failed (a full map, an interface not there yet) is retried every second.
        let retry = self.last_failed.is_some_and(|t| t.elapsed() >= RETRY_EVERY);
        if unchanged && !retry {
            return Ok(());
        }
        let started = Instant::now();
        let mut revision = self.revision;
        if self.manifests_seen.as_ref() != Some(&m) {
            match self.reload_source(s, m) {
                Ok(loaded) => (m, revision) = loaded,
                // The directory went away between the check and the load: an outage too.
                Err(DaemonError::Manifests(e)) => {
                    tracing::warn!("{e}; keeping the last state");
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
        if self.endpoints_seen.as_ref() != Some(&e) {
            (self.attached, self.records) = endpoints::load(&s.endpoints, &mut self.endpoint_notes);
        }
        let compile_started = Instant::now();
        self.recompile();
        let compiled = compile_started.elapsed();
        let report = self.syncer.sync(
            dp,
            self.compiler.output(),
            self.compiler.model(),
            &self.attached,
        );
        self.manifests_seen = Some(m);
        self.endpoints_seen = Some(e);
        let failed = !report.problems.is_empty() || !self.endpoint_notes.is_empty();
        self.last_failed = failed.then(Instant::now);
        self.revision = revision;
        self.observed(dp, s, &report, (started, compiled));
        tracing::info!(
            revision,
            endpoints = report.endpoints.len(),
            writes = report.map_writes,
            ms = started.elapsed().as_millis() as u64,
            "synced"
        );
        let notes: Vec<String> = self
            .notes
            .iter()
            .chain(&self.endpoint_notes)
            .cloned()
            .collect();
        let mut status = Status::new(revision, &report, self.compiler.output(), &notes);
        status.kube = self.running.health();
        if let Some(path) = &s.status {
            status.write(path);
        }
        self.shared.publish(status);
        Ok(())
    }

    /// The source's mark now; `None`: nothing to apply. A manifest directory that is missing or
    /// unreadable is a source outage, not an empty cluster (which would fail every pod closed,
    /// or open if read as "no policies"): the last state stays enforced and endpoint changes
    /// still apply against it (the mark of the last load); before any load, nothing is applied.
    fn source_mark(&mut self, s: &Settings) -> Option<source::Mark> {
        if let Source::Manifests(dir) = &s.source {
            let readable = std::fs::read_dir(dir).is_ok();
            if readable == self.source_down {
                self.source_down = !readable;
                if readable {
                    tracing::info!(dir = %dir.display(), "manifest directory readable again");
                } else {
                    tracing::warn!(dir = %dir.display(), "manifest directory missing or unreadable: keeping the last state until it is back");
                }
            }
            if !readable {
                return self.manifests_seen.clone();
            }
        }
        self.running.mark()
    }

    /// Takes the source's current model; returns its mark and revision.
    fn reload_source(
        &mut self,
        s: &Settings,
        mark: source::Mark,
    ) -> Result<(source::Mark, u64), DaemonError> {
        let Some(loaded) = self.running.load(mark.clone())? else {
            return Ok((mark, self.revision));
        };
        self.notes = loaded.notes;
        for n in &self.notes {
            tracing::warn!("{n}");
        }
        let mut model = loaded.model;
        model.apply(ModelChange::UpsertNode(Node {
            name: s.node.clone(),
            addresses: host::addresses(),
            labels: Default::default(),
        }));
        self.source = model;
        Ok((loaded.mark, loaded.revision))
    }

    /// Compiles the source's model, with each local pod's IPs taken from its CNI report when its
    /// status has none yet (the kubelet publishes the IP only after CNI ADD has returned).
    fn recompile(&mut self) {
        let mut model = self.source.clone();
        for rec in &self.records {
            let key = crate::model::ObjectKey::new(&rec.namespace, &rec.name);
            if let Some(pod) = model.pods.get_mut(&key) {
                if pod.ips.is_empty() {
                    pod.ips = rec.ips.clone();
                }
            }
        }
        let changes = self.compiler.model().changes_to(&model);
        if changes.is_empty() {
            return;
        }
        self.compiler.apply(changes);
        for p in &self.compiler.output().problems {
            tracing::warn!("{p}");
        }
    }
}
