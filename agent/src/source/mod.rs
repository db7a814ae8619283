//! Sources fill the [`crate::model::Model`]: the manifest directory ([`manifest`]) and the
//! Kubernetes API watchers ([`kube`]).

pub mod kube;
pub mod lenient;
pub mod manifest;

pub use manifest::{load_dir, load_str, Loaded, ManifestError, ManifestNote};
