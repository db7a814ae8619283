//! Traffic between pods on the test nodes (same node and across nodes): TCP throughput
//! (iperf3), request/response latency, and the new-connection rate, for no enforcement,
//! Palisade, kube-router's iptables method and an nftables method laid out like
//! kube-network-policies, each at 10, 1k and 10k rules, switched in turn on the same nodes.
//!
//! `palisade` bench `traffic` [--quick] [--out FILE.json]; needs root.

mod modes;
#[allow(
    dead_code,
    reason = "shared by several bench binaries, each using a subset"
)]
#[path = "../shared/stats.rs"]
mod stats;

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use modes::{Mode, Pods};
use palisade_tests::{
    bench::{
        netload::{self, EchoServer, IperfServer},
        rulesets,
    },
    CniMode, Family, IpFamily, Pod, TestCluster,
};
use serde_json::{json, Value};
use stats::{median, percentile, Stat};

const IPERF_PORT: u16 = 5201;
const RR_PORT: u16 = 7000;
/// Served, but allowed by no rule: a connection to it shows whether a mode enforces.
const CLOSED_PORT: u16 = 7100;

struct Plan {
    rules: Vec<usize>,
    runs: usize,
    secs: u64,
}

fn sysctl(ns: &str, kv: &str) -> anyhow::Result<()> {
    let mut cmd = palisade_tests::netns::command_in(ns, "sysctl")?;
    cmd.args(["-qw", kv]);
    palisade_tests::exec::run(&mut cmd)?;
    Ok(())
}

fn ip(pod: &Pod) -> anyhow::Result<IpAddr> {
    pod.ip(IpFamily::Ipv4).context("pod has no IPv4")
}

/// Every metric for one mode and placement.
fn measure(
    client: &Pod,
    server: &Pod,
    plan: &Plan,
) -> anyhow::Result<Vec<(&'static str, &'static str, Vec<f64>)>> {
    let d = Duration::from_secs(plan.secs);
    let to = ip(server)?;
    let ns = client.netns_name();
    let (mut gbps, mut rr_p50, mut rr_p99, mut rr_rate) = (vec![], vec![], vec![], vec![]);
    let (mut crr_rate, mut crr_p50, mut crr_p99, mut crr_err) = (vec![], vec![], vec![], vec![]);
    for _ in 0..plan.runs {
        gbps.push(netload::iperf3(ns, to, IPERF_PORT, d)? / 1e9);
        let rr = netload::tcp_rr(ns, SocketAddr::new(to, RR_PORT), 1, d)?;
        rr_p50.push(percentile(&rr.latencies_us, 50.0));
        rr_p99.push(percentile(&rr.latencies_us, 99.0));
        rr_rate.push(rr.rate());
        let crr = netload::tcp_crr(ns, SocketAddr::new(to, RR_PORT), d)?;
        crr_rate.push(crr.rate());
        crr_p50.push(percentile(&crr.latencies_us, 50.0));
        crr_p99.push(percentile(&crr.latencies_us, 99.0));
        crr_err.push(crr.errors as f64);
    }
    Ok(vec![
        ("throughput", "Gbit/s", gbps),
        ("rr_latency_p50", "µs", rr_p50),
        ("rr_latency_p99", "µs", rr_p99),
        ("rr_rate", "transactions/s", rr_rate),
        ("conn_rate", "connections/s", crr_rate),
        ("conn_latency_p50", "µs", crr_p50),
        ("conn_latency_p99", "µs", crr_p99),
        ("conn_errors", "errors per run", crr_err),
    ])
}

