//! `cargo xtask conformance`: builds the agent and the runner (release), then runs
//! `target/release/conformance` with the same flags. See docs/conformance.md.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::bail;

use crate::cmd;

/// The runner's flags, passed through unchanged.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A case file in the format of shared/conformance/README.md (repeatable).
    #[arg(long = "cases", value_name = "FILE", required = true)]
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
    /// Where the agents get the cluster state: manifests (kube comes with issue 6).
    #[arg(long, default_value = "manifests", value_parser = ["manifests", "kube"])]
    source: String,
    /// Write the JSON report here.
    #[arg(long, value_name = "OUT.json")]
    report: Option<PathBuf>,
}

impl Args {
    /// The runner's command line.
    fn argv(&self) -> Vec<String> {
        let mut out = Vec::new();
        for f in &self.cases {
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

pub fn run(args: &Args) -> anyhow::Result<()> {
    if args.source == "kube" {
        bail!("--source kube: not implemented yet: the Kubernetes source comes with issue 6");
    }
    if !cmd::is_root() {
        bail!("cargo xtask conformance needs root: it creates network namespaces and loads eBPF programs");
    }
    let root = cmd::workspace_root();
    cmd::run(Command::new("cargo").current_dir(&root).args([
        "build",
        "--release",
        "-p",
        "palisade",
        "-p",
        "palisade-tests",
    ]))?;
    // The case and report paths stay relative to the directory the user ran xtask in.
    cmd::run(Command::new(profile_dir(&root, "release").join("conformance")).args(args.argv()))
}

/// The `cargo xtask test` step (root): the upstream corpus, IPv4, through ClusterIPs, with the
/// debug binaries `cargo test` has built. `None` when the corpus is not there (an error when
/// `CI=true`); otherwise whether every case passed or was skipped.
pub fn upstream_corpus() -> anyhow::Result<Option<bool>> {
    let root = cmd::workspace_root();
    let corpus = root.join("../shared/conformance/upstream-e2e.json");
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
    println!("xtask test: upstream conformance corpus (IPv4, through ClusterIPs)");
    cmd::run(Command::new("cargo").current_dir(&root).args([
        "build",
        "-p",
        "palisade",
        "-p",
        "palisade-tests",
    ]))?;
    let status = Command::new(profile_dir(&root, "debug").join("conformance"))
        .arg("--cases")
        .arg(&corpus)
        .args(["--ip-family", "ipv4", "--target", "service"])
        .status()?;
    Ok(Some(status.success()))
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
            cli.args.argv().join(" "),
            "--cases a.json --cases b.json --case t1 --ip-family dual --target both \
             --source manifests --report r.json"
        );
        assert!(
            Cli::try_parse_from(["x", "--target", "both"]).is_err(),
            "--cases is required"
        );
        assert!(Cli::try_parse_from(["x", "--cases", "a", "--ip-family", "v4"]).is_err());
    }
}
