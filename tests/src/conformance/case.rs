//! The case format of `shared/conformance/README.md`, as serde types.
//!
//! A case file is a JSON array of cases (the upstream corpus), an object `{"cases": [...]}`, or
//! one case object. Fields the runner does not need (`full_name`, `source`, `matrix` ...) are
//! kept where they are useful for printing and ignored otherwise; unknown fields are accepted.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A label map.
pub type Labels = BTreeMap<String, String>;

/// Reading or checking a case file failed.
#[derive(Debug, thiserror::Error)]
pub enum CaseError {
    #[error("cannot read case file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid case file: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("case id {id} appears twice ({first} and {second})")]
    DuplicateId {
        id: String,
        first: PathBuf,
        second: PathBuf,
    },
    #[error("no case has id {0}")]
    UnknownId(String),
    #[error("case {id}: {reason}")]
    Invalid { id: String, reason: String },
}

/// One conformance case.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Case {
    pub id: String,
    #[serde(default)]
    pub name: String,
    pub initial_state: InitialState,
    pub steps: Vec<Step>,
    #[serde(default)]
    pub symbolic: bool,
    #[serde(default)]
    pub notes: Value,
}

/// The namespaces and pods that exist before the first step.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct InitialState {
    #[serde(default)]
    pub namespaces: BTreeMap<String, NamespaceSpec>,
    /// By `ns/name`.
    #[serde(default)]
    pub pods: BTreeMap<String, PodSpec>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NamespaceSpec {
    #[serde(default)]
    pub labels: Labels,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PodSpec {
    pub namespace: Option<String>,
    pub name: Option<String>,
    #[serde(default)]
    pub labels: Labels,
    #[serde(rename = "containerPorts", default)]
    pub container_ports: Vec<ContainerPort>,
}

/// A transport protocol as Kubernetes spells it.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "UPPERCASE")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
    Sctp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerPort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(rename = "containerPort")]
    pub container_port: u16,
    #[serde(default)]
    pub protocol: Protocol,
}

/// One step: its 1-based number and what it does.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Step {
    pub step: u32,
    #[serde(flatten)]
    pub action: Action,
}

/// Every action of the README's table.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    CreatePolicy {
        namespace: String,
        policy: Value,
    },
    UpdatePolicy {
        namespace: String,
        policy: Value,
    },
    DeletePolicy {
        namespace: String,
        name: String,
    },
    DeleteAllPolicies {},
    AddNamespaceLabels {
        namespace: String,
        labels: Labels,
        #[serde(default)]
        resulting_labels: Option<Labels>,
    },
    SetNamespaceLabels {
        namespace: String,
        labels: Labels,
    },
    AddPodLabels {
        pod: String,
        labels: Labels,
        #[serde(default)]
        resulting_labels: Option<Labels>,
    },
    SetPodLabels {
        pod: String,
        labels: Labels,
    },
    CreateNamespace {
        namespace: String,
        #[serde(default)]
        labels: Labels,
    },
    DeleteNamespace {
        namespace: String,
    },
    CreatePod {
        pod: String,
        #[serde(default)]
        labels: Labels,
        /// Not in the README: a case may give the new pod its own ports; by default it serves
        /// the initial pods' containerPorts.
        #[serde(rename = "containerPorts", default)]
        container_ports: Option<Vec<ContainerPort>>,
    },
    DeletePod {
        pod: String,
    },
    /// Not in the shared README (ClusterNetworkPolicy cases): a full cluster-scoped
    /// `policy.networking.k8s.io/v1alpha2` ClusterNetworkPolicy object; its name must be new.
    CreateClusterPolicy {
        policy: Value,
    },
    /// Replaces the ClusterNetworkPolicy of that `metadata.name` with this full object.
    UpdateClusterPolicy {
        policy: Value,
    },
    /// Deletes the ClusterNetworkPolicy of that name.
    DeleteClusterPolicy {
        name: String,
    },
    Probe(Probe),
}

/// One truth table to measure.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Probe {
    #[serde(default)]
    pub protocol: Protocol,
    /// Numeric port; when absent, `port_name` is resolved on each destination pod.
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub port_name: Option<String>,
    #[serde(default)]
    pub probe_by_named_port: bool,
    /// Descriptive (`Service ClusterIP of s-<ns>-<pod> ...`); the runner probes the way
    /// `--target` says.
    #[serde(default)]
    pub target: Option<Value>,
    #[serde(default)]
    pub mode: Option<Value>,
    /// When present: exactly the pods that exist at this probe.
    #[serde(default)]
    pub pods: Option<Vec<String>>,
    pub expected: Vec<ExpectedCell>,
    /// Upstream's print of the table (tab-separated), kept for reference.
    #[serde(default)]
    pub matrix: Vec<String>,
    #[serde(default)]
    pub counts: Option<Value>,
    /// Not in the shared README: `expected` lists only some ordered pairs (upstream
    /// ClusterNetworkPolicy tests assert single connections); only those cells are judged.
    #[serde(default)]
    pub partial: bool,
    /// Descriptive: the upstream subtest this probe transcribes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtest: Option<String>,
}

