//! Chaos: the agent under faults while traffic flows. On two test nodes with long-lived TCP
//! echo streams and a steady rate of new allowed and denied connection attempts (same node and
//! cross node, pod IPs and ClusterIPs), it runs (a) SIGKILL and restart, (b) graceful restart,
//! (c) the manifest directory unavailable for a while and back, (d) policies changed while the
//! agents are down, and reports per scenario: established allowed connections broken, denied
//! attempts that succeeded, allowed attempts that failed, and the time until a change made
//! during the outage was enforced. Target 0/0/0. `cargo xtask chaos` builds and runs the
//! `chaos` binary; see docs/reliability.md. With `--source kube` (feature `kube`) the agents
//! watch a loopback API server instead, every object is written through it, and (c) stops it.

pub mod env;
#[cfg(feature = "kube")]
pub mod kube;
pub mod report;
pub mod scenario;
pub mod traffic;

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use report::Report;
use scenario::Kind;

/// What can stop a chaos run.
#[derive(Debug, thiserror::Error)]
pub enum ChaosError {
    #[error(transparent)]
    Cluster(#[from] crate::ClusterError),
    #[error(transparent)]
    Netns(#[from] crate::netns::NetnsError),
    #[error("agent: {0}")]
    Agent(String),
    #[error("{0}")]
    Io(String),
    #[error("Kubernetes API: {0}")]
    Kube(String),
    #[error("interrupted")]
    Interrupted,
}

/// Where the agents read the cluster from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceMode {
    /// A manifest directory; (c) moves it away.
    #[default]
    Manifests,
    /// A loopback kube-apiserver; (c) stops it.
    Kube,
}

impl SourceMode {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "manifests" => Some(Self::Manifests),
            "kube" => Some(Self::Kube),
            _ => None,
        }
    }
}

impl From<crate::agent::AgentError> for ChaosError {
    fn from(e: crate::agent::AgentError) -> Self {
        ChaosError::Agent(e.to_string())
    }
}

/// How a run is timed and what it runs.
#[derive(Clone, Debug)]
pub struct Options {
    pub scenarios: Vec<Kind>,
    /// Traffic before each fault.
    pub baseline: Duration,
    /// How long the agents stay down in (a), (b), (d).
    pub downtime: Duration,
    /// How long the source stays unavailable in (c).
    pub source_outage: Duration,
    /// Traffic after recovery.
    pub settle: Duration,
    pub agent_bin: PathBuf,
    pub source: SourceMode,
}

impl Options {
    /// The run: all four scenarios, the source away for 30 s.
    pub fn full(agent_bin: PathBuf) -> Self {
        Options {
            scenarios: Kind::ALL.to_vec(),
            baseline: Duration::from_secs(3),
            downtime: Duration::from_secs(5),
            source_outage: Duration::from_secs(30),
            settle: Duration::from_secs(4),
            agent_bin,
            source: SourceMode::Manifests,
        }
    }

    /// A short run (CI): shorter phases.
    pub fn quick(agent_bin: PathBuf) -> Self {
        Options {
            baseline: Duration::from_millis(1500),
            downtime: Duration::from_secs(2),
            source_outage: Duration::from_secs(4),
            settle: Duration::from_secs(2),
            ..Self::full(agent_bin)
        }
    }
}

/// Builds the environment, starts the traffic, runs a steady phase and then each scenario, and
/// counts. Stops early (with the report so far) when `interrupted` is set.
pub fn run(opts: &Options, interrupted: &AtomicBool) -> Result<Report, ChaosError> {
    let began = Instant::now();
    let mut env = env::Env::build(&opts.agent_bin, opts.source)?;
    let mut traffic = traffic::Traffic::start(&env)?;
    traffic.start_attempts(&env);
    let mut runs = Vec::new();
    let mut failure = None;
    for kind in std::iter::once(Kind::Steady).chain(opts.scenarios.iter().copied()) {
        println!("chaos: {} {}", kind.id(), kind.name());
        match scenario::run(&mut env, &mut traffic, kind, opts, interrupted) {
            Ok(r) => runs.push(r),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    traffic.stop();
    let events = traffic.events();
    let scenarios = runs
        .iter()
        .map(|r| report::analyse(r, &traffic, &events))
        .collect::<Vec<_>>();
    if scenarios.iter().any(|s| !s.passed) || failure.is_some() {
        println!("chaos: agent logs (tail):\n{}", env.logs(15));
    }
    let report = Report::new(
        scenarios,
        &traffic,
        began.elapsed().as_secs_f64(),
        opts.source,
    );
    match failure {
        Some(ChaosError::Interrupted) | None => Ok(report),
        Some(e) => {
            println!("{}", report.summary_text());
            Err(e)
        }
    }
}
