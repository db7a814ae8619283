//! `palisade`: the node agent and its command-line tools.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "palisade",
    version,
    about = "Kubernetes NetworkPolicy dataplane (eBPF)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Load the programs and print what loaded (a smoke check of the kernel and the object).
    Check {
        /// A bpffs mount to pin under; without it a private bpffs is mounted and removed.
        #[arg(long)]
        bpffs: Option<PathBuf>,
    },
    /// Remove everything Palisade pinned under a bpffs mount (clean uninstall).
    Uninstall {
        #[arg(long, default_value = "/sys/fs/bpf")]
        bpffs: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Check { bpffs } => check(bpffs),
        Command::Uninstall { bpffs } => {
            let dp = palisade::dataplane::Dataplane::load(&bpffs).context("loading dataplane")?;
            dp.uninstall().context("removing pins")?;
            println!("removed Palisade's pins under {}", bpffs.display());
            Ok(())
        }
    }
}

fn check(bpffs: Option<PathBuf>) -> anyhow::Result<()> {
    let private;
    let dir = match bpffs {
        Some(d) => d,
        None => {
            private = palisade::dataplane::PrivateBpffs::new("check")?;
            private.path().to_owned()
        }
    };
    let dp = palisade::dataplane::Dataplane::load(&dir).context("loading dataplane")?;
    println!(
        "programs loaded and verified; maps pinned under {}",
        dp.pin_root().display()
    );
    Ok(())
}
