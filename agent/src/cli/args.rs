//! Flags of the commands this module adds beside `explain` and `matrix` (`status`, `lint`), so
//! that `main.rs` only dispatches.

use std::{io::Write, path::PathBuf};

use super::{lint, live, CliError};

/// `palisade status`: what the running agent enforces, over its local socket.
#[derive(Debug, Clone, clap::Args)]
pub struct StatusCmd {
    /// The agent's local socket.
    #[arg(long, default_value = live::DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// One JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

impl StatusCmd {
    pub fn run(&self, out: &mut dyn Write) -> Result<(), CliError> {
        live::status(&self.socket, self.json, out)
    }
}

/// `palisade lint`: common NetworkPolicy mistakes, on a manifest directory or the live model.
#[derive(Debug, Clone, clap::Args)]
pub struct LintCmd {
    /// A manifest directory.
    #[arg(long, required_unless_present = "socket", conflicts_with = "socket")]
    pub manifests: Option<PathBuf>,
    /// The running agent's local socket (lints its current model).
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// `{"findings": [...]}` instead of text.
    #[arg(long)]
    pub json: bool,
}

impl LintCmd {
    /// Returns whether there is an error or a warning (exit status 1).
    pub fn run(&self, out: &mut dyn Write, err: &mut dyn Write) -> Result<bool, CliError> {
        match (&self.socket, &self.manifests) {
            (Some(socket), _) => live::lint(socket, self.json, out),
            (None, Some(dir)) => lint::lint(
                &lint::LintArgs {
                    manifests: dir.clone(),
                    json: self.json,
                },
                out,
                err,
            ),
            (None, None) => Err(CliError::Usage("give --manifests DIR or --socket PATH")),
        }
    }
}
