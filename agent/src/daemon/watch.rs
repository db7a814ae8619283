//! Watching directories by polling: a fingerprint of every file's name, size and modification time
//! (and the manifests' `.revision` counter), compared between passes.

use std::{path::Path, time::SystemTime};

/// What a directory looked like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint(Vec<(String, u64, Option<SystemTime>)>);

pub fn fingerprint(dir: &Path) -> Fingerprint {
    let mut files: Vec<(String, u64, Option<SystemTime>)> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| {
                    let meta = e.metadata().ok()?;
                    Some((
                        e.file_name().to_string_lossy().into_owned(),
                        meta.len(),
                        meta.modified().ok(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    Fingerprint(files)
}

/// The counter a writer puts in `<dir>/.revision` after its other changes (0 when absent).
pub fn revision(dir: &Path) -> u64 {
    std::fs::read_to_string(dir.join(".revision"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}
