//! The conformance runner with `--source kube` (root and the cached API server binaries;
//! `#[ignore]`d, `cargo xtask test` runs it): the agents watch a real API server and every
//! action is an API call. `tests/conformance/kube.json` has a case that relabels a pod and
//! deletes a policy through the API, and one whose policy uses `endPort`, which the 1.20 server
//! drops: the runner must notice (by reading the object back) and hand it over, not pass it.
//! The synthetic cases (every action; pods and namespaces created and deleted mid-case) run
//! through the API too, and four upstream cases (a default deny, a namespace selector, a policy
//! updated, a namespace relabelled) when the corpus is there.
#![cfg(feature = "kube")]

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use palisade_tests::conformance::cli::Source;
use palisade_tests::conformance::report::{Status, Target};
use palisade_tests::conformance::runner::{Options, Runner};
use palisade_tests::conformance::{agent, case};
use palisade_tests::{require_root, Family};

fn options() -> Options {
    Options {
        family: Family::Ipv4,
        targets: vec![Target::Service, Target::Pod],
        agent_bin: agent::find_agent_bin().expect(
            "the agent binary is built by `cargo test --workspace` (or set PALISADE_AGENT_BIN)",
        ),
    }
}

#[test]
#[ignore = "privileged: needs root and the API server (cargo xtask test runs it)"]
fn kube_source_runs_cases_through_the_api_and_hands_over_endport() {
    require_root!();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance");
    // synthetic.json: every action, pods and namespaces created and deleted mid-case.
    let mut files = vec![dir.join("kube.json"), dir.join("synthetic.json")];
    let mut only = Vec::new();
    let corpus = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/conformance/upstream-e2e.json");
    if corpus.is_file() {
        let ours = case::load_all(&files, &[]).unwrap();
        only = ours.iter().map(|c| c.id.clone()).collect();
        files.push(corpus);
        only.extend(
            [
                "upstream-tcp-01",
                "upstream-tcp-06",
                "upstream-tcp-20",
                "upstream-tcp-21",
            ]
            .map(str::to_owned),
        );
    }
    let cases = case::load_all(&files, &only).unwrap();
    let stop = AtomicBool::new(false);
    let mut runner = Runner::new(options(), &stop).with_source(Source::Kube);
    let reports = runner.run_all(&cases);
    let rerouted = runner.rerouted().to_vec();
    drop(runner);
    for r in &reports {
        if r.id == "endport-range" {
            // Not passed: stopped at the policy, with the field the server dropped.
            assert_eq!(r.status, Status::Skipped, "{r:#?}");
            assert!(r.reason.contains("endPort"), "{}", r.reason);
            assert!(r.probes.iter().all(|p| p.status == Status::Skipped));
        } else {
            assert_eq!(r.status, Status::Passed, "{}: {}", r.id, r.reason);
        }
    }
    assert_eq!(rerouted.len(), 1, "{rerouted:?}");
    assert_eq!(rerouted[0].id, "endport-range");
    assert!(
        rerouted[0]
            .reason
            .contains("spec.ingress[0].ports[0].endPort"),
        "{}",
        rerouted[0].reason
    );
    // The manifest source carries it: ports 80 to 81 open, 82 closed.
    let endport: Vec<_> = cases
        .iter()
        .filter(|c| c.id == "endport-range")
        .cloned()
        .collect();
    let again = Runner::new(options(), &stop).run_all(&endport);
    assert_eq!(again[0].status, Status::Passed, "{}", again[0].reason);
}
