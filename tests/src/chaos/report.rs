//! Counting what each scenario did to the traffic, the JSON report and the printed summary.
//!
//! Per scenario window: an established allowed stream that broke (a round trip failed or took
//! longer than the stream timeout) counts as broken, except the flip stream after recovery in
//! a scenario that revokes it (then it is the expected cut, timed). An attempt counts against
//! its pair's expectation; a pair the change flips is held to the old state until recovery
//! (nothing may change while the agents or the source are away), is not judged between
//! recovery and the moment the change was seen enforced, and is held to the new state after.

use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use super::env::PolicyState;
use super::scenario::{Kind, Run};
use super::traffic::{Event, Expect, Pair, Traffic};

/// One violation, for the report.
#[derive(Clone, Debug, Serialize)]
pub struct Violation {
    /// Seconds since the scenario started.
    pub at_s: f64,
    pub what: String,
    pub pair: String,
    pub detail: String,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Attempts {
    pub allowed: u64,
    pub denied: u64,
    /// Attempts of the pairs the change flips (judged against old or new state).
    pub changed: u64,
    /// Attempts of flipped pairs in the transition window (not judged).
    pub in_transition: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Streams {
    pub count: usize,
    pub round_trips: u64,
    pub max_rtt_ms: f64,
    /// Round trips slower than 200 ms (a retransmission: a packet was dropped).
    pub slow_round_trips: u64,
}

/// One scenario's figures.
#[derive(Clone, Debug, Serialize)]
pub struct ScenarioReport {
    pub id: &'static str,
    pub name: &'static str,
    pub passed: bool,
    pub established_broken: u64,
    pub denied_succeeded: u64,
    pub allowed_failed: u64,
    /// From recovery (restart / source back) until the change made during the outage was seen
    /// enforced on the wire.
    pub changes_enforced_ms: Option<f64>,
    /// From recovery until the agents reported the revision applied.
    pub applied_ms: Option<f64>,
    /// From recovery until the stream the change revokes was cut.
    pub revoked_stream_cut_ms: Option<f64>,
    /// How long the agents (or the source) were away.
    pub outage_ms: Option<f64>,
    pub state: (PolicyState, PolicyState),
    pub agent_exited: bool,
    pub seconds: f64,
    pub attempts: Attempts,
    pub streams: Streams,
    pub violations: Vec<Violation>,
    pub error: Option<String>,
}

fn ms(from: Instant, to: Instant) -> f64 {
    to.saturating_duration_since(from).as_secs_f64() * 1000.0
}

/// Whether `pair`'s attempt started at `at` is judged, and what it should have given.
fn expected(pair: &Pair, run: &Run, at: Instant) -> Option<bool> {
    let Expect::Flip { .. } = pair.expect else {
        return Some(pair.expect.allowed_in(run.from_state));
    };
    match (run.recovery_at, run.enforced_at) {
        _ if run.from_state == run.to_state => Some(pair.expect.allowed_in(run.from_state)),
        (Some(rec), _) if at < rec => Some(pair.expect.allowed_in(run.from_state)),
        (_, Some(enf)) if at >= enf => Some(pair.expect.allowed_in(run.to_state)),
        _ => None,
    }
}

/// The figures of one scenario from the traffic log.
pub fn analyse(run: &Run, traffic: &Traffic, events: &[Event]) -> ScenarioReport {
    let mut r = ScenarioReport {
        id: run.kind.id(),
        name: run.kind.name(),
        passed: false,
        established_broken: 0,
        denied_succeeded: 0,
        allowed_failed: 0,
        changes_enforced_ms: run.recovery_at.zip(run.enforced_at).map(|(r, e)| ms(r, e)),
        applied_ms: run.applied_ms,
        revoked_stream_cut_ms: None,
        outage_ms: run.fault_at.zip(run.recovery_at).map(|(f, r)| ms(f, r)),
        state: (run.from_state, run.to_state),
        agent_exited: run.agent_exited,
        seconds: ms(run.started, run.ended) / 1000.0,
        attempts: Attempts::default(),
        streams: Streams::default(),
        violations: Vec::new(),
        error: run.error.clone(),
    };
    let in_window = |at: Instant| at >= run.started && at < run.ended;
    let mut streams_seen = std::collections::BTreeSet::new();
    let violation = |at: Instant, what: &str, pair: &Pair, detail: String| Violation {
        at_s: ms(run.started, at) / 1000.0,
        what: what.to_owned(),
        pair: pair.label(),
        detail,
    };
    for e in events {
        match e {
            Event::RoundTrip { stream, at, ms } if in_window(*at) => {
                streams_seen.insert(*stream);
                r.streams.round_trips += 1;
                r.streams.max_rtt_ms = r.streams.max_rtt_ms.max(*ms);
                r.streams.slow_round_trips += u64::from(*ms > 200.0);
            }
            Event::Broken { stream, at, error } if in_window(*at) => {
                let pair = &traffic.streams[*stream];
                let revoked = !pair.expect.allowed_in(run.to_state);
                match run.recovery_at {
                    Some(rec) if revoked && *at >= rec => {
                        r.revoked_stream_cut_ms.get_or_insert(ms(rec, *at));
                    }
                    _ => {
                        r.established_broken += 1;
                        r.violations.push(violation(
                            *at,
                            "established connection broken",
                            pair,
                            error.clone(),
                        ));
                    }
                }
            }
            Event::Attempt {
                pair,
                at,
                allowed,
                error,
            } if in_window(*at) => {
                let pair = &traffic.attempts[*pair];
                let flip = matches!(pair.expect, Expect::Flip { .. });
                let Some(want) = expected(pair, run, *at) else {
                    r.attempts.in_transition += 1;
                    continue;
                };
                match (flip, want) {
                    (true, _) => r.attempts.changed += 1,
                    (false, true) => r.attempts.allowed += 1,
                    (false, false) => r.attempts.denied += 1,
                }
                if want && !allowed {
                    r.allowed_failed += 1;
                    let detail = error.clone().unwrap_or_default();
                    r.violations
                        .push(violation(*at, "allowed attempt failed", pair, detail));
                } else if !want && *allowed {
                    r.denied_succeeded += 1;
                    r.violations.push(violation(
                        *at,
                        "denied attempt succeeded",
                        pair,
                        String::new(),
                    ));
                }
            }
            _ => {}
        }
    }
    r.streams.count = streams_seen.len();
    r.violations.truncate(50);
    r.passed = r.established_broken == 0
        && r.denied_succeeded == 0
        && r.allowed_failed == 0
        && !r.agent_exited
        && r.error.is_none()
        && (run.kind != Kind::SourceOutage && run.kind != Kind::ChangeWhileDown
            || r.changes_enforced_ms.is_some());
    r
}

/// The whole run.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub summary: Summary,
    pub pairs: Pairs,
    pub scenarios: Vec<ScenarioReport>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    /// Where the agents read the cluster from.
    pub source: super::SourceMode,
    pub scenarios: usize,
    pub passed: usize,
    pub failed: usize,
    pub seconds: f64,
    pub established_broken: u64,
    pub denied_succeeded: u64,
    pub allowed_failed: u64,
}

/// The traffic mix, for the record.
#[derive(Clone, Debug, Serialize)]
pub struct Pairs {
    pub streams: Vec<Pair>,
    pub attempts: Vec<Pair>,
}

impl Report {
    pub fn new(
        scenarios: Vec<ScenarioReport>,
        traffic: &Traffic,
        seconds: f64,
        source: super::SourceMode,
    ) -> Self {
        let faults: Vec<&ScenarioReport> = scenarios.iter().filter(|s| s.id != "-").collect();
        let passed = faults.iter().filter(|s| s.passed).count();
        let summary = Summary {
            source,
            scenarios: faults.len(),
            passed,
            failed: faults.len() - passed,
            seconds,
            established_broken: scenarios.iter().map(|s| s.established_broken).sum(),
            denied_succeeded: scenarios.iter().map(|s| s.denied_succeeded).sum(),
            allowed_failed: scenarios.iter().map(|s| s.allowed_failed).sum(),
        };
        Report {
            summary,
            pairs: Pairs {
                streams: traffic.streams.clone(),
                attempts: traffic.attempts.clone(),
            },
            scenarios,
        }
    }

