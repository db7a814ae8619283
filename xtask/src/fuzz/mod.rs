//! `cargo xtask fuzz --minutes N`: the hostile-input harness (`agent/tests/fuzz_manifests.rs`)
//! for longer than the 10 s `cargo test` gives it, in release mode. Random and mutated YAML/JSON
//! documents and generated models go through the manifest loader and the policy compiler; a
//! panic, a hang or a broken invariant stops the run, saves the input and fails. No root needed.

use std::path::PathBuf;
use std::process::Command;

use crate::cmd;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// How long to fuzz.
    #[arg(long, default_value_t = 5)]
    minutes: u64,
    /// Worker threads (each its own generator; the machine's cores are shared, so 1 by default).
    #[arg(long, default_value_t = 1)]
    jobs: u64,
    /// Reproduce a run: the seed it printed.
    #[arg(long)]
    seed: Option<u64>,
    /// Write the JSON report here (crash-free seconds, inputs, per-check counts).
    #[arg(long, value_name = "OUT.json")]
    report: Option<PathBuf>,
}

impl Args {
    /// The environment the harness reads.
    fn env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("PALISADE_FUZZ_SECS", (self.minutes * 60).to_string()),
            ("PALISADE_FUZZ_JOBS", self.jobs.max(1).to_string()),
        ];
        if let Some(s) = self.seed {
            env.push(("PALISADE_FUZZ_SEED", s.to_string()));
        }
        if let Some(r) = &self.report {
            let abs = std::env::current_dir()
                .map(|d| d.join(r))
                .unwrap_or_else(|_| r.clone());
            env.push(("PALISADE_FUZZ_REPORT", abs.display().to_string()));
        }
        env
    }
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let root = cmd::workspace_root();
    println!(
        "xtask fuzz: {} min, {} worker(s) (release build of the harness first)",
        args.minutes, args.jobs
    );
    let mut c = Command::new("cargo");
    c.current_dir(&root)
        .args([
            "test",
            "--release",
            "-p",
            "palisade",
            "--test",
            "fuzz_manifests",
            "--",
            "--nocapture",
            "--test-threads",
            "2",
        ])
        .envs(args.env());
    cmd::run(&mut c)
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
    fn minutes_become_seconds() {
        let cli = Cli::parse_from(["x", "--minutes", "30", "--seed", "7"]);
        let env = cli.args.env();
        assert!(env.contains(&("PALISADE_FUZZ_SECS", "1800".to_owned())));
        assert!(env.contains(&("PALISADE_FUZZ_SEED", "7".to_owned())));
        assert!(env.contains(&("PALISADE_FUZZ_JOBS", "1".to_owned())));
    }
}
