//! The conformance runner end to end (root; `#[ignore]`d, `cargo xtask test` runs it): a
//! synthetic case file that uses every action, templates, IP classes, named ports, UDP and
//! SCTP, through test nodes, the real agent (`target/<profile>/palisade`, or
//! `$PALISADE_AGENT_BIN`) and real probes, for IPv4 and IPv6, to ClusterIPs and pod IPs.

use std::path::Path;
use std::sync::atomic::AtomicBool;

use palisade_tests::conformance::report::{Status, Target};
use palisade_tests::conformance::runner::{Options, Runner};
use palisade_tests::conformance::{agent, case};
use palisade_tests::{require_root, Family};

/// Runs the synthetic cases for `family`, both targets, and checks what every run must show.
fn run_synthetic(family: Family) {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/synthetic.json");
    let cases = case::load_all(&[file], &[]).unwrap();
    let agent_bin = agent::find_agent_bin().expect(
        "the agent binary is built by `cargo test --workspace` (or set PALISADE_AGENT_BIN)",
    );
    let opts = Options {
        family,
        targets: vec![Target::Service, Target::Pod],
        agent_bin,
    };
    let stop = AtomicBool::new(false);
    let reports = Runner::new(opts, &stop).run_all(&cases);
    let failed: Vec<String> = reports
        .iter()
        .filter(|r| r.status != Status::Passed)
        .map(|r| format!("{}: {:?}: {}", r.id, r.status, r.reason))
        .collect();
    assert!(failed.is_empty(), "{failed:#?}");
    let probes: Vec<_> = reports.iter().flat_map(|r| &r.probes).collect();
    // Case 1 has 7 probe steps, case 2 has 4; each for every family and both targets.
    let tables = family.ip_families().len() * 2;
    assert_eq!(probes.len(), (7 + 4) * tables);
    let sctp: Vec<_> = probes.iter().filter(|p| p.protocol == "SCTP").collect();
    assert_eq!(sctp.len(), tables);
    // Real SCTP probes where the kernel has SCTP (the VM tier), skipped with the reason where
    // it has not.
    if palisade_tests::probe::sctp_supported().is_ok() {
        assert!(sctp.iter().all(|p| p.status == Status::Passed), "{sctp:#?}");
    } else {
        assert!(sctp
            .iter()
            .all(|p| p.status == Status::Skipped && p.reason.contains("SCTP")));
    }
    // The named-port probe resolved to the containerPort.
    assert!(probes
        .iter()
        .filter(|p| p.step == 2)
        .all(|p| p.port == Some(8080)));
    // A pod reaching its own IP never leaves its namespace: alpha/p -> alpha/p is expected
    // denied, observed allowed, reported and not required.
    let direct = probes
        .iter()
        .find(|p| p.step == 2 && p.target == Target::Pod)
        .unwrap();
    assert!(!direct.loopback.required);
    assert!(direct
        .loopback
        .differing
        .iter()
        .any(|d| d.from == "alpha/p" && d.to == "alpha/p" && d.observed));
    for p in probes.iter().filter(|p| p.status == Status::Passed) {
        assert_eq!(p.observed.len(), p.pod_ips.len().pow(2), "step {}", p.step);
    }
}

/// IPv4 and IPv6 on one dual-stack cluster (the templated case runs once per family).
#[test]
#[ignore = "privileged: needs root (cargo xtask test runs it)"]
fn synthetic_cases_dual_stack() {
    require_root!();
    run_synthetic(Family::Dual);
}

/// A single-stack IPv6 cluster (pods have no IPv4 address at all).
#[test]
#[ignore = "privileged: needs root (cargo xtask test runs it)"]
fn synthetic_cases_ipv6_only() {
    require_root!();
    run_synthetic(Family::Ipv6);
}
