//! One step of a case: a probe measured for every IP family and target, turned into report
//! entries (and printed side-by-side tables when a table does not match). SCTP probes are
//! reported skipped, with the reason, on kernels without SCTP.

use std::collections::BTreeMap;

use serde_json::Value;

use super::case::{Probe, Protocol};
use super::env::{Env, EnvError};
use super::measure::{self, MeasureError, Measured, Plan};
use super::report::{LoopbackReport, ObservedCell, ProbeReport, Status, Target};
use super::table;
use super::template::TemplateError;
use super::world::World;
use crate::addr::IpFamily;
use crate::probe::Proto;

/// A probe step could not be measured.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Env(#[from] EnvError),
    #[error("expected table: {0}")]
    Template(#[from] Box<TemplateError>),
    #[error(transparent)]
    Measure(#[from] MeasureError),
}

/// What a probe step needs to know besides the environment.
pub struct StepCtx<'c> {
    pub step: u32,
    pub probe: &'c Probe,
    pub world: &'c World,
    pub refs: &'c [String],
    pub families: &'c [IpFamily],
    pub targets: &'c [Target],
}

pub fn family_name(f: IpFamily) -> &'static str {
    match f {
        IpFamily::Ipv4 => "ipv4",
        IpFamily::Ipv6 => "ipv6",
    }
}

/// Why SCTP probes are skipped on this machine; `None` where the kernel has SCTP.
pub fn sctp_reason() -> Option<String> {
    crate::probe::sctp_supported().err().map(|err| {
        format!(
            "SCTP cannot be probed: this kernel has no SCTP (socket(AF_INET, SOCK_STREAM, IPPROTO_SCTP): {err}); SCTP is covered by the packet-level tests"
        )
    })
}

pub fn skipped(
    step: u32,
    probe: &Probe,
    family: IpFamily,
    target: Target,
    why: &str,
) -> ProbeReport {
    ProbeReport {
        step,
        protocol: probe.protocol.to_string(),
        port: probe.port,
        family,
        target,
        status: Status::Skipped,
        reason: why.to_owned(),
        pod_ips: BTreeMap::new(),
        observed: Vec::new(),
        differing: Vec::new(),
        loopback: LoopbackReport {
            required: target == Target::Service,
            differing: Vec::new(),
        },
        attempts: 0,
        seconds: 0.0,
        partial: probe.partial,
        judged: 0,
    }
}

/// The numeric port probed at `to`: the step's port, or its named port on that pod.
fn port_of(probe: &Probe, world: &World, to: &str) -> Option<u16> {
    probe.port.or_else(|| {
        let name = probe.port_name.as_deref()?;
        world
            .pods
            .get(to)?
            .ports
            .iter()
            .find(|p| p.name.as_deref() == Some(name) && p.protocol == probe.protocol)
            .map(|p| p.container_port)
    })
}

/// Waits for the agents, then measures the step's tables. Agent-reported problems are
/// added to `problems`.
pub fn probe_step(
    env: &mut Env,
    ctx: &StepCtx<'_>,
    problems: &mut Vec<Value>,
) -> Result<Vec<ProbeReport>, StepError> {
    let proto = match ctx.probe.protocol {
        Protocol::Tcp => Proto::Tcp,
        Protocol::Udp => Proto::Udp,
        Protocol::Sctp if sctp_reason().is_none() => Proto::Sctp,
        Protocol::Sctp => {
            let why = sctp_reason().unwrap_or_default();
            let all = ctx.families.iter().flat_map(|f| {
                let why = &why;
                ctx.targets
                    .iter()
                    .map(move |t| skipped(ctx.step, ctx.probe, *f, *t, why))
            });
            return Ok(all.collect());
        }
    };
    for status in env.wait_ready()? {
        for p in status.all_problems() {
            if !problems.contains(p) {
                problems.push(p.clone());
            }
        }
    }
    let port = |to: &str| port_of(ctx.probe, ctx.world, to);
    let mut plans = Vec::new();
    for &family in ctx.families {
        let ips = env.pod_ips(family);
        let expected = table::expected(ctx.probe, &ips, ctx.refs).map_err(Box::new)?;
        for &target in ctx.targets {
            plans.push(Plan::new(env, family, target, expected.clone(), &port)?);
        }
    }
    let measured = measure::measure(env, &plans, proto)?;
    Ok(plans
        .iter()
        .zip(measured)
        .map(|(plan, m)| probe_report(env, ctx, plan, m))
        .collect())
}