/// One ordered pair of the expected table.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExpectedCell {
    pub from: String,
    pub to: String,
    /// `None`: depends on IP classes (`allowed_by_ip_class`).
    pub allowed: Option<bool>,
    #[serde(default)]
    pub loopback: bool,
    #[serde(default)]
    pub allowed_by_ip_class: Option<BTreeMap<String, bool>>,
    /// Not in the shared README: this cell's own numeric port, overriding the probe's `port`
    /// (a partial probe may check one pair on several ports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

impl ExpectedCell {
    /// From and to are the same pod (upstream ignores these cells).
    pub fn is_loopback(&self) -> bool {
        self.loopback || self.from == self.to
    }
}

impl Case {
    /// The probe steps, in order.
    pub fn probes(&self) -> impl Iterator<Item = (u32, &Probe)> {
        self.steps.iter().filter_map(|s| match &s.action {
            Action::Probe(p) => Some((s.step, p)),
            _ => None,
        })
    }

    /// Whether any policy holds a `{{...}}` template filled in from runtime pod IPs.
    pub fn has_templates(&self) -> bool {
        self.steps.iter().any(|s| match &s.action {
            Action::CreatePolicy { policy, .. }
            | Action::UpdatePolicy { policy, .. }
            | Action::CreateClusterPolicy { policy }
            | Action::UpdateClusterPolicy { policy } => policy.to_string().contains("{{"),
            _ => false,
        })
    }

    /// Checks what can be checked without running: step numbering and pod keys.
    pub fn check(&self) -> Result<(), CaseError> {
        let invalid = |reason: String| CaseError::Invalid {
            id: self.id.clone(),
            reason,
        };
        for (i, s) in self.steps.iter().enumerate() {
            if usize::try_from(s.step).ok() != Some(i + 1) {
                return Err(invalid(format!(
                    "step {} is at position {} (steps are numbered 1, 2, ...)",
                    s.step,
                    i + 1
                )));
            }
        }
        for (step, probe) in self.probes() {
            if probe.partial && probe.expected.is_empty() {
                return Err(invalid(format!(
                    "step {step}: a partial probe lists no cells"
                )));
            }
        }
        for (key, pod) in &self.initial_state.pods {
            let (ns, name) = split_key(key).ok_or_else(|| invalid(format!("pod key {key:?}")))?;
            if pod.namespace.as_deref().is_some_and(|n| n != ns)
                || pod.name.as_deref().is_some_and(|n| n != name)
            {
                return Err(invalid(format!("pod {key} names another namespace/name")));
            }
        }
        Ok(())
    }
}

/// Splits `ns/name`.
pub fn split_key(key: &str) -> Option<(&str, &str)> {
    let (ns, name) = key.split_once('/')?;
    (!ns.is_empty() && !name.is_empty() && !name.contains('/')).then_some((ns, name))
}

/// The cases of one file, in file order.
pub fn load_file(path: &Path) -> Result<Vec<Case>, CaseError> {
    let text = std::fs::read_to_string(path).map_err(|source| CaseError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(&text).map_err(|source| CaseError::Parse {
        path: path.to_owned(),
        source,
    })
}

/// Parses a case file's text: an array, `{"cases": [...]}`, or one case.
pub fn parse(text: &str) -> Result<Vec<Case>, serde_json::Error> {
    let value: Value = serde_json::from_str(text)?;
    match value {
        Value::Object(mut obj) if obj.contains_key("cases") && !obj.contains_key("id") => {
            serde_json::from_value(obj.remove("cases").unwrap_or_default())
        }
        Value::Object(_) => Ok(vec![serde_json::from_value(value)?]),
        other => serde_json::from_value(other),
    }
}

/// Loads every file, checks each case, refuses duplicate ids, and keeps the cases named by
/// `only` (all when empty), in file order.
pub fn load_all(paths: &[PathBuf], only: &[String]) -> Result<Vec<Case>, CaseError> {
    let mut seen: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut cases = Vec::new();
    for path in paths {
        for case in load_file(path)? {
            case.check()?;
            if let Some(first) = seen.insert(case.id.clone(), path.clone()) {
                return Err(CaseError::DuplicateId {
                    id: case.id,
                    first,
                    second: path.clone(),
                });
            }
            cases.push(case);
        }
    }
    if let Some(missing) = only.iter().find(|id| !seen.contains_key(*id)) {
        return Err(CaseError::UnknownId(missing.clone()));
    }
    if !only.is_empty() {
        cases.retain(|c| only.contains(&c.id));
    }
    Ok(cases)
}