/// Waits until nothing blocks the served port any more: detaching programs whose links were
/// pinned in an unmounted bpffs happens when the kernel releases the last reference, shortly
/// after the agent exits.
fn wait_open(
    cluster: &TestCluster,
    client: &Pod,
    servers: &[Pod],
    mode: Mode,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let mut open = true;
        for s in servers {
            let to = SocketAddr::new(ip(s)?, CLOSED_PORT);
            open &= netload::reachable(client.netns_name(), to, Duration::from_millis(300))?;
        }
        if open {
            return Ok(());
        }
        if Instant::now() > deadline {
            let mut tc = String::new();
            for n in 0..cluster.nodes().len() {
                let mut cmd =
                    palisade_tests::netns::command_in(cluster.node(n).netns_name(), "bpftool")?;
                cmd.args(["net", "show"]);
                if let Ok(out) = cmd.output() {
                    tc.push_str(&String::from_utf8_lossy(&out.stdout));
                }
            }
            bail!("{mode:?} still enforces 15 s after it was switched off; bpftool net show in the nodes:\n{tc}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
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
            other => bail!("unknown argument {other}; usage: traffic [--quick] [--out FILE]"),
        }
    }
    if let Some(why) = palisade_tests::missing_privileges() {
        bail!("traffic bench: {why}");
    }
    let agent_bin = std::env::var_os("PALISADE_AGENT_BIN")
        .map(PathBuf::from)
        .context("PALISADE_AGENT_BIN must name the agent binary (cargo xtask bench sets it)")?;
    let plan = if quick {
        Plan {
            rules: vec![1_000],
            runs: 1,
            secs: 1,
        }
    } else {
        Plan {
            rules: vec![10, 1_000, 10_000],
            runs: 4,
            secs: 2,
        }
    };
    let start = Instant::now();
    palisade_tests::cleanup_stale();
    let cluster = TestCluster::builder()
        .family(Family::Ipv4)
        .nodes(2)
        .cni(CniMode::Bridge)
        .build()?;
    let client = cluster.add_pod(0, "bench", "client", &[])?;
    let servers = vec![
        cluster.add_pod(0, "bench", "server-same", &[])?,
        cluster.add_pod(1, "bench", "server-cross", &[])?,
    ];
    netload::tune_client(client.netns_name())?;
    // Equal footing for every mode: kube-proxy's rules make the nodes track every flow, and
    // thousands of short connections per second would fill the table with TIME_WAIT entries.
    for n in 0..2 {
        sysctl(
            cluster.node(n).netns_name(),
            "net.netfilter.nf_conntrack_tcp_timeout_time_wait=10",
        )?;
    }
    let mut servers_up = Vec::new();
    let mut iperfs = Vec::new();
    for s in &servers {
        servers_up.push(EchoServer::start(s.netns_name(), RR_PORT)?);
        servers_up.push(EchoServer::start(s.netns_name(), CLOSED_PORT)?);
        iperfs.push(IperfServer::start(s.netns_name(), IPERF_PORT)?);
    }
    let client_ip = match ip(&client)? {
        IpAddr::V4(a) => a,
        IpAddr::V6(_) => bail!("client has no IPv4"),
    };
    let pods = Pods {
        client: &client,
        servers: &servers,
    };
    let mut results: Vec<Value> = Vec::new();
    let mut checks: Vec<Value> = Vec::new();
    for &n_rules in &plan.rules {
        let rules = rulesets::rule_set(n_rules, client_ip, &[IPERF_PORT, RR_PORT]);
        let mut none: Vec<(String, f64)> = Vec::new();
        for mode in Mode::ALL {
            let t = Instant::now();
            let active = modes::enable(&cluster, &pods, mode, &rules, &agent_bin)
                .with_context(|| format!("enabling {mode:?} with {n_rules} rules"))?;
            let setup_s = t.elapsed().as_secs_f64();
            for (placement, server) in ["same_node", "cross_node"].into_iter().zip(&servers) {
                let to = ip(server)?;
                let allowed = netload::reachable(
                    client.netns_name(),
                    SocketAddr::new(to, RR_PORT),
                    Duration::from_secs(2),
                )?;
                let closed = netload::reachable(
                    client.netns_name(),
                    SocketAddr::new(to, CLOSED_PORT),
                    Duration::from_millis(500),
                )?;
                let enforcing = !closed;
                checks.push(json!({"rules": n_rules, "mode": mode, "placement": placement,
                    "allowed_port_reachable": allowed, "enforcing": enforcing, "setup_seconds": setup_s}));
                if !allowed || enforcing != (mode != Mode::None) {
                    bail!("{mode:?}, {n_rules} rules, {placement}: allowed port reachable {allowed}, other port blocked {enforcing}: the mode is not in the state it should be");
                }
                for (metric, unit, samples) in measure(&client, server, &plan)? {
                    let m = median(&samples);
                    let key = format!("{placement}/{metric}");
                    if mode == Mode::None {
                        none.push((key.clone(), m));
                    }
                    let base = none.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
                    eprintln!(
                        "traffic: {n_rules:>5} rules {mode:?} {placement} {metric}: {m:.2} {unit}"
                    );
                    results.push(
                        json!({"rules": n_rules, "mode": mode, "placement": placement,
                        "metric": metric, "unit": unit, "stat": Stat::of(&samples),
                        "vs_none": base.filter(|b| *b > 0.0).map(|b| m / b)}),
                    );
                }
            }
            modes::disable(&cluster, active)?;
            wait_open(&cluster, &client, &servers, mode)?;
        }
    }
    drop(iperfs);
    drop(servers_up);
    drop(cluster);
    let report = json!({
        "bench": "traffic",
        "quick": quick,
        "seconds": start.elapsed().as_secs_f64(),
        "plan": {"rules": plan.rules, "runs": plan.runs, "seconds_per_run": plan.secs},
        "family": "ipv4", "cni": "bridge",
        "checks": checks,
        "results": results,
    });
    let text = serde_json::to_string_pretty(&report)?;
    match out {
        Some(p) => std::fs::write(&p, text).with_context(|| p.display().to_string())?,
        None => println!("{text}"),
    }
    Ok(())
}
