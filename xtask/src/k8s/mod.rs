//! `cargo xtask k8s up|down|build`: a real kube-apiserver (with etcd and the namespace and
//! garbage-collector controllers) on loopback, for development and tests.
//!
//! - `up` builds the binaries once (cached under `~/.cache/palisade/k8s`), starts the control
//!   plane on free ports with its state in a fresh `/tmp/palisade-k8s-<pid>-<n>` directory,
//!   and prints `KUBECONFIG=<absolute path>` as its last line.
//! - `down` stops the processes of the control plane that kubeconfig belongs to (by the PIDs
//!   `up` recorded, checking each still runs from that directory) and removes the directory.
//!
//! The tests start their own control planes through `palisade_tests::kube::ControlPlane`,
//! the same code `up` uses.

mod build;

use std::path::PathBuf;

use anyhow::{bail, Context as _};
use palisade_tests::kube::{self as harness, Binaries, ControlPlane, StateFile, STATE_FILE};

pub use build::ensure_built;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: K8sCommand,
}

#[derive(Debug, clap::Subcommand)]
enum K8sCommand {
    /// Build once (cached), start on loopback, print `KUBECONFIG=<path>` last.
    Up {
        /// Where the state directory is created (default: the temp directory).
        #[arg(long)]
        parent: Option<PathBuf>,
    },
    /// Stop the control plane of a kubeconfig `up` printed and remove its state.
    Down {
        /// Default: $KUBECONFIG.
        #[arg(long)]
        kubeconfig: Option<PathBuf>,
    },
    /// Only build and cache the binaries.
    Build,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    match &args.command {
        K8sCommand::Up { parent } => up(parent.clone()),
        K8sCommand::Down { kubeconfig } => down(kubeconfig.clone()),
        K8sCommand::Build => ensure_built().map(|bin| println!("{}", bin.display())),
    }
}

fn up(parent: Option<PathBuf>) -> anyhow::Result<()> {
    let bin = ensure_built()?;
    let bins = Binaries::in_dir(&bin)?;
    let parent = parent.unwrap_or_else(std::env::temp_dir);
    harness::cleanup_stale(&parent);
    let started = std::time::Instant::now();
    let cp = ControlPlane::start_detachable(&bins, &parent)?;
    let kubeconfig = cp.kubeconfig();
    let state = cp.detach()?;
    println!(
        "k8s: API server {} ready in {:.1} s (etcd 127.0.0.1:{}); logs and state in {}",
        format_args!("https://127.0.0.1:{}", state.ports.apiserver),
        started.elapsed().as_secs_f64(),
        state.ports.etcd_client,
        state.dir.display()
    );
    println!(
        "k8s: stop it with `cargo xtask k8s down --kubeconfig {}`",
        kubeconfig.display()
    );
    println!("KUBECONFIG={}", kubeconfig.display());
    Ok(())
}

fn down(kubeconfig: Option<PathBuf>) -> anyhow::Result<()> {
    let kubeconfig = kubeconfig
        .or_else(|| std::env::var_os("KUBECONFIG").map(PathBuf::from))
        .context("which control plane? pass --kubeconfig or set KUBECONFIG")?;
    let dir = kubeconfig
        .parent()
        .context("kubeconfig path has no directory")?;
    let state_path = dir.join(STATE_FILE);
    let Ok(text) = std::fs::read_to_string(&state_path) else {
        bail!(
            "{} is not a control plane `cargo xtask k8s up` started (no {})",
            kubeconfig.display(),
            state_path.display()
        );
    };
    let state: StateFile =
        serde_json::from_str(&text).with_context(|| format!("reading {}", state_path.display()))?;
    harness::stop_detached(&state);
    println!("k8s: stopped and removed {}", state.dir.display());
    Ok(())
}

/// For `cargo xtask test` (as root): builds the API server if it is not cached and tells the
/// tests where it is. A failed build is reported here; the kube tests then fail saying why.
pub fn prepare_tests() {
    match ensure_built() {
        Ok(bin) => std::env::set_var(harness::BIN_ENV, bin),
        Err(e) => {
            eprintln!("xtask test: cannot build the API server ({e:#}); the kube tests will fail")
        }
    }
}
