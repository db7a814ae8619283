//! `palisade lint`: the checklist operators follow, automated, over a manifest directory or the
//! running agent's model. Codes are stable and documented in `docs/lint.md`.

mod checks;
mod cluster;
pub mod cluster_select;
#[cfg(test)]
mod cluster_tests;
mod coverage;
pub mod select;

use std::{
    collections::BTreeMap,
    fmt,
    io::Write,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use super::{load, CliError};
use crate::model::{Model, ModelChange, ObjectKey};

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
    Info,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "info",
        })
    }
}

/// Every stable code, in the order `docs/lint.md` lists them.
pub const CODES: [&str; 15] = [
    "unisolated-ingress",
    "unisolated-egress",
    "egress-without-dns",
    "selector-or-confusion",
    "policy-selects-nothing",
    "peer-matches-nothing",
    "named-port-unresolved",
    "ipblock-covers-pods",
    "selects-host-network-pod",
    "invalid-policy",
    "isolation-coverage",
    "cluster-rule-shadowed",
    "cluster-priority-overlap",
    "baseline-pass",
    "baseline-unreachable",
];

/// One finding. The JSON form has exactly the public fields; `field` and `file` locate it for
/// the human output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    pub code: String,
    pub severity: Severity,
    pub namespace: String,
    /// `Kind/name`, e.g. `NetworkPolicy/allow-db`, `Namespace/shop` or
    /// `ClusterNetworkPolicy/guardrails` (cluster-scoped: `namespace` is empty).
    pub object: String,
    pub message: String,
    pub fix: String,
    /// Where in the object, e.g. `spec.ingress[0].from[1]`.
    #[serde(skip)]
    pub field: Option<String>,
    /// The manifest file that holds the object.
    #[serde(skip)]
    pub file: Option<PathBuf>,
}

impl Finding {
    pub fn new(code: &str, severity: Severity, namespace: &str, object: String) -> Self {
        Self {
            code: code.to_owned(),
            severity,
            namespace: namespace.to_owned(),
            object,
            message: String::new(),
            fix: String::new(),
            field: None,
            file: None,
        }
    }

    pub fn at(mut self, field: String) -> Self {
        self.field = Some(field);
        self
    }

    pub fn says(mut self, message: String, fix: impl Into<String>) -> Self {
        self.message = message;
        self.fix = fix.into();
        self
    }
}

/// `{"findings": [...]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub findings: Vec<Finding>,
}

/// Every finding for a model, errors first.
pub fn lint_model(model: &Model) -> Vec<Finding> {
    let mut out = Vec::new();
    coverage::isolation(model, &mut out);
    coverage::dns(model, &mut out);
    checks::policies(model, &mut out);
    cluster::policies(model, &mut out);
    checks::invalid(model, &mut out);
    out.sort_by(|a, b| {
        (a.severity, &a.namespace, &a.object, &a.code, &a.field).cmp(&(
            b.severity,
            &b.namespace,
            &b.object,
            &b.code,
            &b.field,
        ))
    });
    out
}

/// Arguments of `palisade lint`.
#[derive(Debug, Clone)]
pub struct LintArgs {
    pub manifests: PathBuf,
    pub json: bool,
}

/// The file each object came from (`Kind/namespace/name` → file).
fn object_files(dir: &Path) -> BTreeMap<String, PathBuf> {
    let mut out = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for path in entries.filter_map(Result::ok).map(|e| e.path()) {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        for change in crate::source::load_str(&text, &path).0 {
            let key = match change {
                ModelChange::UpsertPolicy(p) => format!("NetworkPolicy/{}", p.key()),
                ModelChange::UpsertPod(p) => format!("Pod/{}", p.key()),
                ModelChange::UpsertNamespace(n) => format!("Namespace/{}", n.name),
                ModelChange::UpsertClusterPolicy(p) => format!("ClusterNetworkPolicy/{}", p.name),
                _ => continue,
            };
            out.entry(key).or_insert_with(|| path.clone());
        }
    }
    out
}

/// Lints a manifest directory: findings located in their files.
pub fn lint_dir(dir: &Path, err: &mut dyn Write) -> Result<Vec<Finding>, CliError> {
    let model = load(dir, err)?;
    let files = object_files(dir);
    let mut findings = lint_model(&model);
    for f in &mut findings {
        let name = f.object.split_once('/').map(|(kind, name)| {
            if kind == "Namespace" || f.namespace.is_empty() {
                f.object.clone()
            } else {
                format!("{kind}/{}", ObjectKey::new(&f.namespace, name))
            }
        });
        f.file = name.and_then(|n| files.get(&n).cloned());
    }
    Ok(findings)
}

/// The human form: one block per finding with its location and fix, then a summary line.
pub fn render_text(findings: &[Finding]) -> String {
    let mut out = String::new();
    for f in findings {
        let field = f
            .field
            .as_deref()
            .map(|x| format!(" {x}"))
            .unwrap_or_default();
        let file = f
            .file
            .as_ref()
            .map(|p| format!(" ({})", p.display()))
            .unwrap_or_default();
        let namespace = if f.namespace.is_empty() {
            String::new()
        } else {
            format!(" in namespace {}", f.namespace)
        };
        out.push_str(&format!(
            "{}[{}] {}{namespace}{field}{file}\n    {}\n",
            f.severity, f.code, f.object, f.message
        ));
        if !f.fix.is_empty() {
            out.push_str(&format!("    fix: {}\n", f.fix));
        }
    }
    let count = |s| findings.iter().filter(|f| f.severity == s).count();
    out.push_str(&format!(
        "{} errors, {} warnings, {} info\n",
        count(Severity::Error),
        count(Severity::Warning),
        count(Severity::Info)
    ));
    out
}

/// Prints findings as text or as `{"findings": [...]}`; returns whether any is an error or a
/// warning (the command then exits with status 1).
pub fn print(findings: Vec<Finding>, json: bool, out: &mut dyn Write) -> Result<bool, CliError> {
    let bad = findings.iter().any(|f| f.severity != Severity::Info);
    if json {
        let text = serde_json::to_string_pretty(&Report { findings }).map_err(CliError::Json)?;
        writeln!(out, "{text}").map_err(CliError::Io)?;
    } else {
        write!(out, "{}", render_text(&findings)).map_err(CliError::Io)?;
    }
    Ok(bad)
}

/// `palisade lint --manifests DIR [--json]`.
pub fn lint(args: &LintArgs, out: &mut dyn Write, err: &mut dyn Write) -> Result<bool, CliError> {
    let findings = lint_dir(&args.manifests, err)?;
    print(findings, args.json, out)
}
