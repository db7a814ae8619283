//! Prometheus metrics (`prometheus-client`), served as text on `--metrics-addr` at `/metrics`.
//! Every metric is documented in `docs/metrics.md`.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use prometheus_client::{
    encoding::{text::encode, EncodeLabelSet},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{exponential_buckets, Histogram},
    },
    registry::Registry,
};

use super::ObserveError;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerdictLabels {
    pub direction: String,
    pub verdict: String,
    pub reason: String,
    pub namespace: String,
}

/// One ClusterNetworkPolicy rule's verdicts. Policy and rule names are the administrator's, not
/// workload data, and bounded by the policies (at most 25 rules per direction each).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterRuleLabels {
    pub tier: String,
    pub policy: String,
    pub direction: String,
    /// `ingress[0]`, or the rule's `name` when it has one.
    pub rule: String,
    pub verdict: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MapLabels {
    pub map: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: String,
}

/// Every metric the agent exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub verdicts: Family<VerdictLabels, Counter>,
    pub cluster_policy_verdicts: Family<ClusterRuleLabels, Counter>,
    pub datapath_packets: Family<ReasonLabels, Counter>,
    pub datapath_audited: Family<ReasonLabels, Counter>,
    pub events: Counter,
    pub flow_log_written: Counter,
    pub flow_log_dropped: Counter,
    pub conntrack_expired: Counter,
    pub map_entries: Family<MapLabels, Gauge>,
    pub map_capacity: Family<MapLabels, Gauge>,
    pub endpoints: Family<StateLabels, Gauge>,
    pub policy_generation: Gauge,
    pub syncs: Counter,
    pub sync_problems: Gauge,
    pub compile_seconds: Histogram,
    pub sync_latency_seconds: Histogram,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("palisade");
        let m = Self {
            verdicts: Family::default(),
            cluster_policy_verdicts: Family::default(),
            datapath_packets: Family::default(),
            datapath_audited: Family::default(),
            events: Counter::default(),
            flow_log_written: Counter::default(),
            flow_log_dropped: Counter::default(),
            conntrack_expired: Counter::default(),
            map_entries: Family::default(),
            map_capacity: Family::default(),
            endpoints: Family::default(),
            policy_generation: Gauge::default(),
            syncs: Counter::default(),
            sync_problems: Gauge::default(),
            compile_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            sync_latency_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            registry: Registry::default(),
        };
        registry.register(
            "cluster_policy_verdicts",
            "Verdict events decided by a ClusterNetworkPolicy rule (Accept or Deny)",
            m.cluster_policy_verdicts.clone(),
        );
        registry.register(
            "verdicts",
            "Verdict events received from the programs (denies, audits, sampled allows), by direction, verdict, drop reason and endpoint namespace",
            m.verdicts.clone(),
        );
        registry.register(
            "datapath_packets",
            "Packets seen by the programs per drop reason (reason none = passed), from the per-CPU counters",
            m.datapath_packets.clone(),
        );
        registry.register(
            "datapath_audited_packets",
            "Packets passed in audit mode, by the drop reason enforcement would have applied",
            m.datapath_audited.clone(),
        );
        registry.register(
            "events_received",
            "Verdict events read from the ring buffer",
            m.events.clone(),
        );
        registry.register(
            "flow_log_written",
            "Flow log records written",
            m.flow_log_written.clone(),
        );
        registry.register(
            "flow_log_dropped",
            "Flow log records dropped by the user-space rate limit (--flow-log-rate)",
            m.flow_log_dropped.clone(),
        );
        registry.register(
            "conntrack_expired",
            "Conntrack entries whose flow timed out, removed by the agent's sweep (every 10 s)",
            m.conntrack_expired.clone(),
        );
        registry.register(
            "map_entries",
            "Entries in a BPF map (conntrack counted periodically)",
            m.map_entries.clone(),
        );
        registry.register(
            "map_capacity",
            "max_entries of a BPF map",
            m.map_capacity.clone(),
        );
        registry.register(
            "endpoints",
            "Local endpoints by state (attached, fail_closed, error)",
            m.endpoints.clone(),
        );
        registry.register(
            "policy_generation",
            "The highest endpoint policy generation written",
            m.policy_generation.clone(),
        );
        registry.register("syncs", "Syncs to the dataplane", m.syncs.clone());
        registry.register(
            "sync_problems",
            "Problems reported by the last sync",
            m.sync_problems.clone(),
        );
        registry.register(
            "compile_duration_seconds",
            "Time to compile a model change",
            m.compile_seconds.clone(),
        );
        registry.register(
            "sync_latency_seconds",
            "Time from a change seen by the agent to the maps written",
            m.sync_latency_seconds.clone(),
        );
        Self { registry, ..m }
    }

    /// The text exposition (OpenMetrics text format).
    pub fn render(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    /// Counts one verdict event decided by a ClusterNetworkPolicy rule.
    pub fn cluster_verdict(&self, rule: &crate::compiler::RuleRef, verdict: &str) {
        let labels = ClusterRuleLabels {
            tier: rule.tier.as_str().to_ascii_lowercase(),
            policy: rule.policy.name.clone(),
            direction: rule.direction.to_string(),
            rule: rule
                .rule_name
                .clone()
                .unwrap_or_else(|| format!("{}[{}]", rule.direction, rule.index)),
            verdict: verdict.to_owned(),
        };
        self.cluster_policy_verdicts.get_or_create(&labels).inc();
    }

    /// Counts one verdict event.
    pub fn verdict(&self, direction: &str, verdict: &str, reason: &str, namespace: &str) {
        self.verdicts
            .get_or_create(&VerdictLabels {
                direction: direction.to_owned(),
                verdict: verdict.to_owned(),
                reason: reason.to_owned(),
                namespace: namespace.to_owned(),
            })
            .inc();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Sets a counter that mirrors an absolute value read elsewhere (the BPF counters) by adding the
/// difference to what it has counted so far.
pub fn mirror(counter: &Counter, value: u64) {
    let have = counter.get();
    if value > have {
        counter.inc_by(value - have);
    }
}

/// Serves `GET /metrics` on `addr` on a background thread; returns the bound address.
pub fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> Result<SocketAddr, ObserveError> {
    let listener =
        TcpListener::bind(addr).map_err(|source| ObserveError::Metrics { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| ObserveError::Metrics { addr, source })?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            let active = Arc::new(AtomicUsize::new(0));
            for conn in listener.incoming().flatten() {
                // Each client on its own thread, so that a slow one cannot hold the endpoint;
                // beyond MAX_CLIENTS at once, a connection is closed unanswered.
                if active.fetch_add(1, Ordering::SeqCst) >= MAX_CLIENTS {
                    active.fetch_sub(1, Ordering::SeqCst);
                    continue;
                }
                let (metrics, done) = (metrics.clone(), active.clone());
                let spawned = std::thread::Builder::new()
                    .name("metrics-client".into())
                    .spawn(move || {
                        if let Err(e) = answer(conn, &metrics) {
                            tracing::debug!("metrics client: {e}");
                        }
                        done.fetch_sub(1, Ordering::SeqCst);
                    });
                if spawned.is_err() {
                    active.fetch_sub(1, Ordering::SeqCst);
                }
            }
        })
        .map_err(|source| ObserveError::Metrics { addr, source })?;
    Ok(bound)
}

/// Clients answered at once.
const MAX_CLIENTS: usize = 8;
/// A request's head (request line and headers) must arrive within this time and size: the
/// endpoint may be reachable from pods, and a client must not make the agent buffer without
/// bound or wait for ever.
const HEAD_DEADLINE: Duration = Duration::from_secs(2);
const HEAD_MAX: usize = 8 * 1024;

/// Reads the request head (up to the empty line), bounded in time and size.
fn read_head(mut conn: &TcpStream) -> std::io::Result<String> {
    let deadline = Instant::now() + HEAD_DEADLINE;
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !(head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n")) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        conn.set_read_timeout(Some(left))?;
        let n = conn.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > HEAD_MAX {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "request head too large",
            ));
        }
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

fn answer(conn: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    conn.set_write_timeout(Some(HEAD_DEADLINE))?;
    let head = read_head(&conn)?;
    let path = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("/");
    let (status, ctype, body) = match path {
        "/metrics" => (
            "200 OK",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.render(),
        ),
        "/" => (
            "200 OK",
            "text/plain; charset=utf-8",
            "palisade agent: metrics at /metrics\n".to_owned(),
        ),
        _ => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "not found\n".to_owned(),
        ),
    };
    let mut w = conn;
    write!(
        w,
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family_with_labels() {
        let m = Metrics::new();
        m.verdict("ingress", "deny", "ingress_policy_denied", "x");
        m.compile_seconds.observe(0.002);
        mirror(
            &m.datapath_packets.get_or_create(&ReasonLabels {
                reason: "none".into(),
            }),
            10,
        );
        mirror(
            &m.datapath_packets.get_or_create(&ReasonLabels {
                reason: "none".into(),
            }),
            7,
        );
        let text = m.render();
        assert!(
            text.contains(r#"palisade_verdicts_total{direction="ingress",verdict="deny",reason="ingress_policy_denied",namespace="x"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"palisade_datapath_packets_total{reason="none"} 10"#),
            "{text}"
        );
        assert!(
            text.contains("palisade_compile_duration_seconds_count 1"),
            "{text}"
        );
        assert!(
            text.contains("# HELP palisade_sync_latency_seconds"),
            "{text}"
        );
    }

    #[test]
    fn serves_http() {
        let m = Arc::new(Metrics::new());
        m.events.inc();
        let addr = serve("127.0.0.1:0".parse().unwrap(), m).unwrap();
        let mut c = TcpStream::connect(addr).unwrap();
        c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut body = String::new();
        std::io::Read::read_to_string(&mut c, &mut body).unwrap();
        assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
        assert!(body.contains("palisade_events_received_total 1"), "{body}");
    }
}
