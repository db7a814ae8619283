//! Measuring truth tables with real probes: every cell of every (family, target) table of a
//! probe step in one concurrent batch, re-probing the tables that do not match yet for a
//! bounded time (upstream allows for programming delay the same way).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::env::Env;
use super::report::Target;
use super::table::{self, Comparison, Expected};
use crate::addr::IpFamily;
use crate::cluster::{ClusterError, ProbeSpec};
use crate::probe::{Outcome, Proto};

/// How long a denied probe waits. Allowed probes answer in about a millisecond.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(1000);

/// `PROBE_TIMEOUT`, or `$PALISADE_PROBE_TIMEOUT_MS`: the VM tier sets it under software
/// emulation, where 81 concurrent SCTP associations take up to about 1.7 s.
pub fn probe_timeout() -> Duration {
    std::env::var("PALISADE_PROBE_TIMEOUT_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(PROBE_TIMEOUT, Duration::from_millis)
}

/// How long a mismatching table is re-probed before it counts as failed.
pub const RETRY_WINDOW: Duration = Duration::from_secs(10);

/// A probe could not be run.
#[derive(Debug, thiserror::Error)]
pub enum MeasureError {
    #[error("probing: {0}")]
    Cluster(#[from] ClusterError),
    #[error("cannot probe {from} -> {to} ({family:?}, {target}): {why}")]
    NoAddress {
        from: String,
        to: String,
        family: IpFamily,
        target: &'static str,
        why: String,
    },
}

/// One table to measure: the expected cells of one family, probed one way.
#[derive(Debug)]
pub struct Plan {
    pub family: IpFamily,
    pub target: Target,
    pub expected: Expected,
    /// Per cell: the address probed.
    addrs: Vec<SocketAddr>,
}

/// One measured cell.
#[derive(Clone, Debug, PartialEq)]
pub struct Seen {
    pub allowed: bool,
    pub error: Option<String>,
}

/// A table's last measurement.
#[derive(Clone, Debug)]
pub struct Measured {
    pub seen: Vec<Seen>,
    pub comparison: Comparison,
    pub attempts: u32,
    pub seconds: f64,
}

impl Plan {
    /// Addresses every cell: the destination's ClusterIP or pod IP of `family`, at the port
    /// `port_of` gives for the destination.
    pub fn new(
        env: &Env,
        family: IpFamily,
        target: Target,
        expected: Expected,
        port_of: &dyn Fn(&str) -> Option<u16>,
    ) -> Result<Self, MeasureError> {
        let addrs = expected
            .cells
            .iter()
            .map(|c| {
                // A cell's own port (partial probes) wins over the probe's.
                let port = |to: &str| c.port.or_else(|| port_of(to));
                address(env, family, target, &c.from, &c.to, &port)
            })
            .collect::<Result<_, _>>()?;
        Ok(Plan {
            family,
            target,
            expected,
            addrs,
        })
    }

    /// Loopback cells must match through the ClusterIP (hairpin crosses the host veth), not
    /// to the pod's own IP (that traffic never leaves the pod).
    pub fn loopback_required(&self) -> bool {
        self.target == Target::Service
    }
}

fn address(
    env: &Env,
    family: IpFamily,
    target: Target,
    from: &str,
    to: &str,
    port_of: &dyn Fn(&str) -> Option<u16>,
) -> Result<SocketAddr, MeasureError> {
    let fail = |why: &str| MeasureError::NoAddress {
        from: from.to_owned(),
        to: to.to_owned(),
        family,
        target: target.as_str(),
        why: why.to_owned(),
    };
    if env.pod(from).is_none() {
        return Err(fail("the source pod does not exist"));
    }
    let port = port_of(to).ok_or_else(|| fail("no such port on the destination"))?;
    let ip = match target {
        Target::Pod => env.pod(to).and_then(|p| p.ip(family)),
        Target::Service => env.service(to).and_then(|s| s.cluster_ip(family)),
    }
    .ok_or_else(|| fail("the destination has no address of this family"))?;
    Ok(SocketAddr::new(ip, port))
}

/// Measures every plan, re-probing the mismatching ones until they match or the retry
/// window has passed. Results are in plan order.
pub fn measure(env: &Env, plans: &[Plan], proto: Proto) -> Result<Vec<Measured>, MeasureError> {
    let start = Instant::now();
    let mut results: Vec<Option<Measured>> = vec![None; plans.len()];
    let mut pending: Vec<usize> = (0..plans.len()).collect();
    let mut attempt = 0;
    while !pending.is_empty() {
        attempt += 1;
        let seen = probe_once(env, plans, &pending, proto)?;
        let mut still = Vec::new();
        for (i, seen) in pending.iter().copied().zip(seen) {
            let allowed: Vec<bool> = seen.iter().map(|s| s.allowed).collect();
            let comparison = table::compare(&plans[i].expected, &allowed);
            if !comparison.passes(plans[i].loopback_required()) {
                still.push(i);
            }
            results[i] = Some(Measured {
                seen,
                comparison,
                attempts: attempt,
                seconds: start.elapsed().as_secs_f64(),
            });
        }
        pending = still;
        if start.elapsed() >= RETRY_WINDOW {
            break;
        }
    }
    Ok(results
        .into_iter()
        .map(|r| r.expect("every plan measured at least once"))
        .collect())
}

/// One concurrent batch over the pending plans; per plan, one result per cell.
fn probe_once(
    env: &Env,
    plans: &[Plan],
    pending: &[usize],
    proto: Proto,
) -> Result<Vec<Vec<Seen>>, MeasureError> {
    let mut specs = Vec::new();
    for &i in pending {
        let plan = &plans[i];
        for (cell, addr) in plan.expected.cells.iter().zip(&plan.addrs) {
            let from = env.pod(&cell.from).expect("checked when planned");
            specs.push(ProbeSpec {
                from,
                to: *addr,
                proto,
                timeout: probe_timeout(),
            });
        }
    }
    let mut outcomes = env.cluster().probe_many(&specs)?.into_iter();
    Ok(pending
        .iter()
        .map(|&i| {
            let cells = &plans[i].expected.cells;
            cells
                .iter()
                .zip(outcomes.by_ref().take(cells.len()))
                .map(|(cell, o)| seen(&cell.to, &o))
                .collect()
        })
        .collect())
}

/// A probe counts as allowed when it got an answer from the destination pod itself.
fn seen(to: &str, outcome: &Outcome) -> Seen {
    let answered_by = outcome
        .reply
        .as_deref()
        .and_then(|r| r.split_whitespace().next());
    match (outcome.allowed, answered_by) {
        (true, Some(pod)) if pod == to => Seen {
            allowed: true,
            error: None,
        },
        (true, other) => Seen {
            allowed: false,
            error: Some(format!("answered by {other:?}, not {to}")),
        },
        (false, _) => Seen {
            allowed: false,
            error: outcome.error.clone(),
        },
    }
}
