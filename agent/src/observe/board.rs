//! The board: what the main loop publishes for `palisade status` beyond the sync status (map
//! usage, counters, flow log, watch health, recent errors), and the queue through which socket
//! threads ask the main loop, which owns the dataplane, for live answers (explain, lint).

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{mpsc, Arc, Mutex, PoisonError},
    time::{Duration, SystemTime},
};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{flowlog::FlowStats, metrics::Metrics, timefmt::rfc3339};

/// How many recent errors `status` keeps.
pub const RECENT_ERRORS: usize = 20;

/// A local endpoint as `status` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointView {
    pub pod: String,
    pub ifname: String,
    pub ifindex: u32,
    pub state: String,
    /// `tcx` or `clsact` (how the programs sit on the interface).
    pub attach: String,
    /// `open`, `isolated` (with the policies) or `fail_closed`.
    pub ingress: String,
    pub egress: String,
    pub audit: bool,
    pub generation: u32,
}

/// Occupancy of one map.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MapUsage {
    pub map: String,
    pub entries: u64,
    pub capacity: u64,
    pub percent: f64,
}

/// The flow log's configuration and counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowLogView {
    pub target: String,
    pub allows: bool,
    pub rate: u32,
    pub written: u64,
    pub dropped: u64,
}

impl FlowLogView {
    pub fn counts(&mut self, s: FlowStats) {
        self.written = s.written;
        self.dropped = s.dropped;
    }
}

/// Health of the source the agent watches.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchView {
    pub source: String,
    pub healthy: bool,
    pub detail: String,
    pub last_change_seen: Option<String>,
    pub last_sync: Option<String>,
    pub last_sync_ms: u64,
    pub last_compile_ms: u64,
    pub syncs: u64,
}

/// One recent error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorEntry {
    pub time: String,
    pub message: String,
}

/// Audit mode: agent-wide, or the annotated namespaces.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditView {
    pub agent: bool,
    pub namespaces: Vec<String>,
}

/// Everything the board shows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Live {
    pub node: String,
    pub started_at: String,
    pub policy_generation: u32,
    pub endpoints: Vec<EndpointView>,
    pub maps: Vec<MapUsage>,
    /// Packets per drop reason (`none` = passed), from the per-CPU counters.
    pub datapath: BTreeMap<String, u64>,
    /// Packets passed in audit mode per would-be drop reason.
    pub audited: BTreeMap<String, u64>,
    pub events_received: u64,
    pub flow_log: Option<FlowLogView>,
    pub metrics_addr: Option<String>,
    pub audit: AuditView,
    pub watch: WatchView,
    pub recent_errors: VecDeque<ErrorEntry>,
}

impl Live {
    pub fn error(&mut self, message: String) {
        if self.recent_errors.len() >= RECENT_ERRORS {
            self.recent_errors.pop_front();
        }
        self.recent_errors.push_back(ErrorEntry {
            time: rfc3339(SystemTime::now()),
            message,
        });
    }
}

/// `palisade explain --socket`: a connection to explain against the live model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExplainQuery {
    pub from: String,
    pub to: String,
    pub port: u16,
    #[serde(default)]
    pub protocol: crate::model::Protocol,
}

/// What a socket thread may ask the main loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    Explain(ExplainQuery),
    Lint,
}

/// A question waiting for the main loop.
#[derive(Debug)]
pub struct Pending {
    pub query: Query,
    pub reply: mpsc::Sender<Result<Value, String>>,
}

/// Shared between the main loop and the socket threads.
#[derive(Debug, Default)]
pub struct Board {
    live: Mutex<Live>,
    queries: Mutex<Vec<Pending>>,
    metrics: Mutex<Option<Arc<Metrics>>>,
}

impl Board {
    /// Changes the published state.
    pub fn update(&self, f: impl FnOnce(&mut Live)) {
        let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut live);
    }

    pub fn snapshot(&self) -> Live {
        self.live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Asks the main loop and waits for its answer.
    pub fn ask(&self, query: Query, timeout: Duration) -> Result<Value, String> {
        let (reply, answer) = mpsc::channel();
        self.queries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Pending { query, reply });
        answer
            .recv_timeout(timeout)
            .map_err(|_| format!("the agent did not answer within {} s", timeout.as_secs()))?
    }

    /// Publishes the metrics registry (for the socket's `metrics` request).
    pub fn set_metrics(&self, metrics: Arc<Metrics>) {
        *self.metrics.lock().unwrap_or_else(PoisonError::into_inner) = Some(metrics);
    }

    /// The Prometheus text exposition (empty before the observer started).
    pub fn metrics_text(&self) -> String {
        self.metrics
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|m| m.render())
            .unwrap_or_default()
    }

    /// The questions asked since the last call (for the main loop).
    pub fn take_queries(&self) -> Vec<Pending> {
        std::mem::take(&mut *self.queries.lock().unwrap_or_else(PoisonError::into_inner))
    }
}
