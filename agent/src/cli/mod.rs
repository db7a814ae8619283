//! Command-line tools: offline over a manifest directory (`explain`, `matrix`, `lint`), and live
//! against the running agent's socket (`status`, `explain --socket`, `lint --socket`). Each is a
//! library function taking its arguments and writers, so that `main.rs` only parses flags.

pub mod args;
pub mod explain;
#[cfg(test)]
mod explain_tests;
pub mod lint;
pub mod live;
pub mod matrix;
pub mod svg;
pub mod tiers;

use std::io::Write;
use std::path::Path;

use thiserror::Error;

pub use explain::{explain, explain_compiled, explain_model, ExplainArgs, Explanation};
pub use matrix::{compute_matrix, matrix, matrix_for_model, matrix_pods, Matrix, MatrixArgs};

use crate::model::Model;
use crate::source::{load_dir, ManifestError};

/// What the offline tools can fail with.
#[derive(Debug, Error)]
pub enum CliError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("writing output: {0}")]
    Io(std::io::Error),
    #[error("encoding JSON: {0}")]
    Json(serde_json::Error),
    #[error("{0:?} is neither NAMESPACE/POD nor an IP address")]
    BadAddress(String),
    #[error("no pod {0} in the manifests")]
    UnknownPod(String),
    #[error("pod {0} has no IP (status.podIP)")]
    NoIp(String),
    #[error("agent socket {path}: {source}")]
    Socket {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the agent answered: {0}")]
    Agent(String),
    #[error("{0}")]
    Usage(&'static str),
    #[error("writing {path}: {source}")]
    Write {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Loads a manifest directory, printing its notes to `err`.
fn load(dir: &Path, err: &mut dyn Write) -> Result<Model, CliError> {
    let loaded = load_dir(dir)?;
    for note in &loaded.notes {
        let level = if note.malformed { "error" } else { "note" };
        let file = note.file.display();
        writeln!(
            err,
            "{level}: {file} document {}: {}",
            note.document, note.message
        )
        .map_err(CliError::Io)?;
    }
    Ok(loaded.model)
}
