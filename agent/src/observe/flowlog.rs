//! The flow log: verdict events from the programs' ring buffer turned into JSON lines that name
//! pods and policies, rate-limited in user space (with a count of what was dropped), written to
//! stdout or to a file rotated by size.

use std::{
    fs::File,
    io::{BufWriter, Write as _},
    net::IpAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime},
};

use palisade_common::{
    event::VerdictEvent,
    verdict::{Decision, Direction, DropReason},
};
use serde::Serialize;

use super::{
    names::{ip_of, protocol_name, Names},
    timefmt::rfc3339,
    ObserveError,
};

/// `deny`, `allow` or `audit`.
pub fn verdict_name(decision: u8) -> &'static str {
    if decision == Decision::Dropped as u8 {
        "deny"
    } else if decision == Decision::Audited as u8 {
        "audit"
    } else {
        "allow"
    }
}

/// `ingress` or `egress`.
pub fn direction_name(direction: u8) -> &'static str {
    if direction == Direction::Egress as u8 {
        "egress"
    } else {
        "ingress"
    }
}

/// The stable name of a raw drop reason (`none` for allows).
pub fn reason_name(reason: u32) -> &'static str {
    DropReason::from_u32(reason).map_or("unknown", DropReason::name)
}

/// One line of the flow log. Field meanings are documented in `docs/observability.md`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FlowRecord {
    pub time: String,
    pub node: String,
    /// `deny`, `allow` or `audit` (denied by policy, passed because of audit mode).
    pub verdict: &'static str,
    /// Relative to `endpoint`: `ingress` = traffic it receives, `egress` = traffic it sends.
    pub direction: &'static str,
    /// The local pod whose policy decided (`namespace/name`), if the ifindex is an endpoint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    pub src_ip: IpAddr,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src_pod: Option<String>,
    pub src_port: u16,
    pub dst_ip: IpAddr,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dst_pod: Option<String>,
    pub dst_port: u16,
    pub protocol: String,
    /// The drop reason (for `audit`: the one enforcement would have applied); `none` for allows.
    pub reason: &'static str,
    /// For allows, the policy of the rule that allowed; for a ClusterNetworkPolicy deny, that
    /// policy (`ClusterNetworkPolicy/<name>`); for other denies and audits, the NetworkPolicies
    /// that isolate the endpoint in that direction (none of whose rules allowed the flow).
    pub policies: Vec<String>,
    /// The rule that decided, when one did: `namespace/policy direction[index]` for a
    /// NetworkPolicy allow, `ClusterNetworkPolicy <name> (<tier>) direction[index] "<rule name>"`
    /// for a ClusterNetworkPolicy Accept or Deny.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// The tier of that rule: `admin`, `network_policy` or `baseline`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tier: Option<&'static str>,
    /// How an allow was decided (`rule`, `not_isolated`, `node`), absent for denies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_by: Option<&'static str>,
}

/// Turns one event into a record, naming what `names` knows. `mono_to_wall` converts the
/// programs' monotonic timestamps to wall-clock time.
pub fn record(
    ev: &VerdictEvent,
    names: &Names,
    mono_to_wall: &dyn Fn(u64) -> SystemTime,
) -> FlowRecord {
    let src_ip = ip_of(ev.src);
    let dst_ip = ip_of(ev.dst);
    let dir = if ev.direction == Direction::Egress as u8 {
        Direction::Egress
    } else {
        Direction::Ingress
    };
    let endpoint = names.endpoints.get(&ev.ifindex);
    let rule = (ev.rule_id != 0)
        .then(|| names.rules.get(&ev.rule_id))
        .flatten();
    let verdict = verdict_name(ev.decision);
    let policies = match (verdict, rule, endpoint) {
        (_, Some(r), _) if r.is_cluster() => vec![r.policy_label()],
        ("allow", Some(r), _) => vec![r.policy.to_string()],
        ("allow", None, _) | (_, _, None) => Vec::new(),
        (_, _, Some(e)) => e.isolated_by(dir).iter().map(ToString::to_string).collect(),
    };
    let allowed_by = match ev.decision {
        d if d == Decision::AllowedByRule as u8 => Some("rule"),
        d if d == Decision::AllowedNotIsolated as u8 => Some("not_isolated"),
        d if d == Decision::AllowedHost as u8 => Some("node"),
        d if d == Decision::AllowedTracked as u8 => Some("tracked"),
        _ => None,
    };
    FlowRecord {
        time: rfc3339(mono_to_wall(ev.timestamp_ns)),
        node: names.node.clone(),
        verdict,
        direction: direction_name(ev.direction),
        endpoint: endpoint.map(|e| e.pod.to_string()),
        src_ip,
        src_pod: names.pod(src_ip).map(ToString::to_string),
        src_port: ev.sport,
        dst_ip,
        dst_pod: names.pod(dst_ip).map(ToString::to_string),
        dst_port: ev.dport,
        protocol: protocol_name(ev.protocol),
        reason: reason_name(ev.reason),
        policies,
        // A deny names its rule only when a ClusterNetworkPolicy rule denied.
        rule: rule
            .filter(|r| verdict == "allow" || r.is_cluster())
            .map(ToString::to_string),
        tier: rule
            .filter(|r| verdict == "allow" || r.is_cluster())
            .map(|r| tier_name(r.tier)),
        allowed_by,
    }
}

