//! `cargo xtask soak --minutes N`: builds the agent and the harness (release), then runs
//! `target/release/soak`: pods and policies churn on test nodes while traffic flows; agent
//! memory, map entries, pins and conntrack are sampled and must come back to their baseline.
//! Writes `soak.json` and `soak.svg` (default `target/soak/`). Root only. `--minutes 1` is the
//! CI smoke run. See docs/reliability.md.

use std::path::PathBuf;
use std::process::Command;

use anyhow::bail;

use crate::cmd;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// How long to soak (a tenth warms up, a tenth is measured after everything is deleted).
    #[arg(long, default_value_t = 1.0)]
    minutes: f64,
    /// Where soak.json and soak.svg go (default target/soak).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

/// Runs the soak binary of `profile` (built already) for `minutes`, writing into `out`.
pub fn run_binary(profile: &str, minutes: f64, out: &std::path::Path) -> anyhow::Result<()> {
    let root = cmd::workspace_root();
    let bin = crate::chaos::profile_dir(&root, profile).join("soak");
    cmd::run(
        Command::new(bin)
            .args(["--minutes", &minutes.to_string(), "--out"])
            .arg(out),
    )
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    if !cmd::is_root() {
        bail!("cargo xtask soak needs root: it creates network namespaces and loads eBPF programs");
    }
    let root = cmd::workspace_root();
    cmd::run(Command::new("cargo").current_dir(&root).args([
        "build",
        "--release",
        "-p",
        "palisade",
        "--bin",
        "palisade",
        "-p",
        "palisade-tests",
        "--bin",
        "soak",
        "--bin",
        "probe",
    ]))?;
    let out = args.out.clone().unwrap_or_else(|| root.join("target/soak"));
    run_binary("release", args.minutes, &out)
}

/// The `cargo xtask test` step (root): `soak --minutes 1` with debug binaries; whether it passed.
pub fn ci_run() -> anyhow::Result<bool> {
    let root = cmd::workspace_root();
    println!("xtask test: soak, 1 minute");
    crate::chaos::build(&root, false)?;
    cmd::run(Command::new("cargo").current_dir(&root).args([
        "build",
        "-p",
        "palisade-tests",
        "--bin",
        "soak",
    ]))?;
    Ok(run_binary("debug", 1.0, &root.join("target/soak-ci")).is_ok())
}
