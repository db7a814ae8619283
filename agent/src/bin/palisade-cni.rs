//! `palisade-cni`: the chained CNI plugin. Run by a container runtime (no arguments) it reads
//! the network configuration on stdin and the CNI_* environment, tells the Palisade agent
//! (local socket) about the pod, and prints the previous plugin's result once the agent has
//! attached the pod with its policy (see `palisade::cni::plugin`).
//!
//! Run with a subcommand it installs itself on a node (the DaemonSet's init step):
//! `palisade-cni install --bin-dir /host/opt/cni/bin --conf-dir /host/etc/cni/net.d
//! [--socket PATH] [--watch SECONDS]`, or removes itself: `palisade-cni uninstall ...`.

use std::{
    io::{Read as _, Write as _},
    path::PathBuf,
    time::Duration,
};

use clap::{Parser, Subcommand};
use palisade::cni::{
    install,
    plugin::{self, Env},
};

#[derive(Debug, Parser)]
#[command(
    name = "palisade-cni",
    about = "Palisade's chained CNI plugin and its installer"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Copy this binary into the CNI binary directory and chain it into the active network
    /// configuration.
    Install {
        #[arg(long, default_value = "/opt/cni/bin")]
        bin_dir: PathBuf,
        #[arg(long, default_value = "/etc/cni/net.d")]
        conf_dir: PathBuf,
        /// The agent's socket, as the plugin will find it on the node.
        #[arg(long, default_value = plugin::DEFAULT_SOCKET)]
        socket: PathBuf,
        /// Keep checking every SECONDS and chain again if the node's CNI rewrote its
        /// configuration (also waits for a configuration to appear).
        #[arg(long)]
        watch: Option<u64>,
    },
    /// Remove the plugin from every network configuration and delete the binary.
    Uninstall {
        #[arg(long, default_value = "/opt/cni/bin")]
        bin_dir: PathBuf,
        #[arg(long, default_value = "/etc/cni/net.d")]
        conf_dir: PathBuf,
    },
}

fn main() {
    if std::env::args_os().len() > 1 {
        std::process::exit(match admin(Cli::parse().command) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("palisade-cni: {e}");
                1
            }
        });
    }
    cni();
}

fn admin(command: Command) -> Result<(), install::InstallError> {
    match command {
        Command::Install {
            bin_dir,
            conf_dir,
            socket,
            watch,
        } => {
            // Without /proc (a bare chroot), the path we were started by.
            let me = std::env::current_exe()
                .or_else(|e| std::env::args_os().next().map(PathBuf::from).ok_or(e))
                .map_err(|source| install::InstallError::Io {
                    path: "/proc/self/exe".into(),
                    source,
                })?;
            if install::install_binary(&me, &bin_dir)? {
                println!("installed {}", bin_dir.join(install::PLUGIN).display());
            }
            let Some(secs) = watch else {
                return chain_once(&conf_dir, &socket);
            };
            loop {
                if let Err(e) = chain_once(&conf_dir, &socket) {
                    eprintln!("palisade-cni: {e}");
                }
                std::thread::sleep(Duration::from_secs(secs.max(1)));
            }
        }
        Command::Uninstall { bin_dir, conf_dir } => {
            for path in install::unchain(&conf_dir, Some(&bin_dir))? {
                println!("restored {}", path.display());
            }
            Ok(())
        }
    }
}

fn chain_once(
    conf_dir: &std::path::Path,
    socket: &std::path::Path,
) -> Result<(), install::InstallError> {
    if let Some(path) = install::chain(conf_dir, socket)? {
        println!("chained palisade-cni into {}", path.display());
    }
    Ok(())
}

/// The plugin itself, as the runtime calls it.
fn cni() {
    let env = Env::from_process();
    let mut stdin = Vec::new();
    let read = std::io::stdin().read_to_end(&mut stdin);
    let version = serde_json::from_slice::<serde_json::Value>(&stdin)
        .ok()
        .and_then(|v| v["cniVersion"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "1.0.0".to_owned());
    let result = match read {
        Ok(_) => plugin::run(&env, &stdin),
        Err(e) => Err(plugin::CniError {
            code: plugin::Code::Io,
            msg: "cannot read stdin".into(),
            details: e.to_string(),
        }),
    };
    let mut out = std::io::stdout().lock();
    match result {
        Ok(Some(value)) => {
            let _ = writeln!(out, "{value}");
        }
        Ok(None) => {}
        Err(e) => {
            let _ = writeln!(out, "{}", e.to_json(&version));
            drop(out);
            std::process::exit(1);
        }
    }
}