fn tier_name(tier: crate::compiler::Tier) -> &'static str {
    match tier {
        crate::compiler::Tier::Admin => "admin",
        crate::compiler::Tier::Baseline => "baseline",
        crate::compiler::Tier::NetworkPolicy => "network_policy",
        crate::compiler::Tier::Default => "default",
    }
}

/// A token bucket: at most `rate` records per second, bursts up to `rate`.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimiter {
    /// `rate` 0 = unlimited.
    pub fn new(rate: u32) -> Self {
        Self {
            rate: f64::from(rate),
            tokens: f64::from(rate),
            last: Instant::now(),
        }
    }

    /// Takes a token at `now`; false when the record must be dropped.
    pub fn allow(&mut self, now: Instant) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Where lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Stdout,
    /// A file, renamed to `<path>.1` (older ones shifted up to `<path>.<keep>`) once it would
    /// grow past `max_bytes`.
    File {
        path: PathBuf,
        max_bytes: u64,
        keep: u32,
    },
}

/// The writer behind the flow log.
#[derive(Debug)]
pub struct Sink {
    target: Target,
    file: Option<BufWriter<File>>,
    size: u64,
}

fn open_append(path: &Path) -> Result<(BufWriter<File>, u64), ObserveError> {
    let io = |source| ObserveError::FlowLog {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    Ok((BufWriter::new(file), size))
}

impl Sink {
    pub fn new(target: Target) -> Result<Self, ObserveError> {
        let (file, size) = match &target {
            Target::Stdout => (None, 0),
            Target::File { path, .. } => {
                let (f, size) = open_append(path)?;
                (Some(f), size)
            }
        };
        Ok(Self { target, file, size })
    }

    /// Writes one line (a newline is added), rotating first if it would not fit.
    pub fn write_line(&mut self, line: &str) -> Result<(), ObserveError> {
        let Target::File {
            path,
            max_bytes,
            keep,
        } = self.target.clone()
        else {
            let mut out = std::io::stdout().lock();
            return writeln!(out, "{line}").map_err(|source| ObserveError::FlowLog {
                path: PathBuf::from("-"),
                source,
            });
        };
        let len = line.len() as u64 + 1;
        if self.size > 0 && self.size + len > max_bytes {
            self.rotate(&path, keep)?;
        }
        let io = |source| ObserveError::FlowLog {
            path: path.clone(),
            source,
        };
        if let Some(f) = self.file.as_mut() {
            writeln!(f, "{line}").map_err(io)?;
        }
        self.size += len;
        Ok(())
    }

    fn rotate(&mut self, path: &Path, keep: u32) -> Result<(), ObserveError> {
        self.flush()?;
        self.file = None;
        let numbered = |n: u32| PathBuf::from(format!("{}.{n}", path.display()));
        if keep == 0 {
            let _ = std::fs::remove_file(path);
        } else {
            let _ = std::fs::remove_file(numbered(keep));
            for n in (1..keep).rev() {
                let _ = std::fs::rename(numbered(n), numbered(n + 1));
            }
            let _ = std::fs::rename(path, numbered(1));
        }
        let (f, size) = open_append(path)?;
        self.file = Some(f);
        self.size = size;
        Ok(())
    }

    pub fn flush(&mut self) -> Result<(), ObserveError> {
        match (&mut self.file, &self.target) {
            (Some(f), Target::File { path, .. }) => {
                f.flush().map_err(|source| ObserveError::FlowLog {
                    path: path.clone(),
                    source,
                })
            }
            _ => std::io::stdout()
                .flush()
                .map_err(|source| ObserveError::FlowLog {
                    path: PathBuf::from("-"),
                    source,
                }),
        }
    }
}

/// Counts of what the flow log did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FlowStats {
    pub written: u64,
    /// Records dropped by the user-space rate limit.
    pub dropped: u64,
}

/// The flow log: rate limit plus sink.
#[derive(Debug)]
pub struct FlowLog {
    sink: Sink,
    limiter: RateLimiter,
    pub stats: FlowStats,
    last_drop_warning: Option<Instant>,
}

impl FlowLog {
    pub fn new(target: Target, rate: u32) -> Result<Self, ObserveError> {
        Ok(Self {
            sink: Sink::new(target)?,
            limiter: RateLimiter::new(rate),
            stats: FlowStats::default(),
            last_drop_warning: None,
        })
    }

    /// Writes `rec` unless the rate limit says no; returns whether it was written.
    pub fn log(&mut self, rec: &FlowRecord, now: Instant) -> Result<bool, ObserveError> {
        if !self.limiter.allow(now) {
            self.stats.dropped += 1;
            let quiet = self
                .last_drop_warning
                .is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(10));
            if !quiet {
                self.last_drop_warning = Some(now);
                tracing::warn!(
                    dropped = self.stats.dropped,
                    "flow log rate limit reached: records dropped (counted in palisade_flow_log_dropped_total)"
                );
            }
            return Ok(false);
        }
        let line = serde_json::to_string(rec).map_err(ObserveError::Json)?;
        self.sink.write_line(&line)?;
        self.stats.written += 1;
        Ok(true)
    }

    pub fn flush(&mut self) -> Result<(), ObserveError> {
        self.sink.flush()
    }
}

#[cfg(test)]
#[path = "flowlog_tests.rs"]
mod tests;
