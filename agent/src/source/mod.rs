//! Sources fill the [`crate::model::Model`]: the manifest directory here; the Kubernetes API
//! watchers live beside it.

pub mod manifest;

pub use manifest::{load_dir, load_str, Loaded, ManifestError, ManifestNote};
