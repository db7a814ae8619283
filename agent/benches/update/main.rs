//! Update latency on the test nodes: the real agent on each of two nodes (manifest source), a
//! client pod on node 0 probing a server pod on node 1 with a new TCP connection every
//! millisecond, and the time from a change (a policy removed or restored, the client's label
//! changed or restored) to the first probe from which every later probe shows the new verdict.
//!
//! `palisade` bench `update` [--quick] [--out FILE.json]; needs root.

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
use palisade_tests::{
    agent::{node_name, pod_manifest, AgentProcess, Manifests},
    bench::prober::{transition, Prober},
    CniMode, Family, IpFamily, Pod, Port, TestCluster,
};
use serde::Serialize;
use serde_json::{json, Value};
use stats::{percentile, Stat};

const INTERVAL: Duration = Duration::from_millis(1);
const GRACE: Duration = Duration::from_millis(200);
/// The new verdict must hold this long before a change counts as observed.
const STABLE: Duration = Duration::from_millis(100);
const GIVE_UP: Duration = Duration::from_secs(5);
const WAIT: Duration = Duration::from_secs(30);

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

struct Env {
    _cluster: TestCluster,
    manifests: Manifests,
    agents: Vec<AgentProcess>,
    client: Pod,
    server: Pod,
    dir: PathBuf,
}

impl Drop for Env {
    fn drop(&mut self) {
        self.agents.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn policy(name: &str, spec: Value) -> Value {
    json!({"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy",
           "metadata":{"namespace":"bench","name":name},"spec":spec})
}

fn allow_policy() -> Value {
    policy(
        "allow-client",
        json!({"podSelector":{"matchLabels":{"app":"server"}},
               "ingress":[{"from":[{"podSelector":{"matchLabels":{"app":"client"}}}],"ports":[{"port":80}]}]}),
    )
}

fn setup() -> anyhow::Result<Env> {
    palisade_tests::cleanup_stale();
    let dir = std::env::temp_dir().join(format!("palisade-bench-update-{}", std::process::id()));
    let cluster = TestCluster::builder()
        .family(Family::Ipv4)
        .nodes(2)
        .cni(CniMode::Bridge)
        .build()?;
    let manifests = Manifests::new(dir.join("manifests"))?;
    manifests.put(
        "ns-bench",
        &json!({"apiVersion":"v1","kind":"Namespace","metadata":{"name":"bench"}}),
    )?;
    let client = cluster.add_pod(0, "bench", "client", &[])?;
    let server = cluster.add_pod(1, "bench", "server", &[Port::tcp(80)])?;
    manifests.put(
        "pod-client",
        &pod_manifest(&client, &node_name(0), &json!({"app":"client"})),
    )?;
    manifests.put(
        "pod-server",
        &pod_manifest(&server, &node_name(1), &json!({"app":"server"})),
    )?;
    manifests.put(
        "np-deny",
        &policy(
            "deny",
            json!({"podSelector":{"matchLabels":{"app":"server"}},"policyTypes":["Ingress"]}),
        ),
    )?;
    manifests.put("np-allow", &allow_policy())?;
    let bin = std::env::var_os("PALISADE_AGENT_BIN")
        .map(PathBuf::from)
        .context("PALISADE_AGENT_BIN must name the agent binary (cargo xtask bench sets it)")?;
    let mut agents = Vec::new();
    for n in 0..2 {
        agents.push(AgentProcess::start(
            &cluster,
            n,
            &bin,
            &manifests,
            dir.join(format!("node{n}")),
        )?);
    }
    agents[0].report_endpoint(&client)?;
    agents[1].report_endpoint(&server)?;
    let mut env = Env {
        _cluster: cluster,
        manifests,
        agents,
        client,
        server,
        dir,
    };
    commit_and_wait(&mut env)?;
    Ok(env)
}

fn commit_and_wait(env: &mut Env) -> anyhow::Result<()> {
    let rev = env.manifests.commit()?;
    let pods = [env.client.key(), env.server.key()];
    for (n, agent) in env.agents.iter_mut().enumerate() {
        let local = [pods[n].clone()];
        agent
            .wait_applied(rev, &local, WAIT)
            .with_context(|| format!("agent log:\n{}", agent.log()))?;
    }
    Ok(())
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
    match (kind, to_allowed) {
        ("policy", false) => env.manifests.remove("np-allow")?,
        ("policy", true) => env.manifests.put("np-allow", &allow_policy())?,
        ("label", allowed) => {
            let app = if allowed { "client" } else { "other" };
            env.manifests.put(
                "pod-client",
                &pod_manifest(&env.client, &node_name(0), &json!({ "app": app })),
            )?;
        }
        _ => bail!("unknown change {kind}"),
    }
    let rev = env.manifests.commit()?;
    while t0.elapsed() < GIVE_UP && transition(&prober.snapshot(), t0, to_allowed, STABLE).is_none()
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    let attempts = prober.stop()?;
    let latency = transition(&attempts, t0, to_allowed, STABLE);
    let pods = [env.client.key(), env.server.key()];
    for (n, agent) in env.agents.iter_mut().enumerate() {
        agent.wait_applied(rev, &[pods[n].clone()], WAIT)?;
    }
    Ok(Sample {
        kind,
        to_allowed,
        latency_ms: latency.map(|d| d.as_secs_f64() * 1e3),
        probes: attempts.len(),
    })
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
    let start = Instant::now();
    let rounds = if quick { 3 } else { 25 };
    let mut env = setup()?;
    let mut samples = Vec::new();
    for r in 0..rounds {
        for kind in ["policy", "label"] {
            for to_allowed in [false, true] {
                let s = change(&mut env, kind, to_allowed)?;
                eprintln!(
                    "update: round {r} {kind} -> {}: {}",
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
    let report = json!({
        "bench": "update",
        "quick": quick,
        "seconds": start.elapsed().as_secs_f64(),
        "source": "manifests",
        "agent_poll_ms": 50,
        "probe_interval_ms": INTERVAL.as_secs_f64() * 1e3,
        "stable_ms": STABLE.as_secs_f64() * 1e3,
        "summary": summary,
        "all": {"latency_ms": Stat::of(&all), "p50_ms": percentile(&all, 50.0), "p99_ms": percentile(&all, 99.0),
                "not_observed": samples.len() - all.len()},
        "samples": samples,
        "kube_source": "not measured: the Kubernetes API source is not implemented yet (issue 6)",
    });
    let text = serde_json::to_string_pretty(&report)?;
    match out {
        Some(p) => std::fs::write(&p, text).with_context(|| p.display().to_string())?,
        None => println!("{text}"),
    }
    Ok(())
}
