//! The soak's verdict: after the churn is drained, every per-node count of state that belongs to
//! pods and policies (map entries, link pins, endpoint reports, agent threads and descriptors)
//! is back at its baseline, conntrack holds no flow of an endpoint that is gone, and memory is
//! flat.

use serde::Serialize;

use super::churn::ChurnCounts;
use super::sample::{NodeSample, Sample};

/// One comparison of a final figure against the baseline.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub node: usize,
    pub what: String,
    pub baseline: u64,
    pub final_value: u64,
    pub max: u64,
    pub ok: bool,
}

/// Memory of one agent over the run.
#[derive(Clone, Debug, Serialize)]
pub struct Memory {
    pub node: usize,
    /// RSS when the churn began (after warm-up).
    pub baseline_kb: u64,
    pub final_kb: u64,
    pub max_kb: u64,
    /// Least-squares slope over the second half of the churn.
    pub slope_kb_per_min: f64,
    /// Whether the slope was judged: only over at least [`SLOPE_WINDOW_MIN`] minutes (over a
    /// few seconds an allocator settling reads as megabytes a minute).
    pub slope_judged: bool,
    pub flat: bool,
}

/// The shortest second half of the churn whose RSS slope is judged.
pub const SLOPE_WINDOW_MIN: f64 = 5.0;

#[derive(Clone, Debug, Default, Serialize)]
pub struct TrafficCounts {
    pub allowed_ok: u64,
    pub allowed_failed: u64,
    pub denied_blocked: u64,
    pub denied_succeeded: u64,
    pub stream_round_trips: u64,
    pub stream_broken: u64,
    /// When (seconds since the start) and why the stream broke.
    pub stream_errors: Vec<(f64, String)>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub minutes: f64,
    /// The churn phase, seconds since the start.
    pub churn_phase_s: (f64, f64),
    pub passed: bool,
    pub checks: Vec<Check>,
    pub memory: Vec<Memory>,
    pub churn: ChurnCounts,
    pub apply_ms_p50: f64,
    pub apply_ms_p99: f64,
    pub traffic: TrafficCounts,
    pub samples: Vec<Sample>,
}

/// Memory is flat when the agent ends within 20% (at least 8 MB) of where churn began and
/// does not keep growing (under 1 MB/min over the second half of the churn).
fn memory(node: usize, samples: &[Sample], baseline: &NodeSample, last: &NodeSample) -> Memory {
    let churn: Vec<&Sample> = samples.iter().filter(|s| s.phase == "churn").collect();
    let half = &churn[churn.len() / 2..];
    let pts: Vec<(f64, f64)> = half
        .iter()
        .map(|s| (s.t_s / 60.0, s.nodes[node].rss_kb as f64))
        .collect();
    let slope = if pts.len() >= 3 {
        let n = pts.len() as f64;
        let (mx, my) = (
            pts.iter().map(|p| p.0).sum::<f64>() / n,
            pts.iter().map(|p| p.1).sum::<f64>() / n,
        );
        let num: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
        let den: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
        if den > 0.0 {
            num / den
        } else {
            0.0
        }
    } else {
        0.0
    };
    let max_kb = samples
        .iter()
        .map(|s| s.nodes[node].rss_kb)
        .max()
        .unwrap_or(0);
    let window = match (pts.first(), pts.last()) {
        (Some(a), Some(b)) => b.0 - a.0,
        _ => 0.0,
    };
    let slope_judged = pts.len() >= 3 && window >= SLOPE_WINDOW_MIN;
    let allowance = (baseline.rss_kb / 5).max(8 * 1024);
    Memory {
        node,
        baseline_kb: baseline.rss_kb,
        final_kb: last.rss_kb,
        max_kb,
        slope_kb_per_min: slope,
        slope_judged,
        flat: last.rss_kb <= baseline.rss_kb + allowance && (!slope_judged || slope < 1024.0),
    }
}

/// The largest value of `get` on node `n` over the first half of the churn phase.
fn first_half_max(samples: &[Sample], n: usize, get: &dyn Fn(&NodeSample) -> u64) -> u64 {
    let churn: Vec<&Sample> = samples.iter().filter(|s| s.phase == "churn").collect();
    churn[..churn.len() / 2]
        .iter()
        .filter_map(|s| s.nodes.get(n).map(get))
        .max()
        .unwrap_or(0)
}

fn percentile(v: &[f64], p: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(((v.len() as f64 - 1.0) * p).round() as usize)
        .copied()
        .unwrap_or(0.0)
}

