//! Soak: pods and policies created, relabelled and deleted at a steady rate on two test nodes
//! while traffic flows (new allowed and denied connections, one long-lived stream); samples each
//! agent's memory, threads and descriptors, each node's BPF map entries, pins and endpoint
//! reports; at the end deletes everything it churned and checks that every count is back at its
//! baseline and that memory stayed flat. JSON report and an SVG plot. `cargo xtask soak
//! --minutes N` builds and runs the `soak` binary; see docs/reliability.md.

pub mod churn;
pub mod plot;
pub mod report;
pub mod sample;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::chaos::traffic::{self, Event};
use crate::probe::Target;
use crate::{IpFamily, Proto};
use report::{Report, TrafficCounts};
use sample::Sample;

/// What can stop a soak.
#[derive(Debug, thiserror::Error)]
pub enum SoakError {
    #[error(transparent)]
    Cluster(#[from] crate::ClusterError),
    #[error("agent: {0}")]
    Agent(String),
    #[error(transparent)]
    Chaos(#[from] crate::chaos::ChaosError),
    #[error("interrupted")]
    Interrupted,
}

impl From<crate::agent::AgentError> for SoakError {
    fn from(e: crate::agent::AgentError) -> Self {
        SoakError::Agent(e.to_string())
    }
}

#[derive(Clone, Debug)]
pub struct Options {
    pub minutes: f64,
    pub agent_bin: PathBuf,
}

impl Options {
    /// (warm-up, churn, drained) phase lengths: a tenth (10 to 60 s) to warm up, 15 s to 60 s
    /// after the drain, the rest churn.
    fn phases(&self) -> (Duration, Duration, Duration) {
        let total = self.minutes * 60.0;
        let warm = (total / 10.0).clamp(10.0, 60.0);
        let drained = (total / 10.0).clamp(15.0, 60.0);
        let churn = (total - warm - drained).max(10.0);
        (
            Duration::from_secs_f64(warm),
            Duration::from_secs_f64(churn),
            Duration::from_secs_f64(drained),
        )
    }

    /// How often the soak samples (about 120 samples, 2 s to 15 s apart).
    fn sample_every(&self) -> Duration {
        Duration::from_secs_f64((self.minutes * 60.0 / 120.0).clamp(2.0, 15.0))
    }
}

/// A churn step at most this often.
const STEP_EVERY: Duration = Duration::from_millis(1000);

fn take(env: &churn::Env, began: Instant, phase: &str, uplinks: &[u32]) -> Sample {
    let nodes = (0..env.agents.len())
        .map(|n| {
            let root = env.agent_root(n);
            sample::node(
                sample::agent_pid(root),
                &root.join("bpffs"),
                &root.join("endpoints"),
                uplinks[n],
            )
        })
        .collect();
    Sample {
        t_s: began.elapsed().as_secs_f64(),
        phase: phase.to_owned(),
        churn_pods: env.churn.len(),
        churn_policies: env.policies.len(),
        nodes,
    }
}

/// What the prober probes: cli → srv (allowed) and deny → srv (denied), at the pod IP and the
/// ClusterIP, as `probe batch` targets per source namespace (owned, so that the churn may change
/// the environment meanwhile).
struct ProbeView {
    groups: BTreeMap<String, Vec<(usize, Target)>>,
    bin: PathBuf,
}

impl ProbeView {
    fn of(env: &churn::Env) -> Self {
        let srv = env.fixed["srv"].ip(IpFamily::Ipv4);
        let svc = env
            .cluster
            .service("x", "s-srv")
            .and_then(|s| s.cluster_ip(IpFamily::Ipv4));
        let mut groups: BTreeMap<String, Vec<(usize, Target)>> = BTreeMap::new();
        for (from, allowed) in [("cli", 1usize), ("deny", 0)] {
            for ip in [srv, svc].into_iter().flatten() {
                let target = Target {
                    proto: Proto::Tcp,
                    addr: SocketAddr::new(ip, 80),
                    timeout_ms: traffic::ATTEMPT_TIMEOUT.as_millis() as u64,
                };
                let ns = env.fixed[from].netns_name().to_owned();
                groups.entry(ns).or_default().push((allowed, target));
            }
        }
        ProbeView {
            groups,
            bin: env.cluster.probe_bin().to_owned(),
        }
    }

    fn run(&self, stop: &AtomicBool, counts: &Mutex<TrafficCounts>) {
        while !stop.load(Ordering::SeqCst) {
            let at = Instant::now();
            for (ns, targets) in &self.groups {
                for (allowed, o) in traffic::batch(&self.bin, ns, targets) {
                    let mut c = counts.lock().unwrap_or_else(|p| p.into_inner());
                    match (allowed == 1, o.allowed) {
                        (true, true) => c.allowed_ok += 1,
                        (true, false) => c.allowed_failed += 1,
                        (false, true) => c.denied_succeeded += 1,
                        (false, false) => c.denied_blocked += 1,
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(300).saturating_sub(at.elapsed()));
        }
    }
}

/// Sleeps until `until`, sampling every `every`; false if interrupted.
fn sample_until(env: &churn::Env, until: Instant, ctx: &mut Ctx<'_>, phase: &str) -> bool {
    while Instant::now() < until {
        if ctx.interrupted.load(Ordering::Relaxed) {
            return false;
        }
        if Instant::now() >= ctx.next_sample {
            ctx.samples.push(take(env, ctx.began, phase, ctx.uplinks));
            ctx.next_sample = Instant::now() + ctx.every;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

/// The run's clock and its samples.
struct Ctx<'a> {
    began: Instant,
    every: Duration,
    next_sample: Instant,
    uplinks: &'a [u32],
    samples: Vec<Sample>,
    interrupted: &'a AtomicBool,
}

/// Warm-up, churn, drain: the churn phase's bounds (seconds since the start) or the error.
fn phases(
    env: &mut churn::Env,
    (warm, churn_for, drained_for): (Duration, Duration, Duration),
    ctx: &mut Ctx<'_>,
) -> Result<(f64, f64), SoakError> {
    if !sample_until(env, Instant::now() + warm, ctx, "baseline") {
        return Err(SoakError::Interrupted);
    }
    ctx.samples
        .push(take(env, ctx.began, "baseline", ctx.uplinks));
    let churn_start = ctx.began.elapsed().as_secs_f64();
    let churn_end = Instant::now() + churn_for;
    while Instant::now() < churn_end {
        let step = Instant::now();
        env.step()?;
        if !sample_until(env, step + STEP_EVERY, ctx, "churn") {
            return Err(SoakError::Interrupted);
        }
    }
    env.drain()?;
    let churn_stop = ctx.began.elapsed().as_secs_f64();
    ctx.next_sample = Instant::now();
    if !sample_until(env, Instant::now() + drained_for, ctx, "drained") {
        return Err(SoakError::Interrupted);
    }
    ctx.samples
        .push(take(env, ctx.began, "drained", ctx.uplinks));
    Ok((churn_start, churn_stop))
}

/// Runs the soak; returns the report (also when interrupted, with what it has).
pub fn run(opts: &Options, interrupted: &AtomicBool) -> Result<Report, SoakError> {
    let began = Instant::now();
    let (warm, churn_for, drained_for) = opts.phases();
    let every = opts.sample_every();
    let mut env = churn::Env::build(&opts.agent_bin)?;
    let _echo = crate::chaos::env::EchoServer::start(&env.fixed["srv"], 9000)?;
    let uplinks: Vec<u32> = (0..env.agents.len())
        .map(|n| env.uplink_ifindex(n))
        .collect();
    let stop = AtomicBool::new(false);
    let counts = Mutex::new(TrafficCounts::default());
    let log: traffic::Log = Arc::new(Mutex::new(Vec::new()));
    let addr = SocketAddr::new(
        env.fixed["srv"]
            .ip(IpFamily::Ipv4)
            .unwrap_or([0, 0, 0, 0].into()),
        9000,
    );
    let conn = traffic::connect(&env.fixed["cli"], addr)
        .map_err(|e| SoakError::Agent(format!("stream cli -> srv:9000: {e}")))?;
    let view = ProbeView::of(&env);
    let mut ctx = Ctx {
        began,
        every,
        next_sample: Instant::now(),
        uplinks: &uplinks,
        samples: Vec::new(),
        interrupted,
    };
    let result = std::thread::scope(|s| {
        let (stream_log, stop_ref, counts_ref) = (log.clone(), &stop, &counts);
        s.spawn(move || traffic::run_stream(0, conn, &stream_log, stop_ref));
        s.spawn(move || view.run(stop_ref, counts_ref));
        let outcome = phases(&mut env, (warm, churn_for, drained_for), &mut ctx);
        stop.store(true, Ordering::SeqCst);
        outcome
    });
    let mut traffic_counts = counts.into_inner().unwrap_or_else(|p| p.into_inner());
    for e in log.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        match e {
            Event::RoundTrip { .. } => traffic_counts.stream_round_trips += 1,
            Event::Broken { at, error, .. } => {
                traffic_counts.stream_broken += 1;
                let t = at.saturating_duration_since(began).as_secs_f64();
                traffic_counts.stream_errors.push((t, error.clone()));
            }
            Event::Attempt { .. } => {}
        }
    }
    let churn_phase = result.as_ref().map_or((0.0, 0.0), |p| *p);
    let report = Report::new(
        began.elapsed().as_secs_f64() / 60.0,
        ctx.samples,
        env.counts.clone(),
        traffic_counts,
        churn_phase,
    );
    match result {
        Ok(_) | Err(SoakError::Interrupted) => Ok(report),
        Err(e) => {
            println!("{}", report.summary_text());
            Err(e)
        }
    }
}