fn probe_report(env: &Env, ctx: &StepCtx<'_>, plan: &Plan, m: Measured) -> ProbeReport {
    let required = plan.loopback_required();
    let passed = m.comparison.passes(required);
    let observed: Vec<ObservedCell> = plan
        .expected
        .cells
        .iter()
        .zip(&m.seen)
        .map(|(c, s)| ObservedCell {
            from: c.from.clone(),
            to: c.to.clone(),
            allowed: s.allowed,
            loopback: c.loopback,
            error: s.error.clone(),
        })
        .collect();
    let reason = probe_reason(plan, &m, passed, ctx.probe.partial);
    if !passed {
        print_failure(ctx, plan, &m);
    }
    ProbeReport {
        step: ctx.step,
        protocol: ctx.probe.protocol.to_string(),
        port: report_port(ctx, plan),
        family: plan.family,
        target: plan.target,
        status: if passed {
            Status::Passed
        } else {
            Status::Failed
        },
        reason,
        pod_ips: env
            .pod_ips(plan.family)
            .into_iter()
            .map(|(k, ip)| (k, ip.to_string()))
            .collect(),
        observed,
        differing: m.comparison.differing.clone(),
        loopback: LoopbackReport {
            required,
            differing: m.comparison.loopback_differing.clone(),
        },
        attempts: m.attempts,
        seconds: (m.seconds * 1000.0).round() / 1000.0,
        partial: ctx.probe.partial,
        judged: plan
            .expected
            .cells
            .iter()
            .filter(|c| !c.loopback || required)
            .count(),
    }
}

/// The port the report names: the probe's, or the one port all cells share (partial probes
/// with cells on several ports name none).
fn report_port(ctx: &StepCtx<'_>, plan: &Plan) -> Option<u16> {
    let mut ports = plan.expected.cells.iter().map(|c| {
        c.port
            .or(ctx.probe.port)
            .or_else(|| port_of(ctx.probe, ctx.world, &c.to))
    });
    let first = ports.next()?;
    ports.all(|p| p == first).then_some(first).flatten()
}

fn probe_reason(plan: &Plan, m: &Measured, passed: bool, partial: bool) -> String {
    let c = &m.comparison;
    let loopback = |what: &str| {
        format!(
            "{} loopback cell(s) differ ({what})",
            c.loopback_differing.len()
        )
    };
    if passed {
        let judged = if partial {
            format!(
                "partial: {} listed cell(s) judged",
                plan.expected.cells.len()
            )
        } else {
            String::new()
        };
        return if c.loopback_differing.is_empty() {
            judged
        } else {
            loopback("reported, not required: a pod reaching its own IP never leaves its namespace")
        };
    }
    let mut parts = Vec::new();
    if !c.differing.is_empty() {
        let cells = table::describe(&c.differing).replace('\n', "; ");
        parts.push(format!("{} cell(s) differ: {cells}", c.differing.len()));
    }
    if plan.loopback_required() && !c.loopback_differing.is_empty() {
        let cells = table::describe(&c.loopback_differing).replace('\n', "; ");
        parts.push(format!(
            "{}: {cells}",
            loopback("required through the ClusterIP: hairpin crosses the host veth")
        ));
    }
    format!(
        "{} (after {} attempt(s) over {:.1} s)",
        parts.join("; "),
        m.attempts,
        m.seconds
    )
}

fn print_failure(ctx: &StepCtx<'_>, plan: &Plan, m: &Measured) {
    let values: Vec<bool> = m.seen.iter().map(|s| s.allowed).collect();
    let expected: Vec<bool> = plan.expected.cells.iter().map(|c| c.allowed).collect();
    println!(
        "--- step {} {} {}/{} via {}: FAILED",
        ctx.step,
        family_name(plan.family),
        ctx.probe.protocol,
        ctx.probe.port.map_or(
            if ctx.probe.partial {
                "per-cell"
            } else {
                "named"
            }
            .to_owned(),
            |p| p.to_string()
        ),
        plan.target.as_str()
    );
    if let Some(subtest) = &ctx.probe.subtest {
        println!("(upstream: {subtest})");
    }
    if ctx.probe.partial {
        // A pair may be listed on several ports: one line per judged cell, not a grid.
        print!("{}", table::cell_lines(&plan.expected, &values));
    } else {
        let exp = table::grid(&plan.expected, &expected);
        let obs = table::grid(&plan.expected, &values);
        print!(
            "{}",
            table::side_by_side(&plan.expected.order, &exp, &obs, plan.loopback_required())
        );
    }
    let mut diffs = m.comparison.differing.clone();
    diffs.extend(m.comparison.loopback_differing.iter().cloned());
    println!("differing cells:\n{}", table::describe(&diffs));
}