    /// Every scenario (the steady run included) passed.
    pub fn all_passed(&self) -> bool {
        self.scenarios.iter().all(|s| s.passed)
    }

    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(path, text)
    }

    /// The printed table.
    pub fn summary_text(&self) -> String {
        let fmt = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.0}"));
        let mut out = format!(
            "{:<3} {:<45} {:>6} {:>7} {:>7} {:>9} {:>9} {:>9} {:>9}  {}\n",
            "",
            "scenario",
            "broken",
            "denied+",
            "allowed-",
            "enforce ms",
            "applied ms",
            "cut ms",
            "attempts",
            "result"
        );
        for s in &self.scenarios {
            out.push_str(&format!(
                "{:<3} {:<45} {:>6} {:>7} {:>7} {:>9} {:>9} {:>9} {:>9}  {}\n",
                s.id,
                s.name,
                s.established_broken,
                s.denied_succeeded,
                s.allowed_failed,
                fmt(s.changes_enforced_ms),
                fmt(s.applied_ms),
                fmt(s.revoked_stream_cut_ms),
                s.attempts.allowed + s.attempts.denied + s.attempts.changed,
                if s.passed { "ok" } else { "FAILED" },
            ));
            if let Some(e) = &s.error {
                out.push_str(&format!("      error: {e}\n"));
            }
            for v in s.violations.iter().take(5) {
                out.push_str(&format!(
                    "      {:.2}s {} {} {}\n",
                    v.at_s, v.what, v.pair, v.detail
                ));
            }
        }
        let t = &self.summary;
        out.push_str(&format!(
            "chaos ({:?} source): {}/{} scenarios passed in {:.0} s; broken {} / denied succeeded {} / allowed failed {} (target 0/0/0)",
            t.source, t.passed, t.scenarios, t.seconds, t.established_broken, t.denied_succeeded, t.allowed_failed
        ));
        out
    }
}
