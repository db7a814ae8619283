//! The four scenarios. Each runs with traffic flowing and records when its fault began, when
//! the agents (or the source) came back, when a change made during the outage was written and
//! when it was seen enforced on the wire; [`super::report`] turns that and the traffic log into
//! counts.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::env::{Env, PolicyState};
use super::traffic::{Expect, Pair, Traffic};
use super::{ChaosError, Options};
use crate::{ProbeSpec, Proto};

/// A scenario of the issue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Kind {
    /// No fault: the harness's own noise floor.
    Steady,
    /// (a) SIGKILL both agents, restart them.
    Kill,
    /// (b) SIGTERM both agents, restart them.
    Graceful,
    /// (c) The manifest directory disappears for a while (a change is made meanwhile), then
    /// comes back.
    SourceOutage,
    /// (d) Both agents down; the policies change; the agents restart.
    ChangeWhileDown,
}

impl Kind {
    pub const ALL: [Kind; 4] = [
        Kind::Kill,
        Kind::Graceful,
        Kind::SourceOutage,
        Kind::ChangeWhileDown,
    ];

    /// The letter (`-` for the steady run).
    pub fn id(self) -> &'static str {
        match self {
            Kind::Steady => "-",
            Kind::Kill => "a",
            Kind::Graceful => "b",
            Kind::SourceOutage => "c",
            Kind::ChangeWhileDown => "d",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Steady => "steady state (no fault)",
            Kind::Kill => "SIGKILL and restart",
            Kind::Graceful => "graceful restart (SIGTERM)",
            Kind::SourceOutage => "policy source unavailable, then back",
            Kind::ChangeWhileDown => "policies changed while the agents are down",
        }
    }

    /// Parses a letter or a name (`a`/`kill`, `b`/`graceful`, `c`/`source`, `d`/`change`).
    pub fn parse(text: &str) -> Option<Kind> {
        match text {
            "a" | "kill" => Some(Kind::Kill),
            "b" | "graceful" => Some(Kind::Graceful),
            "c" | "source" => Some(Kind::SourceOutage),
            "d" | "change" => Some(Kind::ChangeWhileDown),
            _ => None,
        }
    }
}

/// What happened in one scenario, with the times the report needs.
#[derive(Clone, Debug)]
pub struct Run {
    pub kind: Kind,
    pub started: Instant,
    pub ended: Instant,
    /// The fault began (agents stopped, directory moved away).
    pub fault_at: Option<Instant>,
    /// The state change was written (during the outage).
    pub change_at: Option<Instant>,
    /// The agents were restarted / the directory came back.
    pub recovery_at: Option<Instant>,
    /// Every changed pair was seen in its new state (twice in a row) from here on.
    pub enforced_at: Option<Instant>,
    /// Until the agents reported the revision applied (after recovery).
    pub applied_ms: Option<f64>,
    pub from_state: PolicyState,
    pub to_state: PolicyState,
    pub agent_exited: bool,
    pub error: Option<String>,
}

/// How long the enforcement of a change may take before the scenario fails.
pub const ENFORCE_LIMIT: Duration = Duration::from_secs(30);

/// Sleeps `d` in short steps; false if interrupted meanwhile.
pub fn pause(d: Duration, interrupted: &AtomicBool) -> bool {
    let end = Instant::now() + d;
    while Instant::now() < end {
        if interrupted.load(Ordering::Relaxed) {
            return false;
        }
        std::thread::sleep(
            Duration::from_millis(20).min(end.saturating_duration_since(Instant::now())),
        );
    }
    true
}

/// Probes `pairs` once (short timeout); whether each was allowed.
fn probe(env: &Env, pairs: &[&Pair]) -> Vec<bool> {
    let specs: Vec<ProbeSpec<'_>> = pairs
        .iter()
        .map(|p| ProbeSpec {
            from: env.pod(&p.from),
            to: env.addr(&p.to, p.port, p.via_service),
            proto: Proto::Tcp,
            timeout: Duration::from_millis(250),
        })
        .collect();
    env.cluster
        .probe_many(&specs)
        .map(|o| o.into_iter().map(|o| o.allowed).collect())
        .unwrap_or_default()
}

