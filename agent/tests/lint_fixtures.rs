//! `palisade lint` on fixtures: a fully locked-down cluster with DNS allowed yields only info, and
//! each fixture case (the clean cluster plus one mistake) yields exactly its finding. No root.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
};

use palisade::cli::lint::{lint_dir, render_text, Severity, CODES};
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lint")
}

/// A temporary manifest directory: the clean cluster plus `case`'s files.
struct Dir(PathBuf);

impl Dir {
    /// A fresh directory per call: tests run in parallel and may use the same case.
    fn with_case(case: Option<&str>) -> Self {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = case.unwrap_or("clean");
        let dir =
            std::env::temp_dir().join(format!("palisade-lint-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut sources = vec![fixtures().join("clean")];
        sources.extend(case.map(|c| fixtures().join(c)));
        for src in sources {
            for entry in std::fs::read_dir(&src).unwrap().flatten() {
                let path = entry.path();
                if path.extension().is_some_and(|e| e == "yaml") {
                    let prefix = src.file_name().unwrap().to_string_lossy();
                    let to = dir.join(format!("{prefix}-{}", entry.file_name().to_string_lossy()));
                    std::fs::copy(&path, to).unwrap();
                }
            }
        }
        Self(dir)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn problems(dir: &Path) -> BTreeSet<(String, String)> {
    let findings = lint_dir(dir, &mut std::io::sink()).unwrap();
    findings
        .iter()
        .filter(|f| f.severity != Severity::Info)
        .map(|f| (f.code.clone(), f.object.clone()))
        .collect()
}

#[test]
fn locked_down_cluster_with_dns_has_no_warning_or_error() {
    let dir = Dir::with_case(None);
    let findings = lint_dir(&dir.0, &mut std::io::sink()).unwrap();
    let bad: Vec<_> = findings
        .iter()
        .filter(|f| f.severity != Severity::Info)
        .collect();
    assert!(bad.is_empty(), "{}", render_text(&findings));
    let coverage: BTreeSet<&str> = findings
        .iter()
        .filter(|f| f.code == "isolation-coverage")
        .map(|f| f.namespace.as_str())
        .collect();
    assert_eq!(coverage, BTreeSet::from(["kube-system", "shop"]));
}

#[test]
fn each_case_yields_exactly_its_finding() {
    let mut covered = BTreeSet::new();
    let mut cases: Vec<PathBuf> = std::fs::read_dir(fixtures())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("expect.json").is_file())
        .collect();
    cases.sort();
    assert!(cases.len() >= 9, "fixture cases: {cases:?}");
    for case in cases {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let want: Vec<(String, String)> =
            serde_json::from_str(&std::fs::read_to_string(case.join("expect.json")).unwrap())
                .unwrap();
        let dir = Dir::with_case(Some(&name));
        let got = problems(&dir.0);
        let want: BTreeSet<(String, String)> = want.into_iter().collect();
        assert_eq!(got, want, "case {name}");
        covered.extend(want.into_iter().map(|(code, _)| code));
    }
    for code in CODES.iter().filter(|c| **c != "isolation-coverage") {
        assert!(covered.contains(*code), "no fixture case for {code}");
    }
}

#[test]
fn json_output_has_exactly_the_documented_fields() {
    let dir = Dir::with_case(Some("selector-or-confusion"));
    let out = Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(["lint", "--json", "--manifests"])
        .arg(&dir.0)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "a warning makes the exit status 1"
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let findings = v["findings"].as_array().unwrap();
    assert_eq!(v.as_object().unwrap().len(), 1);
    let keys: BTreeSet<&str> = ["code", "severity", "namespace", "object", "message", "fix"].into();
    for f in findings {
        let have: BTreeSet<&str> = f.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(have, keys);
        assert!(["error", "warning", "info"].contains(&f["severity"].as_str().unwrap()));
    }
    let or = findings
        .iter()
        .find(|f| f["code"] == "selector-or-confusion")
        .unwrap();
    assert_eq!(or["namespace"], "shop");
    assert!(or["fix"].as_str().unwrap().contains("ONE peer"));
}

#[test]
fn text_output_locates_each_finding() {
    let dir = Dir::with_case(Some("selector-or-confusion"));
    let out = Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(["lint", "--manifests"])
        .arg(&dir.0)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("warning[selector-or-confusion] NetworkPolicy/backend-from-dns in namespace shop spec.ingress[0].from[0..1]"),
        "{text}"
    );
    assert!(
        text.contains("selector-or-confusion-case.yaml"),
        "file named: {text}"
    );
    assert!(text.contains("    fix: "), "{text}");
    let clean = Dir::with_case(None);
    let ok = Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(["lint", "--manifests"])
        .arg(&clean.0)
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
}
