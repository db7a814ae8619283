//! The status file: what the agent has applied, for tests, the demo and operators.

use std::{collections::BTreeMap, path::Path};

use serde::Serialize;

use crate::{
    compiler::CompiledOutput,
    sync::{EndpointState, SyncProblem, SyncReport},
};

#[derive(Debug, Serialize)]
pub struct Status {
    /// The manifests' `.revision` this state reflects.
    pub applied_revision: u64,
    pub endpoints: BTreeMap<String, EndpointState>,
    pub sync_problems: Vec<SyncProblem>,
    /// Policy problems (invalid fields), each naming the policy and field.
    pub policy_problems: Vec<String>,
    /// Manifest notes (skipped kinds, malformed documents) and unusable endpoint reports.
    pub notes: Vec<String>,
    /// When this sync finished.
    pub synced_at: std::time::SystemTime,
    /// The Kubernetes API source's health (absent on the manifest source).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kube: Option<crate::source::kube::Health>,
}

impl Status {
    pub fn new(revision: u64, report: &SyncReport, out: &CompiledOutput, notes: &[String]) -> Self {
        Self {
            applied_revision: revision,
            endpoints: report.endpoints.clone(),
            sync_problems: report.problems.clone(),
            policy_problems: out.problems.iter().map(ToString::to_string).collect(),
            notes: notes.to_vec(),
            synced_at: std::time::SystemTime::now(),
            kube: None,
        }
    }

    /// Writes atomically (temp file and rename) so readers never see half a file.
    pub fn write(&self, path: &Path) {
        let tmp = path.with_extension("tmp");
        let result = serde_json::to_vec_pretty(self)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&tmp, bytes))
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = result {
            tracing::warn!("writing status {}: {e}", path.display());
        }
    }
}
