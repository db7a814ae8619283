//! SCTP through the test nodes, without any agent: pods serving SCTP, kube-proxy-style SCTP
//! Services (`-p sctp` DNAT), real associations between every pair, directly and through the
//! ClusterIPs, a few rounds. Needs root and a kernel with SCTP (the VM tier, `cargo xtask
//! vm-test`); elsewhere it says why and returns.

mod common;

use std::net::SocketAddr;

use common::TIMEOUT;
use palisade_tests::probe::sctp_supported;
use palisade_tests::{require_root, CniMode, Family, IpFamily, Port, ProbeSpec, Proto};

const ROUNDS: usize = 3;

#[test]
#[ignore = "privileged: needs root (cargo xtask test runs it)"]
fn sctp_between_all_pods_direct_and_through_cluster_ips() {
    require_root!();
    if let Err(e) = sctp_supported() {
        eprintln!("SKIPPED: this kernel has no SCTP ({e}); the VM tier runs this test");
        return;
    }
    let cl = common::cluster(Family::Ipv4, CniMode::Bridge);
    let mut pods = Vec::new();
    let mut targets = Vec::new();
    for (i, ns) in ["x", "y", "z"].iter().enumerate() {
        for (j, name) in ["a", "b", "c"].iter().enumerate() {
            let node = (i + j) % 2;
            let pod = cl
                .add_pod(node, ns, name, &[Port::sctp(80), Port::tcp(80)])
                .unwrap();
            let svc = cl
                .add_service(
                    ns,
                    &format!("s-{ns}-{name}"),
                    &[(80, Proto::Sctp, 80)],
                    &[&pod],
                )
                .unwrap();
            let ip = |fam| svc.cluster_ip(fam).unwrap();
            targets.push((
                pod.key(),
                pod.ip(IpFamily::Ipv4).unwrap(),
                ip(IpFamily::Ipv4),
            ));
            pods.push(pod);
        }
    }
    // As the conformance runner: the VM tier allows more under software emulation.
    let timeout = std::env::var("PALISADE_PROBE_TIMEOUT_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(TIMEOUT, std::time::Duration::from_millis);
    let mut failures = Vec::new();
    let mut retried = 0;
    let mut elapsed = Vec::new();
    for round in 0..ROUNDS {
        let mut specs = Vec::new();
        let mut labels = Vec::new();
        for from in &pods {
            for (key, pod_ip, cluster_ip) in &targets {
                for (via, ip) in [("pod", pod_ip), ("service", cluster_ip)] {
                    specs.push(ProbeSpec {
                        from,
                        to: SocketAddr::new(*ip, 80),
                        proto: Proto::Sctp,
                        timeout,
                    });
                    labels.push(format!("round {round}: {} -> {key} via {via}", from.key()));
                }
            }
        }
        let out = cl.probe_many(&specs).unwrap();
        elapsed.extend(out.iter().filter(|o| o.allowed).map(|o| o.elapsed_ms));
        // A probe that did not get its answer is tried once more on its own: under software
        // emulation on a busy host a vCPU can stall for seconds (vm-tier.md). A broken path
        // fails both times; the retries are printed.
        for (i, label) in labels.iter().enumerate() {
            if answered_by(&out[i], label) {
                continue;
            }
            retried += 1;
            let again = cl.probe_many(&specs[i..=i]).unwrap();
            if !answered_by(&again[0], label) {
                failures.push(format!(
                    "{label}: {:?} ({:.0} ms), again: {:?} ({:.0} ms)",
                    out[i].error, out[i].elapsed_ms, again[0].error, again[0].elapsed_ms
                ));
            }
        }
    }
    eprintln!("probes without an answer at the first attempt, tried again: {retried}");
    elapsed.sort_by(f64::total_cmp);
    let at = |q: f64| elapsed.get(((elapsed.len() as f64 - 1.0) * q) as usize);
    eprintln!(
        "answered in ms: median {:?}, p99 {:?}, max {:?}",
        at(0.5),
        at(0.99),
        elapsed.last()
    );
    assert!(
        failures.is_empty(),
        "{} of {} SCTP probes failed:\n{}",
        failures.len(),
        ROUNDS * pods.len() * targets.len() * 2,
        failures.join("\n")
    );
}

/// Whether the probe labelled `… -> ns/pod via …` got its answer from that pod.
fn answered_by(o: &palisade_tests::Outcome, label: &str) -> bool {
    let expected = label
        .rsplit(" -> ")
        .next()
        .and_then(|rest| rest.split(' ').next());
    let answered = o.reply.as_deref().and_then(|r| r.split(' ').next());
    o.allowed && answered.is_some() && answered == expected
}
