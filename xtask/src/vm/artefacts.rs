//! The host-built artefacts the guest runs: the test executables that hold privileged
//! (`#[ignore]`d) tests, and the debug binaries those tests and the conformance runner use
//! (`palisade`, `probe`, `conformance`). Built with the host's toolchain, exactly as
//! `cargo xtask test` builds them; the guest runs them from the same paths.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context as _};

use crate::cmd;

/// A test executable and the privileged tests it holds.
#[derive(Clone, Debug)]
pub struct TestBinary {
    /// The test target's name (`dataplane_packets`).
    pub name: String,
    pub path: PathBuf,
    pub privileged: Vec<String>,
}

#[derive(Debug)]
pub struct Artefacts {
    pub tests: Vec<TestBinary>,
    /// `target/debug/conformance`.
    pub conformance: PathBuf,
    /// `target/debug/{palisade,probe}`: the tests find them at these paths.
    pub binaries: Vec<PathBuf>,
}

impl Artefacts {
    /// Hard-links every executable the guest runs into `dir` (a copy where linking fails) and
    /// returns (snapshot, original) pairs. The guest bind-mounts each snapshot over its
    /// original, so a rebuild on the host during a long run (cargo and the linker replace
    /// files, never rewrite them) cannot change a binary under the guest's feet.
    pub fn snapshot(&self, dir: &Path) -> anyhow::Result<Vec<(PathBuf, PathBuf)>> {
        std::fs::create_dir_all(dir)?;
        let originals = self
            .tests
            .iter()
            .map(|t| &t.path)
            .chain(&self.binaries)
            .chain(std::iter::once(&self.conformance));
        let mut pairs = Vec::new();
        for original in originals {
            let name = original
                .file_name()
                .context("an executable without a name")?;
            let snap = dir.join(name);
            if std::fs::hard_link(original, &snap).is_err() {
                std::fs::copy(original, &snap)
                    .with_context(|| format!("copying {}", original.display()))?;
            }
            pairs.push((snap, original.clone()));
        }
        Ok(pairs)
    }
}

/// Builds everything (debug profile) and lists the privileged tests.
pub fn build(root: &Path) -> anyhow::Result<Artefacts> {
    // `cargo test` builds the binaries the integration tests use (`palisade`, `probe`,
    // `conformance`) with the same features as `cargo xtask test`, so nothing is built twice.
    println!("vm-test: cargo test --no-run (host): the test executables and the binaries they run");
    let out = Command::new("cargo")
        .current_dir(root)
        .args([
            "test",
            "--workspace",
            "--exclude",
            "palisade-ebpf",
            "--no-run",
            "--message-format=json-render-diagnostics",
        ])
        .stderr(Stdio::inherit())
        .output()
        .context("starting cargo test --no-run")?;
    if !out.status.success() {
        bail!("cargo test --no-run failed: {}", out.status);
    }
    let mut tests = Vec::new();
    for (name, path) in test_executables(&String::from_utf8_lossy(&out.stdout)) {
        let privileged = list_ignored(&path)?;
        if !privileged.is_empty() {
            tests.push(TestBinary {
                name,
                path,
                privileged,
            });
        }
    }
    tests.sort_by(|a, b| a.name.cmp(&b.name));
    let debug = debug_dir(root);
    let conformance = debug.join("conformance");
    let binaries = vec![debug.join("palisade"), debug.join("probe")];
    for bin in binaries.iter().chain(std::iter::once(&conformance)) {
        if !bin.is_file() {
            bail!("{} was not built", bin.display());
        }
    }
    Ok(Artefacts {
        tests,
        conformance,
        binaries,
    })
}

fn debug_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|d| if d.is_absolute() { d } else { root.join(d) })
        .unwrap_or_else(|| root.join("target"))
        .join("debug")
}

/// (target name, executable) of every test artefact in cargo's JSON messages.
fn test_executables(json_lines: &str) -> Vec<(String, PathBuf)> {
    json_lines
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["profile"]["test"] == true)
        .filter_map(|m| {
            let exe = m["executable"].as_str()?;
            let name = m["target"]["name"].as_str()?;
            Some((name.to_owned(), PathBuf::from(exe)))
        })
        .collect()
}

/// The `#[ignore]`d tests of one executable (`--list --ignored`).
fn list_ignored(exe: &Path) -> anyhow::Result<Vec<String>> {
    let out = cmd::output(Command::new(exe).args(["--list", "--ignored"]))?;
    Ok(out
        .lines()
        .filter_map(|l| l.strip_suffix(": test"))
        .map(str::to_owned)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_test_artifacts_only() {
        let lines = concat!(
            r#"{"reason":"compiler-artifact","target":{"name":"dataplane_packets"},"profile":{"test":true},"executable":"/t/debug/deps/dataplane_packets-1"}"#,
            "\n",
            r#"{"reason":"compiler-artifact","target":{"name":"probe"},"profile":{"test":false},"executable":"/t/debug/probe"}"#,
            "\n",
            r#"{"reason":"build-finished","success":true}"#,
            "\n"
        );
        assert_eq!(
            test_executables(lines),
            vec![(
                "dataplane_packets".to_owned(),
                PathBuf::from("/t/debug/deps/dataplane_packets-1")
            )]
        );
    }
}