/// Probes the pairs the flip changes until all show `target` twice in a row; returns when the
/// first of those two rounds started.
fn await_enforcement(env: &Env, traffic: &Traffic, target: PolicyState) -> Option<Instant> {
    let pairs: Vec<&Pair> = traffic
        .attempts
        .iter()
        .filter(|p| matches!(p.expect, Expect::Flip { .. }))
        .collect();
    let want: Vec<bool> = pairs.iter().map(|p| p.expect.allowed_in(target)).collect();
    let began = Instant::now();
    let mut first: Option<Instant> = None;
    while began.elapsed() < ENFORCE_LIMIT {
        let at = Instant::now();
        if probe(env, &pairs) == want {
            match first {
                Some(f) => return Some(f),
                None => first = Some(at),
            }
        } else {
            first = None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Polls the agents' status until every agent applied `revision` with its pods attached.
fn await_applied(env: &Env, revision: u64) -> Option<Instant> {
    let began = Instant::now();
    while began.elapsed() < ENFORCE_LIMIT {
        if env.applied(revision) {
            return Some(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}

fn stop_agents(env: &mut Env, signal: libc::c_int) -> Result<(), ChaosError> {
    for agent in &mut env.agents {
        agent.stop(signal)?;
    }
    Ok(())
}

fn restart_agents(env: &mut Env) -> Result<(), ChaosError> {
    for n in 0..env.agents.len() {
        env.agents[n].restart(&env.cluster, &env.agent_bin, &env.manifests)?;
    }
    Ok(())
}

/// Records an agent that exited while its source was away.
fn check_alive(env: &mut Env, run: &mut Run) {
    if let Err(e) = env.agents_alive() {
        run.agent_exited = true;
        run.error = Some(format!(
            "an agent exited while its source was unavailable: {e}"
        ));
    }
}

/// (c), manifest source: the directory is moved away, the change is written into the moved
/// directory at mid-outage, and the directory comes back. False if interrupted.
fn dir_outage(
    env: &mut Env,
    run: &mut Run,
    opts: &Options,
    interrupted: &AtomicBool,
) -> Result<bool, ChaosError> {
    let dir = env.manifests.dir().to_owned();
    let away: PathBuf = dir.with_extension("away");
    std::fs::rename(&dir, &away)
        .map_err(|e| ChaosError::Io(format!("moving {} away: {e}", dir.display())))?;
    run.fault_at = Some(Instant::now());
    let ok = pause(opts.source_outage / 2, interrupted);
    env.write_state(run.to_state, Some(&away))?;
    run.change_at = Some(Instant::now());
    let ok = ok && pause(opts.source_outage / 2, interrupted);
    check_alive(env, run);
    std::fs::rename(&away, &dir)
        .map_err(|e| ChaosError::Io(format!("restoring {}: {e}", dir.display())))?;
    run.recovery_at = Some(Instant::now());
    env.commit()?;
    Ok(ok)
}

/// (c), API source: the API server is stopped for the outage and started again on the same
/// port with the same etcd data; nobody can write while it is down, so the change is written
/// through it as soon as it is back, and its enforcement is timed from the API's return.
/// False if interrupted.
fn api_outage(
    env: &mut Env,
    run: &mut Run,
    opts: &Options,
    interrupted: &AtomicBool,
) -> Result<bool, ChaosError> {
    run.fault_at = Some(Instant::now());
    env.stop_api()?;
    let ok = pause(
        opts.source_outage
            .saturating_sub(run.fault_at.map_or(Duration::ZERO, |f| f.elapsed())),
        interrupted,
    );
    check_alive(env, run);
    if !env.agents_see_api_down() {
        // The agents must have noticed, or the outage was not one for them.
        run.error.get_or_insert_with(|| {
            "an agent's status did not show the API source failing during the outage".into()
        });
    }
    env.start_api()?;
    run.recovery_at = Some(Instant::now());
    env.write_state(run.to_state, None)?;
    run.change_at = Some(Instant::now());
    Ok(ok)
}

/// Runs one scenario. Errors that leave the environment unusable are returned; the rest are
/// recorded in the run.
pub fn run(
    env: &mut Env,
    traffic: &mut Traffic,
    kind: Kind,
    opts: &Options,
    interrupted: &AtomicBool,
) -> Result<Run, ChaosError> {
    traffic.reopen(env)?;
    let from_state = env.state;
    let mut run = Run {
        kind,
        started: Instant::now(),
        ended: Instant::now(),
        fault_at: None,
        change_at: None,
        recovery_at: None,
        enforced_at: None,
        applied_ms: None,
        from_state,
        to_state: from_state,
        agent_exited: false,
        error: None,
    };
    if !pause(opts.baseline, interrupted) {
        return Err(ChaosError::Interrupted);
    }
    let changes = matches!(kind, Kind::SourceOutage | Kind::ChangeWhileDown);
    if changes {
        run.to_state = from_state.flipped();
    }
    match kind {
        Kind::Steady => {}
        Kind::Kill | Kind::Graceful | Kind::ChangeWhileDown => {
            let signal = if kind == Kind::Graceful {
                libc::SIGTERM
            } else {
                libc::SIGKILL
            };
            stop_agents(env, signal)?;
            run.fault_at = Some(Instant::now());
            if changes {
                env.write_state(run.to_state, None)?;
                env.commit()?;
                run.change_at = Some(Instant::now());
            }
            let ok = pause(opts.downtime, interrupted);
            restart_agents(env)?;
            run.recovery_at = Some(Instant::now());
            if !ok {
                return Err(ChaosError::Interrupted);
            }
        }
        Kind::SourceOutage => {
            let ok = if env.is_kube() {
                api_outage(env, &mut run, opts, interrupted)?
            } else {
                dir_outage(env, &mut run, opts, interrupted)?
            };
            if !ok {
                return Err(ChaosError::Interrupted);
            }
        }
    }
    if let Some(rec) = run.recovery_at.filter(|_| !run.agent_exited) {
        // On the wire (the changed pairs) and in the agents' status, side by side.
        let revision = env.revision;
        let (enforced, applied) = std::thread::scope(|s| {
            let shared: &Env = env;
            let applied = s.spawn(move || await_applied(shared, revision));
            let enforced = changes.then(|| await_enforcement(shared, traffic, run.to_state));
            (enforced.flatten(), applied.join().ok().flatten())
        });
        run.enforced_at = enforced;
        run.applied_ms = applied.map(|t| t.saturating_duration_since(rec).as_secs_f64() * 1000.0);
        if changes && run.enforced_at.is_none() {
            run.error = Some(format!(
                "the change made during the outage was not enforced within {ENFORCE_LIMIT:?}"
            ));
        }
        if let Err(e) = env.wait_applied(revision) {
            run.error.get_or_insert(e.to_string());
        }
    }
    let settled = pause(opts.settle, interrupted);
    if let Err(e) = env.agents_alive() {
        run.agent_exited = true;
        run.error.get_or_insert(e.to_string());
    }
    run.ended = Instant::now();
    if !settled {
        return Err(ChaosError::Interrupted);
    }
    Ok(run)
}
