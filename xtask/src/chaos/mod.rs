//! `cargo xtask chaos`: builds the agent and the harness (release), then runs
//! `target/release/chaos`: the agent under faults (SIGKILL, graceful restart, policy source
//! unavailable, policies changed while down) on test nodes with traffic flowing. Prints a
//! summary, writes a JSON report, fails unless every scenario is 0/0/0. Root only.
//! See docs/reliability.md.

use std::path::PathBuf;
use std::process::Command;

use anyhow::bail;

use crate::cmd;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Scenarios to run, comma-separated: a (SIGKILL), b (graceful), c (source outage),
    /// d (changes while down).
    #[arg(long, default_value = "a,b,c,d")]
    scenarios: String,
    /// Short phases (CI smoke run); the source outage becomes 4 s unless given.
    #[arg(long)]
    quick: bool,
    /// How long the policy source stays unavailable in (c).
    #[arg(long, value_name = "SECS")]
    source_outage_secs: Option<f64>,
    /// Where the agents read the cluster: `manifests` (a directory; (c) moves it away) or
    /// `kube` (a loopback kube-apiserver from `cargo xtask k8s up`'s binaries; every object is
    /// written through it and (c) stops it).
    #[arg(long, default_value = "manifests", value_parser = ["manifests", "kube"])]
    source: String,
    /// Write the JSON report here (default target/chaos-report.json).
    #[arg(long, value_name = "OUT.json")]
    report: Option<PathBuf>,
}

impl Args {
    fn argv(&self, default_report: PathBuf) -> Vec<String> {
        let mut out = vec!["--scenarios".to_owned(), self.scenarios.clone()];
        if self.quick {
            out.push("--quick".to_owned());
        }
        if let Some(s) = self.source_outage_secs {
            out.extend(["--source-outage-secs".to_owned(), s.to_string()]);
        }
        if self.source != "manifests" {
            out.extend(["--source".to_owned(), self.source.clone()]);
        }
        let report = self.report.clone().unwrap_or(default_report);
        out.extend(["--report".to_owned(), report.display().to_string()]);
        out
    }
}

/// Builds the agent, the probe and the chaos binary with `profile` (`release` or `dev`).
pub fn build(root: &std::path::Path, release: bool) -> anyhow::Result<()> {
    build_with(root, release, false)
}

/// [`build`]; with `kube`, the harness with its API client (feature `palisade-tests/kube`).
pub fn build_with(root: &std::path::Path, release: bool, kube: bool) -> anyhow::Result<()> {
    let mut c = Command::new("cargo");
    c.current_dir(root).arg("build");
    if release {
        c.arg("--release");
    }
    c.args([
        "-p",
        "palisade",
        "--bin",
        "palisade",
        "-p",
        "palisade-tests",
        "--bin",
        "chaos",
        "--bin",
        "probe",
    ]);
    if kube {
        c.args(["--features", "palisade-tests/kube"]);
    }
    cmd::run(&mut c)
}

/// Where cargo puts the binaries of `profile` (`release`, `debug`).
pub fn profile_dir(root: &std::path::Path, profile: &str) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|d| if d.is_absolute() { d } else { root.join(d) })
        .unwrap_or_else(|| root.join("target"))
        .join(profile)
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    if !cmd::is_root() {
        bail!(
            "cargo xtask chaos needs root: it creates network namespaces and loads eBPF programs"
        );
    }
    let root = cmd::workspace_root();
    build_with(&root, true, args.source == "kube")?;
    let bin = profile_dir(&root, "release").join("chaos");
    let default_report = root.join("target/chaos-report.json");
    cmd::run(Command::new(bin).args(args.argv(default_report)))
}

/// The `cargo xtask test` step (root): the short chaos run, scenarios a, b and d, with debug
/// binaries (about 30 s); whether it reported 0/0/0 everywhere.
pub fn ci_run() -> anyhow::Result<bool> {
    let root = cmd::workspace_root();
    println!("xtask test: chaos, short (SIGKILL, graceful restart, changes while down)");
    build(&root, false)?;
    let report = root.join("target/chaos-report-ci.json");
    let status = Command::new(profile_dir(&root, "debug").join("chaos"))
        .args(["--quick", "--scenarios", "a,b,d", "--report"])
        .arg(&report)
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
    fn source_passes_through() {
        let cli = Cli::parse_from(["x", "--source", "kube", "--scenarios", "c"]);
        assert_eq!(
            cli.args.argv(PathBuf::from("r.json")).join(" "),
            "--scenarios c --source kube --report r.json"
        );
    }

    #[test]
    fn flags_pass_through() {
        let cli = Cli::parse_from(["x", "--scenarios", "a,b,d", "--quick"]);
        assert_eq!(
            cli.args.argv(PathBuf::from("r.json")).join(" "),
            "--scenarios a,b,d --quick --report r.json"
        );
    }
}
