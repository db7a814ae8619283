//! `cargo xtask conformance`: builds the agent and the runner (release), then runs
//! `target/release/conformance` with the same flags. Without `--cases`: the upstream corpus
//! (`../shared/conformance/upstream-e2e.json`). `--source kube` builds the runner with the
//! `kube` feature and the API server binaries (once, cached). See docs/conformance.md.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::bail;

use crate::cmd;

/// The runner's flags, passed through unchanged.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A case file in the format of shared/conformance/README.md (repeatable; default: the
    /// upstream corpus, ../shared/conformance/upstream-e2e.json).
    #[arg(long = "cases", value_name = "FILE")]
    cases: Vec<PathBuf>,
    /// Run only this case (repeatable).
    #[arg(long = "case", value_name = "ID")]
    case: Vec<String>,
    /// ipv4, ipv6, or dual (each case for IPv4 and for IPv6).
    #[arg(long, value_name = "FAMILY", default_value = "ipv4", value_parser = ["ipv4", "ipv6", "dual"])]
    ip_family: String,
    /// Probe through the ClusterIP (service), the pod IP (pod), or both.
    #[arg(long, default_value = "service", value_parser = ["service", "pod", "both"])]
    target: String,
    /// Where the agents get the cluster state: a manifest directory, or a real API server
    /// (kube; cases that need a field the 1.20 server drops run through manifests instead).
    #[arg(long, default_value = "manifests", value_parser = ["manifests", "kube"])]
    source: String,
    /// Write the JSON report here.
    #[arg(long, value_name = "OUT.json")]
    report: Option<PathBuf>,
}

impl Args {
    /// The runner's command line.
    fn argv(&self, default_corpus: &Path) -> Vec<String> {
        let mut out = Vec::new();
        let default = [default_corpus.to_owned()];
        let cases = if self.cases.is_empty() {
            &default[..]
        } else {
            &self.cases[..]
        };
        for f in cases {
            out.extend(["--cases".to_owned(), f.display().to_string()]);
        }
        for id in &self.case {
            out.extend(["--case".to_owned(), id.clone()]);
        }
        out.extend(["--ip-family".to_owned(), self.ip_family.clone()]);
        out.extend(["--target".to_owned(), self.target.clone()]);
        out.extend(["--source".to_owned(), self.source.clone()]);
        if let Some(r) = &self.report {
            out.extend(["--report".to_owned(), r.display().to_string()]);
        }
        out
    }
}

/// Where cargo puts the binaries of `profile` (`release`, `debug`).
fn profile_dir(root: &Path, profile: &str) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|d| if d.is_absolute() { d } else { root.join(d) })
        .unwrap_or_else(|| root.join("target"))
        .join(profile)
}

/// The upstream corpus beside the repository.
fn upstream_path(root: &Path) -> PathBuf {
    root.join("../shared/conformance/upstream-e2e.json")
}

/// `cargo build [--release] -p palisade -p palisade-tests --features palisade-tests/kube`.
/// Always with the `kube` feature: `cargo test --workspace` builds the crate with it (the
/// agent's tests ask for it), so the debug runner is not rebuilt back and forth.
fn build(root: &Path, release: bool) -> anyhow::Result<()> {
    let mut cargo = Command::new("cargo");
    cargo.current_dir(root).args([
        "build",
        "-p",
        "palisade",
        "-p",
        "palisade-tests",
        "--features",
        "palisade-tests/kube",
    ]);
    if release {
        cargo.arg("--release");
    }
    cmd::run(&mut cargo)
}

/// Builds the API server once (cached) and tells the runner where it is.
fn prepare_kube() -> anyhow::Result<()> {
    let bin = crate::k8s::ensure_built()?;
    std::env::set_var(palisade_tests::kube::BIN_ENV, bin);
    Ok(())
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    if !cmd::is_root() {
        bail!("cargo xtask conformance needs root: it creates network namespaces and loads eBPF programs");
    }
    let root = cmd::workspace_root();
    let kube = args.source == "kube";
    if kube {
        prepare_kube()?;
    }
    build(&root, true)?;
    // The case and report paths stay relative to the directory the user ran xtask in.
    cmd::run(
        Command::new(profile_dir(&root, "release").join("conformance"))
            .args(args.argv(&upstream_path(&root))),
    )
}

/// The `cargo xtask test` steps (root): the upstream corpus, IPv4, through ClusterIPs, with the
/// debug binaries `cargo test` has built, through the manifest source and then through the API
/// server (`--source kube`; the API server binaries as `k8s::prepare_tests` left them). `None`
/// when the corpus is not there (an error when `CI=true`); otherwise whether every case passed
/// or was skipped, per source.
pub fn upstream_corpus() -> anyhow::Result<Option<[bool; 2]>> {
    let root = cmd::workspace_root();
    let corpus = upstream_path(&root);
    if !corpus.is_file() {
        if std::env::var("CI").as_deref() == Ok("true") {
            bail!(
                "CI=true and the upstream corpus is missing at {}",
                corpus.display()
            );
        }
        println!(
            "xtask test: upstream conformance corpus SKIPPED: {} not found",
            corpus.display()
        );
        return Ok(None);
    }
    build(&root, false)?;
    let mut passed = [false; 2];
    for (i, source) in ["manifests", "kube"].into_iter().enumerate() {
        println!(
            "xtask test: upstream conformance corpus (IPv4, through ClusterIPs, --source {source})"
        );
        let status = Command::new(profile_dir(&root, "debug").join("conformance"))
            .arg("--cases")
            .arg(&corpus)
            .args([
                "--ip-family",
                "ipv4",
                "--target",
                "service",
                "--source",
                source,
            ])
            .status()?;
        passed[i] = status.success();
    }
    Ok(Some(passed))
}

/// The transcribed upstream ClusterNetworkPolicy corpus (in the repository), the `cargo xtask
/// test` step after the NetworkPolicy corpus: IPv4, through ClusterIPs, manifest source (the
/// 1.20 API server has no ClusterNetworkPolicy kind), debug binaries. Whether every case passed
/// or was skipped (SCTP cases are skipped on kernels without SCTP).
pub fn cluster_policy_corpus() -> anyhow::Result<bool> {
    let root = cmd::workspace_root();
    build(&root, false)?;
    println!("xtask test: ClusterNetworkPolicy conformance corpus (IPv4, through ClusterIPs, --source manifests)");
    let status = Command::new(profile_dir(&root, "debug").join("conformance"))
        .arg("--cases")
        .arg(root.join("tests/cases/cluster-network-policy.json"))
        .args([
            "--ip-family",
            "ipv4",
            "--target",
            "service",
            "--source",
            "manifests",
        ])
        .status()?;
    Ok(status.success())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    #[test]
    fn flags_pass_through() {
        let cli = Cli::parse_from([
            "x",
            "--cases",
            "a.json",
            "--cases",
            "b.json",
            "--case",
            "t1",
            "--ip-family",
            "dual",
            "--target",
            "both",
            "--report",
            "r.json",
        ]);
        assert_eq!(
            cli.args.argv(Path::new("u.json")).join(" "),
            "--cases a.json --cases b.json --case t1 --ip-family dual --target both \
             --source manifests --report r.json"
        );
        let default = Cli::parse_from(["x", "--source", "kube"]);
        assert_eq!(
            default.args.argv(Path::new("u.json")).join(" "),
            "--cases u.json --ip-family ipv4 --target service --source kube",
            "the upstream corpus by default"
        );
        assert!(Cli::try_parse_from(["x", "--cases", "a", "--ip-family", "v4"]).is_err());
    }
}