impl Report {
    pub fn new(
        minutes: f64,
        samples: Vec<Sample>,
        churn: ChurnCounts,
        traffic: TrafficCounts,
        churn_phase_s: (f64, f64),
    ) -> Self {
        let baseline = samples
            .iter()
            .rev()
            .find(|s| s.phase == "baseline")
            .cloned()
            .unwrap_or_default();
        let last = samples.last().cloned().unwrap_or_default();
        let mut checks = Vec::new();
        let mut mem = Vec::new();
        for (n, (b, f)) in baseline.nodes.iter().zip(&last.nodes).enumerate() {
            let max_of = |get: &dyn Fn(&NodeSample) -> u64| {
                samples.iter().map(|s| get(&s.nodes[n])).max().unwrap_or(0)
            };
            let mut check =
                |what: &str, get: &dyn Fn(&NodeSample) -> u64, ok: &dyn Fn(u64, u64) -> bool| {
                    let (baseline, final_value) = (get(b), get(f));
                    checks.push(Check {
                        node: n,
                        what: what.to_owned(),
                        baseline,
                        final_value,
                        max: max_of(get),
                        ok: ok(baseline, final_value),
                    });
                };
            let same = |b: u64, f: u64| b == f;
            for map in [
                "PAL_EP_V1",
                "PAL_SLOT_V1",
                "PAL_IDENT_V1",
                "PAL_POLICY_V1",
                "PAL_SVC_V1",
            ] {
                check(
                    &format!("map {map} entries"),
                    &|s: &NodeSample| s.maps.get(map).copied().unwrap_or(u64::MAX),
                    &same,
                );
            }
            check("pinned links", &|s: &NodeSample| s.link_pins, &same);
            check(
                "endpoint reports",
                &|s: &NodeSample| s.endpoint_reports,
                &same,
            );
            check("agent threads", &|s: &NodeSample| s.threads, &same);
            // A descriptor or two may be in flight (a socket client, a status write).
            check("agent descriptors", &|s: &NodeSample| s.fds, &|b, f| {
                f <= b + 2
            });
            check(
                "conntrack flows of endpoints that are gone",
                &|s: &NodeSample| s.conntrack_orphans,
                &|_, f| f == 0,
            );
            // Flows of ended connections time out (10 s after a TCP close, 30-180 s for UDP)
            // and the agent sweeps them: with steady traffic the table levels off within a few
            // minutes, so the end may not hold more than the first half of the churn reached
            // (plus a margin). Judged only on runs of 10 minutes or more.
            let ct = |s: &NodeSample| s.maps.get("PAL_CT_V1").copied().unwrap_or(0);
            let early = first_half_max(&samples, n, &ct);
            let judged = minutes >= 10.0;
            check(
                &format!(
                    "conntrack entries, at most 1.5 x the first half's max {early} + 50{}",
                    if judged {
                        ""
                    } else {
                        " (not judged: < 10 min)"
                    }
                ),
                &ct,
                &|_, f| !judged || f <= early + early / 2 + 50,
            );
            mem.push(memory(n, &samples, b, f));
        }
        let passed = checks.iter().all(|c| c.ok)
            && mem.iter().all(|m| m.flat)
            && traffic.allowed_failed == 0
            && traffic.denied_succeeded == 0
            && traffic.stream_broken == 0
            && traffic.allowed_ok > 0;
        Report {
            minutes,
            churn_phase_s,
            passed,
            checks,
            memory: mem,
            apply_ms_p50: percentile(&churn.apply_ms, 0.5),
            apply_ms_p99: percentile(&churn.apply_ms, 0.99),
            churn,
            traffic,
            samples,
        }
    }

    pub fn summary_text(&self) -> String {
        let mut out = String::new();
        let c = &self.churn;
        out.push_str(&format!(
            "soak: {:.1} min; churn: {} pods created, {} deleted, {} relabels, policies {} created / {} updated / {} deleted; {} revisions applied (p50 {:.0} ms, p99 {:.0} ms)\n",
            self.minutes, c.pods_created, c.pods_deleted, c.relabels, c.policies_created, c.policies_updated,
            c.policies_deleted, c.revisions, self.apply_ms_p50, self.apply_ms_p99
        ));
        let t = &self.traffic;
        out.push_str(&format!(
            "soak: traffic: allowed {} ok / {} failed, denied {} blocked / {} succeeded, stream {} round trips / {} broken\n",
            t.allowed_ok, t.allowed_failed, t.denied_blocked, t.denied_succeeded, t.stream_round_trips, t.stream_broken
        ));
        for m in &self.memory {
            out.push_str(&format!(
                "soak: node {} RSS {:.1} MB at churn start, {:.1} MB at the end, max {:.1} MB, slope {:.0} kB/min{}: {}\n",
                m.node,
                m.baseline_kb as f64 / 1024.0,
                m.final_kb as f64 / 1024.0,
                m.max_kb as f64 / 1024.0,
                m.slope_kb_per_min,
                if m.slope_judged { "" } else { " (not judged: window < 5 min)" },
                if m.flat { "flat" } else { "GROWING" }
            ));
        }
        for ch in &self.checks {
            out.push_str(&format!(
                "soak: node {} {:<45} baseline {:>6} final {:>6} max {:>6}  {}\n",
                ch.node,
                ch.what,
                ch.baseline,
                ch.final_value,
                ch.max,
                if ch.ok { "ok" } else { "FAILED" }
            ));
        }
        out.push_str(&format!(
            "soak: {}",
            if self.passed { "passed" } else { "FAILED" }
        ));
        out
    }
}
