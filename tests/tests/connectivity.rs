//! Pod-to-pod and pod-to-Service traffic through real CNI-wired pods and kube-proxy-style
//! rules, for each CNI mode and IP family. Needs root: `#[ignore]`d; `cargo xtask test` runs them as root.

mod common;

use std::net::SocketAddr;
use std::time::Instant;

use palisade_tests::probe::Target;
use palisade_tests::{require_root, CniMode, Family, IpFamily, Pod, Proto, TestCluster};

#[test]
#[ignore = "privileged: needs root (cargo xtask test runs it)"]
fn bridge_ipv4() {
    require_root!();
    common::connectivity(Family::Ipv4, CniMode::Bridge);
}

#[test]
#[ignore = "privileged: needs root (cargo xtask test runs it)"]
fn bridge_ipv6() {
    require_root!();
    common::connectivity(Family::Ipv6, CniMode::Bridge);
}

#[test]
#[ignore = "privileged: needs root (cargo xtask test runs it)"]
fn bridge_dual() {
    require_root!();
    common::connectivity(Family::Dual, CniMode::Bridge);
}

#[test]
#[ignore = "privileged: needs root (cargo xtask test runs it)"]
fn ptp_ipv4() {
    require_root!();
    common::connectivity(Family::Ipv4, CniMode::Ptp);
}

#[test]
#[ignore = "privileged: needs root (cargo xtask test runs it)"]
fn ptp_ipv6() {
    require_root!();
    common::connectivity(Family::Ipv6, CniMode::Ptp);
}

#[test]
#[ignore = "privileged: needs root (cargo xtask test runs it)"]
fn ptp_dual() {
    require_root!();
    common::connectivity(Family::Dual, CniMode::Ptp);
}

/// Three nodes share an underlay switch namespace; every pod reaches every other pod and
/// Service, and the nodes reach pods (kubelet-style traffic).
#[test]
#[ignore = "privileged: needs root (cargo xtask test runs it)"]
fn three_nodes_through_underlay_switch() {
    require_root!();
    let cl = TestCluster::builder()
        .nodes(3)
        .cni(CniMode::Ptp)
        .probe_bin(env!("CARGO_BIN_EXE_probe"))
        .build()
        .unwrap();
    let pods: Vec<Pod> = (0..3)
        .map(|i| {
            cl.add_pod(i, "x", &format!("p{i}"), &common::ports())
                .unwrap()
        })
        .collect();
    let mut cases = Vec::new();
    for p in &pods {
        let svc = cl
            .add_service(
                "x",
                &format!("s-{}", p.name()),
                &[(80, Proto::Tcp, 80)],
                &[p],
            )
            .unwrap();
        for from in &pods {
            for ip in [p.ips()[0], svc.cluster_ips[0]] {
                cases.push(common::Case {
                    label: format!("{} -> {ip}", from.key()),
                    from,
                    to: SocketAddr::new(ip, 80),
                    proto: Proto::Tcp,
                    answered_by: Some(p.key()),
                });
            }
        }
    }
    common::check(&cl, &cases);
    let target = Target {
        proto: Proto::Udp,
        addr: SocketAddr::new(pods[2].ips()[0], 81),
        timeout_ms: 1500,
    };
    assert!(cl.probe_from_node(0, &[target]).unwrap()[0].allowed);
}

/// The conformance runner's shape: 9 pods in 3 namespaces over 2 nodes, a Service each, all
/// 81 ordered pairs probed through ClusterIPs at once.
#[test]
#[ignore = "privileged: needs root (cargo xtask test runs it)"]
fn eighty_one_pairs_at_once() {
    require_root!();
    let start = Instant::now();
    let cl = common::cluster(Family::Dual, CniMode::Bridge);
    let mut pods = Vec::new();
    let mut svcs = Vec::new();
    for (i, ns) in ["x", "y", "z"].iter().enumerate() {
        for (j, name) in ["a", "b", "c"].iter().enumerate() {
            let p = cl.add_pod((i + j) % 2, ns, name, &common::ports()).unwrap();
            let svc_name = format!("s-{ns}-{name}");
            svcs.push(
                cl.add_service(ns, &svc_name, &[(80, Proto::Tcp, 80)], &[&p])
                    .unwrap(),
            );
            pods.push(p);
        }
    }
    let setup = start.elapsed();
    let mut cases = Vec::new();
    for from in &pods {
        for (to, svc) in pods.iter().zip(&svcs) {
            let ip = svc.cluster_ip(IpFamily::Ipv6).unwrap();
            cases.push(common::Case {
                label: format!("{} -> {}", from.key(), to.key()),
                from,
                to: SocketAddr::new(ip, 80),
                proto: Proto::Tcp,
                answered_by: Some(to.key()),
            });
        }
    }
    let t = Instant::now();
    common::check(&cl, &cases);
    eprintln!("81 pairs: setup {setup:?}, probes {:?}", t.elapsed());
}
