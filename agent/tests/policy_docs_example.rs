//! The hand-written examples of docs/policy.md (`docs/examples/three-tier/`, NetworkPolicy only,
//! and `docs/examples/tiered-shop/`, with ClusterNetworkPolicy Admin and Baseline tiers):
//! `explain` and `matrix` must print exactly what the docs show in `expected/`.
use std::fs;
use std::path::{Path, PathBuf};

use palisade::cli::{explain, matrix, ExplainArgs, MatrixArgs};
use palisade::model::Protocol;

const THREE_TIER: &str = "three-tier";
const TIERED: &str = "tiered-shop";

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../docs/examples")
        .join(name)
}

fn expected_in(example_name: &str, name: &str) -> String {
    fs::read_to_string(example(example_name).join("expected").join(name))
        .expect("expected output file")
}

fn expected(name: &str) -> String {
    expected_in(THREE_TIER, name)
}

fn run_matrix(port: u16, json: bool) -> String {
    matrix_of(THREE_TIER, port, json)
}

fn matrix_of(name: &str, port: u16, json: bool) -> String {
    let args = MatrixArgs {
        manifests: example(name),
        port,
        protocol: Protocol::Tcp,
        json,
    };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    matrix(&args, &mut out, &mut err).expect("matrix runs");
    assert!(
        err.is_empty(),
        "unexpected notes: {}",
        String::from_utf8_lossy(&err)
    );
    String::from_utf8(out).expect("utf-8")
}

fn run_explain(from: &str, to: &str, port: u16, json: bool) -> String {
    explain_of(THREE_TIER, from, to, port, json)
}

fn explain_of(name: &str, from: &str, to: &str, port: u16, json: bool) -> String {
    let args = ExplainArgs {
        manifests: example(name),
        from: from.to_owned(),
        to: to.to_owned(),
        port,
        protocol: Protocol::Tcp,
        json,
    };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    explain(&args, &mut out, &mut err).expect("explain runs");
    String::from_utf8(out).expect("utf-8")
}

#[test]
fn matrix_matches_docs() {
    for port in [80, 8080, 5432, 9090] {
        assert_eq!(
            run_matrix(port, false),
            expected(&format!("matrix-tcp-{port}.txt")),
            "port {port}"
        );
    }
    assert_eq!(run_matrix(9090, true), expected("matrix-tcp-9090.json"));
}

#[test]
fn explain_matches_docs() {
    assert_eq!(
        run_explain("shop/web", "10.96.0.20", 80, false),
        expected("explain-web-to-api-service.txt")
    );
    assert_eq!(
        run_explain("monitoring/prom", "shop/api", 8080, false),
        expected("explain-prom-to-api-8080.txt")
    );
    assert_eq!(
        run_explain("shop/api", "shop/db", 5432, true),
        expected("explain-api-to-db.json")
    );
}

#[test]
fn tiered_matrix_matches_docs() {
    for port in [80, 5432] {
        assert_eq!(
            matrix_of(TIERED, port, false),
            expected_in(TIERED, &format!("matrix-tcp-{port}.txt")),
            "port {port}"
        );
    }
    assert_eq!(
        matrix_of(TIERED, 5432, true),
        expected_in(TIERED, "matrix-tcp-5432.json")
    );
}

#[test]
fn tiered_explain_matches_docs() {
    let cases = [
        (
            "sandbox/job",
            "shop/db",
            5432,
            false,
            "explain-job-to-db.txt",
        ),
        (
            "monitoring/prom",
            "shop/db",
            5432,
            false,
            "explain-prom-to-db.txt",
        ),
        (
            "monitoring/prom",
            "shop/web",
            80,
            false,
            "explain-prom-to-web.txt",
        ),
        ("shop/web", "shop/db", 5432, false, "explain-web-to-db.txt"),
        ("shop/db", "shop/web", 80, true, "explain-db-to-web.json"),
    ];
    for (from, to, port, json, file) in cases {
        let got = explain_of(TIERED, from, to, port, json);
        assert_eq!(got, expected_in(TIERED, file), "{file}");
        assert!(
            got.contains("agrees with the reference") || got.contains("\"agrees\": true"),
            "{file}: the compiled lookup must agree with the reference evaluator"
        );
    }
}

/// The docs' prose names these verdicts; keep them true.
#[test]
fn tiered_example_shows_every_tier_deciding() {
    let m = matrix_of(TIERED, 5432, false);
    let row = |from: &str| -> Vec<String> {
        let line = m
            .lines()
            .find(|l| l.starts_with(&format!("{from}\t")))
            .expect("row");
        line.split('\t').skip(1).map(str::to_owned).collect()
    };
    // Columns: monitoring/prom, sandbox/job, shop/db, shop/web.
    assert_eq!(
        row("sandbox/job"),
        ["D", "d", "D", "D"],
        "Admin Deny, Baseline on itself"
    );
    assert_eq!(
        row("monitoring/prom"),
        ["a", "a", "X", "a"],
        "Pass, then NP or Baseline"
    );
    assert_eq!(
        row("shop/web"),
        ["d", "d", ".", "d"],
        "NetworkPolicy allows web -> db"
    );
}
