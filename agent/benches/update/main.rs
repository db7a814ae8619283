//! Update latency on the test nodes: the real agent on each of two nodes (manifest source, then
//! the Kubernetes API source), a client pod on node 0 probing a server pod on node 1 with a new
//! TCP connection every millisecond, and the time from a change (a policy removed or restored,
//! the client's label changed or restored) to the first probe from which every later probe
//! shows the new verdict.
//!
//! `palisade` bench `update` [--quick] [--out FILE.json]; needs root. The API source needs the
//! control plane built once (`cargo xtask k8s up`); without it that half is reported as not
//! measured.

mod env;
#[allow(
    dead_code,
    reason = "shared by several bench binaries, each using a subset"
)]
#[path = "../shared/stats.rs"]
mod stats;

use std::{
    net::SocketAddr,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use env::Env;
use palisade_tests::{
    bench::prober::{transition, Prober},
    IpFamily,
};
use serde::Serialize;
use serde_json::{json, Value};
use stats::{percentile, Stat};

const INTERVAL: Duration = Duration::from_millis(1);
const GRACE: Duration = Duration::from_millis(200);
/// The new verdict must hold this long before a change counts as observed.
const STABLE: Duration = Duration::from_millis(100);
const GIVE_UP: Duration = Duration::from_secs(5);

#[derive(Debug, Serialize)]
struct Sample {
    kind: &'static str,
    /// The verdict after the change.
    to_allowed: bool,
    /// None when the new verdict was not observed within the give-up time.
    latency_ms: Option<f64>,
    probes: usize,
}

#[derive(Debug, Serialize)]
struct Summary {
    kind: &'static str,
    to_allowed: bool,
    latency_ms: Stat,
    p50_ms: f64,
    p99_ms: f64,
    not_observed: usize,
}

/// Applies one change while probing; returns the sample.
fn change(env: &mut Env, kind: &'static str, to_allowed: bool) -> anyhow::Result<Sample> {
    let ip = env
        .server
        .ip(IpFamily::Ipv4)
        .context("server has no IPv4")?;
    let prober = Prober::start(
        env.client.netns_name(),
        SocketAddr::new(ip, 80),
        INTERVAL,
        GRACE,
    );
    std::thread::sleep(Duration::from_millis(30));
    let t0 = Instant::now();
    let rev = env.change(kind, to_allowed)?;
    while t0.elapsed() < GIVE_UP && transition(&prober.snapshot(), t0, to_allowed, STABLE).is_none()
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    let attempts = prober.stop()?;
    let latency = transition(&attempts, t0, to_allowed, STABLE);
    env.wait(rev)?;
    Ok(Sample {
        kind,
        to_allowed,
        latency_ms: latency.map(|d| d.as_secs_f64() * 1e3),
        probes: attempts.len(),
    })
}

/// Every change `rounds` times on one source; the samples and their summary.
fn run_source(kube: bool, rounds: usize, agent_bin: &std::path::Path) -> anyhow::Result<Value> {
    let name = if kube { "kube" } else { "manifests" };
    let mut env = env::setup(kube, agent_bin)?;
    let mut samples = Vec::new();
    for r in 0..rounds {
        for kind in ["policy", "label"] {
            for to_allowed in [false, true] {
                let s = change(&mut env, kind, to_allowed)?;
                eprintln!(
                    "update: {name} round {r} {kind} -> {}: {}",
                    if to_allowed { "allowed" } else { "denied" },
                    s.latency_ms
                        .map_or("not observed".to_owned(), |l| format!("{l:.1} ms"))
                );
                samples.push(s);
            }
        }
    }
    drop(env);
    let mut summary = Vec::new();
    for kind in ["policy", "label"] {
        for to_allowed in [false, true] {
            let mine: Vec<&Sample> = samples
                .iter()
                .filter(|s| s.kind == kind && s.to_allowed == to_allowed)
                .collect();
            let ms: Vec<f64> = mine.iter().filter_map(|s| s.latency_ms).collect();
            summary.push(Summary {
                kind,
                to_allowed,
                latency_ms: Stat::of(&ms),
                p50_ms: percentile(&ms, 50.0),
                p99_ms: percentile(&ms, 99.0),
                not_observed: mine.len() - ms.len(),
            });
        }
    }
    let all: Vec<f64> = samples.iter().filter_map(|s| s.latency_ms).collect();
    Ok(json!({
        "source": name,
        "summary": summary,
        "all": {"latency_ms": Stat::of(&all), "p50_ms": percentile(&all, 50.0), "p99_ms": percentile(&all, 99.0),
                "not_observed": samples.len() - all.len()},
        "samples": samples,
    }))
}

fn main() -> anyhow::Result<()> {
    let mut quick = false;
    let mut out: Option<PathBuf> = None;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--out" => out = Some(it.next().context("--out needs a file")?.into()),
            "--bench" => {}
            other => bail!("unknown argument {other}; usage: update [--quick] [--out FILE]"),
        }
    }
    if let Some(why) = palisade_tests::missing_privileges() {
        bail!("update bench: {why}");
    }
    let agent_bin = std::env::var_os("PALISADE_AGENT_BIN")
        .map(PathBuf::from)
        .context("PALISADE_AGENT_BIN must name the agent binary (cargo xtask bench sets it)")?;
    let start = Instant::now();
    let rounds = if quick { 3 } else { 25 };
    let mut sources = vec![run_source(false, rounds, &agent_bin)?];
    let kube = match palisade_tests::kube::Binaries::locate() {
        Ok(_) => match run_source(true, rounds, &agent_bin) {
            Ok(v) => v,
            Err(e) => json!({"source": "kube", "error": format!("{e:#}")}),
        },
        Err(e) => json!({"source": "kube", "error": format!("not measured: {e}")}),
    };
    sources.push(kube);
    let report = json!({
        "bench": "update",
        "quick": quick,
        "seconds": start.elapsed().as_secs_f64(),
        "agent_poll_ms": 50,
        "probe_interval_ms": INTERVAL.as_secs_f64() * 1e3,
        "stable_ms": STABLE.as_secs_f64() * 1e3,
        "sources": sources,
    });
    let text = serde_json::to_string_pretty(&report)?;
    match out {
        Some(p) => std::fs::write(&p, text).with_context(|| p.display().to_string())?,
        None => println!("{text}"),
    }
    Ok(())
}
