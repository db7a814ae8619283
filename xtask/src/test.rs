//! `cargo xtask test`: every test the project has, after `setup`.
//!
//! 1. `cargo fmt --check`, `cargo clippy --all-targets -D warnings` (host crates, and the eBPF
//!    crate for its own target);
//! 2. `cargo test --workspace` (unit and host tests; privileged tests are `#[ignore]`d there);
//! 3. as root, `cargo test --workspace --exclude palisade-ebpf -- --ignored`: the privileged tests (BPF_PROG_TEST_RUN,
//!    network namespaces, real traffic; the kube_* tests against real API servers, built once
//!    by `cargo xtask k8s build` and cached), then the upstream conformance corpus, IPv4, through
//!    ClusterIPs, once through manifests and once through the API server (one test each), the
//!    transcribed ClusterNetworkPolicy corpus through manifests (one test), then the short chaos run (a, b, d) and a one-minute soak (one test each). Not root: they are
//!    listed as not run.
//!
//! Ends with one line `xtask test: N passed, N failed, N skipped`.

use std::{
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
};

use anyhow::{bail, Context as _};

use crate::{cmd, setup};

#[derive(Debug, Default)]
struct Tally {
    passed: u64,
    failed: u64,
    ignored: u64,
    /// Names of the ignored tests (for the "could not run" list).
    ignored_names: Vec<String>,
}

pub fn run() -> anyhow::Result<()> {
    setup::run()?;
    let root = cmd::workspace_root();
    std::env::set_current_dir(&root)?;
    println!("xtask test: cargo fmt --check");
    cmd::run(Command::new("cargo").args(["fmt", "--all", "--check"]))?;
    println!("xtask test: cargo clippy --all-targets");
    cmd::run(Command::new("cargo").args([
        "clippy",
        "--workspace",
        "--exclude",
        "palisade-ebpf",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    println!("xtask test: cargo clippy on the eBPF crate (bpfel-unknown-none)");
    cmd::run(Command::new("cargo").current_dir(root.join("ebpf")).args([
        "+nightly",
        "clippy",
        "--release",
        "--target",
        "bpfel-unknown-none",
        "-Z",
        "build-std=core",
        "--",
        "-D",
        "warnings",
    ]))?;
    println!("xtask test: cargo test --workspace");
    let host = cargo_test(&[])?;
    let privileged = if cmd::is_root() {
        // The kube_* tests start their own API servers from these (built once, cached).
        crate::k8s::prepare_tests();
        println!("xtask test: privileged tests (root): cargo test --workspace --exclude palisade-ebpf -- --ignored");
        let mut tally = cargo_test(&["--ignored"])?;
        // One test per source (manifests, then the API server).
        for passed in crate::conformance::upstream_corpus()?.into_iter().flatten() {
            if passed {
                tally.passed += 1;
            } else {
                tally.failed += 1;
            }
        }
        // The transcribed ClusterNetworkPolicy corpus, one test (about 1.5 min).
        if crate::conformance::cluster_policy_corpus()? {
            tally.passed += 1;
        } else {
            tally.failed += 1;
        }
        // Reliability smoke runs (about 1.5 min together; docs/reliability.md), one test each.
        // The VM tier's quick suite: Debian's 6.1 kernel (clsact, SCTP) under qemu, about
        // 6.5 min under TCG (docs/vm-tier.md), one test.
        for passed in [
            crate::chaos::ci_run()?,
            crate::soak::ci_run()?,
            crate::vm::quick()?,
        ] {
            if passed {
                tally.passed += 1;
            } else {
                tally.failed += 1;
            }
        }
        Some(tally)
    } else {
        None
    };
    summarize(&host, privileged.as_ref())
}

fn summarize(host: &Tally, privileged: Option<&Tally>) -> anyhow::Result<()> {
    let (passed, failed, skipped) = match privileged {
        Some(p) => (host.passed + p.passed, host.failed + p.failed, 0),
        None => {
            println!("xtask test: not root: these privileged tests did NOT run:");
            for name in &host.ignored_names {
                println!("  - {name}");
            }
            println!("  - the upstream conformance corpus, manifests and kube sources (cargo xtask conformance [--source kube])");
            println!("  - the ClusterNetworkPolicy conformance corpus (cargo xtask conformance --cases tests/cases/cluster-network-policy.json)");
            println!("  - chaos, short (cargo xtask chaos --quick --scenarios a,b,d)");
            println!("  - soak, 1 minute (cargo xtask soak --minutes 1)");
            println!("  - the VM tier, quick suite (cargo xtask vm-test --suite quick)");
            (host.passed, host.failed, host.ignored)
        }
    };
    println!("xtask test: {passed} passed, {failed} failed, {skipped} skipped");
    if failed > 0 {
        bail!("{failed} test(s) failed");
    }
    Ok(())
}

/// Runs `cargo test --workspace -- <args>`, echoing its output and tallying the results.
fn cargo_test(args: &[&str]) -> anyhow::Result<Tally> {
    let mut child = Command::new("cargo")
        .args([
            "test",
            "--workspace",
            "--exclude",
            "palisade-ebpf",
            "--no-fail-fast",
            "--",
        ])
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .context("starting cargo test")?;
    let stdout = child.stdout.take().context("cargo test stdout")?;
    let mut tally = Tally::default();
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        tally_line(&line, &mut tally);
    }
    let status = child.wait()?;
    if !status.success() && tally.failed == 0 {
        bail!("cargo test failed without a failing test ({status}): a build error?");
    }
    Ok(tally)
}

fn tally_line(line: &str, tally: &mut Tally) {
    if let Some(rest) = line.strip_prefix("test result: ") {
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(kind), Some(n)) = (words.next(), words.next()) else {
                continue;
            };
            let n: u64 = n
                .trim_start_matches("ok.")
                .trim_start_matches("FAILED.")
                .parse()
                .unwrap_or(0);
            match kind {
                "passed" => tally.passed += n,
                "failed" => tally.failed += n,
                "ignored" => tally.ignored += n,
                _ => {}
            }
        }
    } else if let Some(name) = line
        .strip_prefix("test ")
        .and_then(|l| l.strip_suffix(" ... ignored"))
    {
        tally.ignored_names.push(name.to_owned());
    } else if line.starts_with("test ") && line.contains(" ... ignored, ") {
        tally
            .ignored_names
            .push(line.trim_start_matches("test ").to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tallies_cargo_result_lines() {
        let mut t = Tally::default();
        tally_line("test result: ok. 18 passed; 0 failed; 2 ignored; 0 measured; 0 filtered out; finished in 1.27s", &mut t);
        tally_line(
            "test result: FAILED. 3 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out",
            &mut t,
        );
        tally_line("test foo::bar ... ignored, privileged: needs root", &mut t);
        assert_eq!((t.passed, t.failed, t.ignored), (21, 1, 2));
        assert_eq!(
            t.ignored_names,
            vec!["foo::bar ... ignored, privileged: needs root".to_owned()]
        );
    }
}
