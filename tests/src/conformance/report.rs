//! The JSON report: a summary and, per case, one entry per probe step × IP family × target
//! with every cell measured (loopback included).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::table::Diff;
use crate::addr::IpFamily;

/// Writing the report failed.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot write report {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Passed,
    Failed,
    Skipped,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Passed => "passed",
            Status::Failed => "failed",
            Status::Skipped => "skipped",
        }
    }
}

/// What a probe connects to: the destination's Service ClusterIP or its pod IP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    Service,
    Pod,
}

impl Target {
    pub fn as_str(self) -> &'static str {
        match self {
            Target::Service => "service",
            Target::Pod => "pod",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub summary: Summary,
    pub cases: Vec<CaseReport>,
    /// Where the agents got the cluster state: `manifests` or `kube`.
    #[serde(default)]
    pub source: String,
    /// With `kube`: the cases that were run through the manifest source instead (in the same
    /// run; their entries in `cases` are from that run), and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub via_manifests: Vec<ViaManifests>,
}

/// A case the API source could not carry (the API server dropped a field it needs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViaManifests {
    pub id: String,
    pub reason: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub cases: usize,
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
    pub seconds: f64,
    /// The run's settings and tallies beyond the fixed shape.
    #[serde(default)]
    pub ip_family: String,
    #[serde(default)]
    pub targets: Vec<Target>,
    #[serde(default)]
    pub probes: ProbeTally,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeTally {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CaseReport {
    pub id: String,
    pub status: Status,
    pub reason: String,
    pub probes: Vec<ProbeReport>,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub seconds: f64,
    /// What the agents listed under `problems` in their status while the case ran.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub agent_problems: Vec<Value>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProbeReport {
    pub step: u32,
    pub protocol: String,
    pub port: Option<u16>,
    pub family: IpFamily,
    pub target: Target,
    pub status: Status,
    pub reason: String,
    pub pod_ips: BTreeMap<String, String>,
    pub observed: Vec<ObservedCell>,
    /// Non-loopback cells that differ in the last attempt.
    #[serde(default)]
    pub differing: Vec<Diff>,
    #[serde(default)]
    pub loopback: LoopbackReport,
    /// How many times the table was probed (mismatches are re-probed for a while).
    #[serde(default)]
    pub attempts: u32,
    #[serde(default)]
    pub seconds: f64,
    /// A partial probe (only the listed ordered pairs are judged).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub partial: bool,
    /// How many cells were judged (every listed cell; loopback ones count when required).
    #[serde(default)]
    pub judged: usize,
}

/// Loopback cells (from == to), reported apart from the rest.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LoopbackReport {
    /// True through the ClusterIP (hairpin crosses the host veth); false to the pod IP.
    pub required: bool,
    pub differing: Vec<Diff>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ObservedCell {
    pub from: String,
    pub to: String,
    pub allowed: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub loopback: bool,
    /// Why the probe did not get through (timeout, refused ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Report {
    /// Tallies the cases into a report.
    pub fn new(cases: Vec<CaseReport>, seconds: f64, ip_family: &str, targets: &[Target]) -> Self {
        let count = |s: Status| cases.iter().filter(|c| c.status == s).count();
        let probes = cases.iter().flat_map(|c| &c.probes);
        let pcount = |s: Status| probes.clone().filter(|p| p.status == s).count();
        let summary = Summary {
            cases: cases.len(),
            passed: count(Status::Passed),
            failed: count(Status::Failed),
            skipped: count(Status::Skipped),
            seconds: (seconds * 10.0).round() / 10.0,
            ip_family: ip_family.to_owned(),
            targets: targets.to_vec(),
            probes: ProbeTally {
                passed: pcount(Status::Passed),
                failed: pcount(Status::Failed),
                skipped: pcount(Status::Skipped),
            },
        };
        Report {
            summary,
            cases,
            source: "manifests".to_owned(),
            via_manifests: Vec::new(),
        }
    }

    pub fn write(&self, path: &Path) -> Result<(), ReportError> {
        let text = serde_json::to_string_pretty(self).unwrap_or_default();
        std::fs::write(path, text + "\n").map_err(|source| ReportError::Write {
            path: path.to_owned(),
            source,
        })
    }
}

/// A case's status from its probes: failed if any failed, skipped if none ran (all
/// skipped, or no probes), else passed.
pub fn case_status(probes: &[ProbeReport]) -> Status {
    if probes.iter().any(|p| p.status == Status::Failed) {
        Status::Failed
    } else if probes.iter().all(|p| p.status == Status::Skipped) {
        Status::Skipped
    } else {
        Status::Passed
    }
}
