//! Seeing into the agent: the flow log (verdict events as JSON lines naming pods and policies),
//! Prometheus metrics, the live state behind `palisade status`, and live `explain`/`lint`
//! answered by the main loop. See `docs/observability.md` and `docs/metrics.md`.
//!
//! The main loop owns the dataplane; it calls [`Observer::tick`] every iteration (every ~50 ms)
//! to drain the events ring buffer, refresh counters and answer queued socket questions, and
//! [`Observer::synced`] after each sync.

pub mod args;
pub mod board;
pub mod flowlog;
pub mod live;
pub mod metrics;
pub mod names;
mod tick;
pub mod timefmt;

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use palisade_common::endpoint::{Config, CFG_ALLOW_EVENTS};

pub use args::ObserveArgs;
pub use board::{Board, ExplainQuery, Live, Query};
pub use flowlog::{FlowLog, FlowRecord, Target};
pub use metrics::Metrics;
pub use names::Names;

use crate::{
    compiler::CompiledOutput,
    model::{Model, ObjectKey},
    sync::Attachment,
};

/// The annotation that puts a namespace in audit mode (value `"true"`).
pub const AUDIT_ANNOTATION: &str = crate::model::AUDIT_ANNOTATION;

/// What can go wrong observing (none of it stops enforcement).
#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    #[error("flow log {path}: {source}")]
    FlowLog {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("encoding a flow record: {0}")]
    Json(#[source] serde_json::Error),
    #[error("metrics endpoint {addr}: {source}")]
    Metrics {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// The agent's observability settings (command-line flags).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObserveSettings {
    /// Where the flow log goes (`None`: no flow log).
    pub flow_log: Option<Target>,
    /// Also log allowed new flows (sampled in the programs).
    pub flow_log_allows: bool,
    /// User-space limit of flow log records per second (0 = unlimited).
    pub flow_log_rate: u32,
    /// Allow events the programs may send per CPU per second when allows are logged.
    pub allow_events_per_sec: u32,
    /// Serve Prometheus metrics here.
    pub metrics_addr: Option<SocketAddr>,
    /// Audit mode for every endpoint of the node (namespaces can opt in with
    /// [`AUDIT_ANNOTATION`]).
    pub audit: bool,
}

impl Default for ObserveSettings {
    fn default() -> Self {
        Self {
            flow_log: None,
            flow_log_allows: false,
            flow_log_rate: 1000,
            allow_events_per_sec: 100,
            metrics_addr: None,
            audit: false,
        }
    }
}

impl ObserveSettings {
    /// Adds the allow-event bits to the programs' config.
    pub fn apply_to(&self, cfg: &mut Config) {
        if self.flow_log_allows {
            cfg.flags |= CFG_ALLOW_EVENTS;
            cfg.allow_events_per_sec = self.allow_events_per_sec;
        }
    }
}

/// What the main loop lets the observer see.
#[derive(Debug, Clone, Copy)]
pub struct View<'a> {
    pub node: &'a str,
    /// The node's compiled output (what the syncer writes).
    pub output: &'a CompiledOutput,
    pub model: &'a Model,
    pub attached: &'a BTreeMap<ObjectKey, Attachment>,
    pub audit_all: bool,
    pub generation: u32,
}

impl View<'_> {
    /// Whether `pod`'s namespace (or the whole agent) is in audit mode.
    pub fn audit(&self, pod: &ObjectKey) -> bool {
        self.audit_all || self.model.namespace_audited(&pod.namespace)
    }
}

/// One sync, as the main loop measured it.
#[derive(Debug, Clone)]
pub struct SyncInfo {
    /// `manifests <dir>` or the like.
    pub source: String,
    pub healthy: bool,
    pub detail: String,
    /// When the change was seen.
    pub seen: Instant,
    pub compile: Duration,
    /// From the change seen to the maps written.
    pub latency: Duration,
}

/// The main-loop side of observability.
#[derive(Debug)]
pub struct Observer {
    names: Names,
    flow: Option<FlowLog>,
    metrics: Arc<Metrics>,
    board: Arc<Board>,
    last_counters: Option<Instant>,
    last_conntrack: Option<Instant>,
}

/// How often the per-CPU counters are read.
const COUNTERS_EVERY: Duration = Duration::from_secs(1);
/// How often the conntrack table is walked to count its entries.
const CONNTRACK_EVERY: Duration = Duration::from_secs(10);

impl Observer {
    /// Opens the flow log and starts the metrics endpoint.
    pub fn start(
        node: &str,
        settings: &ObserveSettings,
        board: Arc<Board>,
    ) -> Result<Self, ObserveError> {
        let flow = match &settings.flow_log {
            Some(t) => Some(FlowLog::new(t.clone(), settings.flow_log_rate)?),
            None => None,
        };
        let metrics = Arc::new(Metrics::new());
        let bound = match settings.metrics_addr {
            Some(addr) => Some(metrics::serve(addr, metrics.clone())?),
            None => None,
        };
        if let Some(addr) = bound {
            tracing::info!(%addr, "metrics at /metrics");
        }
        board.set_metrics(metrics.clone());
        board.update(|l| {
            l.node = node.to_owned();
            l.started_at = timefmt::rfc3339(std::time::SystemTime::now());
            l.metrics_addr = bound.map(|a| a.to_string());
            l.audit.agent = settings.audit;
            l.flow_log = settings.flow_log.as_ref().map(|t| board::FlowLogView {
                target: match t {
                    Target::Stdout => "-".to_owned(),
                    Target::File { path, .. } => path.display().to_string(),
                },
                allows: settings.flow_log_allows,
                rate: settings.flow_log_rate,
                ..board::FlowLogView::default()
            });
        });
        Ok(Self {
            names: Names {
                node: node.to_owned(),
                ..Names::default()
            },
            flow,
            metrics,
            board,
            last_counters: None,
            last_conntrack: None,
        })
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }
}
