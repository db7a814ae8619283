//! The hand-written example of docs/policy.md (`docs/examples/three-tier/`): `explain` and
//! `matrix` must print exactly what the docs show in `expected/`.
use std::fs;
use std::path::{Path, PathBuf};

use palisade::cli::{explain, matrix, ExplainArgs, MatrixArgs};
use palisade::model::Protocol;

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/examples/three-tier")
}

fn expected(name: &str) -> String {
    fs::read_to_string(example().join("expected").join(name)).expect("expected output file")
}

fn run_matrix(port: u16, json: bool) -> String {
    let args = MatrixArgs {
        manifests: example(),
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
    let args = ExplainArgs {
        manifests: example(),
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
