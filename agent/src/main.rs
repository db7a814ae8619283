//! `palisade`: the node agent and its command-line tools.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use palisade::model::Protocol;

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
    /// Run the node agent (manifest-directory or Kubernetes API source).
    Agent(AgentArgs),
    /// Is a connection allowed, and which policies and rules decided it (offline from manifests,
    /// or live from the agent's socket, which also checks that the maps agree).
    Explain {
        #[arg(long, required_unless_present = "socket", conflicts_with = "socket")]
        manifests: Option<PathBuf>,
        /// The running agent's local socket: explain against its current model and maps.
        #[arg(long)]
        socket: Option<PathBuf>,
        /// `NAMESPACE/POD` or an IP.
        #[arg(long)]
        from: String,
        /// `NAMESPACE/POD` or an IP (a Service ClusterIP is translated to its backends).
        #[arg(long)]
        to: String,
        #[arg(long)]
        port: u16,
        #[arg(long, default_value = "TCP", value_parser = parse_protocol)]
        protocol: Protocol,
        #[arg(long)]
        json: bool,
    },
    /// The reachability table over all pods with an IP, in upstream's format (offline).
    Matrix {
        #[arg(long)]
        manifests: PathBuf,
        #[arg(long)]
        port: u16,
        #[arg(long, default_value = "TCP", value_parser = parse_protocol)]
        protocol: Protocol,
        #[arg(long)]
        json: bool,
        /// Also write the matrix as an SVG picture to this file.
        #[arg(long)]
        svg: Option<PathBuf>,
    },
    /// What the running agent enforces: endpoints, maps, counters, errors (over its socket).
    Status(palisade::cli::args::StatusCmd),
    /// Common NetworkPolicy mistakes and isolation coverage (exit status 1 on errors or warnings).
    Lint(palisade::cli::args::LintCmd),
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

#[derive(Debug, clap::Args)]
struct AgentArgs {
    /// This node's name (pods' `spec.nodeName`).
    #[arg(long)]
    node: String,
    /// Where the cluster model comes from.
    #[arg(long, value_enum, default_value = "manifests")]
    source: SourceKind,
    /// The manifest directory (watched; with `--source manifests`).
    #[arg(long, required_if_eq("source", "manifests"))]
    manifests: Option<PathBuf>,
    /// A kubeconfig for `--source kube` (default: in-cluster, then $KUBECONFIG, ~/.kube/config).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// The directory of endpoint reports written by the CNI plugin (watched).
    #[arg(long)]
    endpoints: PathBuf,
    /// A bpffs mount (mounted here if it is not one yet).
    #[arg(long, default_value = "/sys/fs/bpf")]
    bpffs: PathBuf,
    /// Where to write the status JSON after each sync.
    #[arg(long)]
    status: Option<PathBuf>,
    /// The node's uplink interface, for Service traffic leaving the node.
    #[arg(long)]
    uplink: Option<String>,
    /// Police traffic between pods and their own node like any other traffic.
    #[arg(long)]
    no_allow_node_traffic: bool,
    /// The local socket (root-only) for the CNI plugin and `palisade status`.
    #[arg(long)]
    socket: Option<PathBuf>,
    #[command(flatten)]
    observe: palisade::observe::ObserveArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum SourceKind {
    /// A directory of YAML/JSON manifests.
    Manifests,
    /// The Kubernetes API server (watchers).
    Kube,
}

impl AgentArgs {
    fn source(&self) -> palisade::daemon::Source {
        match (self.source, &self.manifests) {
            (SourceKind::Manifests, Some(dir)) => palisade::daemon::Source::Manifests(dir.clone()),
            _ => palisade::daemon::Source::Kube(palisade::source::kube::KubeSettings {
                kubeconfig: self.kubeconfig.clone(),
                ..Default::default()
            }),
        }
    }
}

fn parse_protocol(s: &str) -> Result<Protocol, String> {
    Protocol::parse(&s.to_ascii_uppercase())
        .ok_or_else(|| format!("unknown protocol {s:?} (TCP, UDP or SCTP)"))
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Agent(a) => {
            let settings = palisade::daemon::Settings {
                source: a.source(),
                node: a.node,
                endpoints: a.endpoints,
                bpffs: a.bpffs,
                status: a.status,
                uplink: a.uplink,
                allow_node_traffic: !a.no_allow_node_traffic,
                poll: std::time::Duration::from_millis(50),
                socket: a.socket,
                observe: a.observe.settings(),
            };
            palisade::daemon::run(&settings).context("agent")
        }
        Command::Explain {
            socket: Some(socket),
            from,
            to,
            port,
            protocol,
            json,
            ..
        } => {
            let q = palisade::observe::ExplainQuery {
                from,
                to,
                port,
                protocol,
            };
            let agrees = palisade::cli::live::explain(&socket, q, json, &mut std::io::stdout())
                .context("explain")?;
            if !agrees {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Explain {
            manifests,
            from,
            to,
            port,
            protocol,
            json,
            ..
        } => {
            let args = palisade::cli::ExplainArgs {
                manifests: manifests.context("--manifests or --socket")?,
                from,
                to,
                port,
                protocol,
                json,
            };
            palisade::cli::explain(&args, &mut std::io::stdout(), &mut std::io::stderr())
                .context("explain")
        }
        Command::Matrix {
            manifests,
            port,
            protocol,
            json,
            svg,
        } => {
            let args = palisade::cli::MatrixArgs {
                manifests,
                port,
                protocol,
                json,
            };
            palisade::cli::matrix(&args, &mut std::io::stdout(), &mut std::io::stderr())
                .context("matrix")?;
            if let Some(file) = svg {
                palisade::cli::svg::write(&args, &file, &mut std::io::stderr())
                    .context("matrix")?;
            }
            Ok(())
        }
        Command::Status(cmd) => cmd.run(&mut std::io::stdout()).context("status"),
        Command::Lint(cmd) => {
            if cmd
                .run(&mut std::io::stdout(), &mut std::io::stderr())
                .context("lint")?
            {
                std::process::exit(1);
            }
            Ok(())
        }
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
