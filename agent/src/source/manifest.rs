//! The manifest-directory source: every `*.yaml`, `*.yml` and `*.json` file of a directory
//! (multi-document YAML, `List` objects), turned into model objects. Unknown kinds are skipped
//! with a note; malformed documents are reported with file and document index and the rest load.
use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use thiserror::Error;

use super::lenient;
use crate::model::{
    ClusterNetworkPolicy, ContainerPort, IntOrString, Labels, Model, ModelChange, Namespace,
    NetworkPolicy, Node, Pod, Protocol, Service, ServicePort, CLUSTER_POLICY_API_VERSION,
    CLUSTER_POLICY_KIND,
};

mod cluster_lenient;

/// What can go wrong loading manifests. Only [`ManifestError::ReadDir`] aborts a load; the others
/// are attached to a [`ManifestNote`].
#[derive(Debug, Error)]
pub enum ManifestError {
    #[error("cannot read directory {path}: {source}")]
    ReadDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read file: {0}")]
    ReadFile(std::io::Error),
    #[error("invalid YAML: {0}")]
    Yaml(serde_yaml::Error),
    #[error("invalid JSON: {0}")]
    Json(serde_json::Error),
    #[error("document is not an object with apiVersion and kind")]
    NotAnObject,
    #[error("{kind} {name}: field {field}: {reason}")]
    Field {
        kind: String,
        name: String,
        field: String,
        reason: String,
    },
    #[error("skipped {kind} {name}: kind not used by Palisade")]
    UnknownKind { kind: String, name: String },
}

/// A note about one document: skipped or malformed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ManifestNote {
    pub file: PathBuf,
    /// 0-based index of the document in the file (items of a `List` count as the List's).
    pub document: usize,
    /// True when the document (or part of it) could not be loaded; false for skipped kinds.
    pub malformed: bool,
    pub message: String,
}

/// A loaded directory.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    pub model: Model,
    pub notes: Vec<ManifestNote>,
}

/// Loads every manifest file of `dir` (not recursive), in file-name order.
pub fn load_dir(dir: &Path) -> Result<Loaded, ManifestError> {
    let read_dir = |source| ManifestError::ReadDir {
        path: dir.to_owned(),
        source,
    };
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(read_dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file() && is_manifest(p))
        .collect();
    files.sort();
    let mut loaded = Loaded::default();
    for file in files {
        let (changes, notes) = match fs::read_to_string(&file) {
            Ok(text) => load_str(&text, &file),
            Err(err) => (
                Vec::new(),
                vec![note(&file, 0, &ManifestError::ReadFile(err))],
            ),
        };
        for change in changes {
            loaded.model.apply(change);
        }
        loaded.notes.extend(notes);
    }
    Ok(loaded)
}

fn is_manifest(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

fn note(file: &Path, document: usize, error: &ManifestError) -> ManifestNote {
    ManifestNote {
        file: file.to_owned(),
        document,
        malformed: !matches!(error, ManifestError::UnknownKind { .. }),
        message: error.to_string(),
    }
}

/// Parses the text of one file (`file` names it in notes; `.json` selects the JSON parser).
pub fn load_str(text: &str, file: &Path) -> (Vec<ModelChange>, Vec<ManifestNote>) {
    let mut changes = Vec::new();
    let mut notes = Vec::new();
    let is_json = file.extension().is_some_and(|e| e == "json");
    let documents: Vec<Result<Value, ManifestError>> = if is_json {
        vec![serde_json::from_str(text).map_err(ManifestError::Json)]
    } else {
        yaml_documents(text)
    };
    for (index, doc) in documents.into_iter().enumerate() {
        match doc {
            Ok(Value::Null) => {}
            Ok(value) => load_value(&value, file, index, &mut changes, &mut notes),
            Err(err) => notes.push(note(file, index, &err)),
        }
    }
    (changes, notes)
}

/// The documents of a YAML stream, up to and including the first one that does not parse.
/// serde_yaml's document iterator never ends after a syntax error (it yields the same error
/// again and again: dtolnay/serde-yaml#193), so reading stops there: one malformed file must
/// not hang the agent or grow its memory without bound.
fn yaml_documents(text: &str) -> Vec<Result<Value, ManifestError>> {
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        match serde_yaml::Value::deserialize(doc) {
            Ok(yaml) => out.push(serde_json::to_value(yaml).map_err(ManifestError::Json)),
            Err(e) => {
                out.push(Err(ManifestError::Yaml(e)));
                break;
            }
        }
    }
    out
}

fn load_value(
    value: &Value,
    file: &Path,
    index: usize,
    changes: &mut Vec<ModelChange>,
    notes: &mut Vec<ManifestNote>,
) {
    let Some(kind) = value.get("kind").and_then(Value::as_str) else {
        notes.push(note(file, index, &ManifestError::NotAnObject));
        return;
    };
    if kind == "List" || kind.ends_with("List") {
        for item in value
            .get("items")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            load_value(item, file, index, changes, notes);
        }
        return;
    }
    if kind == "NetworkPolicy" {
        notes.extend(unreadable_notes(value).iter().map(|e| note(file, index, e)));
    }
    if kind == CLUSTER_POLICY_KIND {
        let unreadable = cluster_unreadable_notes(value);
        notes.extend(unreadable.iter().map(|e| note(file, index, e)));
    }
    match object(kind, value) {
        Ok(change) => changes.push(change),
        Err(err) => notes.push(note(file, index, &err)),
    }
}

/// Reads one object into a model change. The Kubernetes API source converts watched objects
/// through this too (as JSON), so both sources read every field the same way.
pub(crate) fn object(kind: &str, v: &Value) -> Result<ModelChange, ManifestError> {
    let name = str_at(v, &["metadata", "name"])
        .unwrap_or_default()
        .to_owned();
    let namespace = str_at(v, &["metadata", "namespace"])
        .unwrap_or("default")
        .to_owned();
    let ctx = Ctx { kind, name: &name };
    match kind {
        "Namespace" => Ok(ModelChange::UpsertNamespace(Namespace {
            annotations: palisade_annotations(v),
            ..Namespace::new(name.clone(), labels(v))
        })),
        "Pod" => pod(v, &ctx, namespace, name.clone()).map(ModelChange::UpsertPod),
        "Service" => service(v, &ctx, namespace, name.clone()).map(ModelChange::UpsertService),
        "NetworkPolicy" => {
            let api = v.get("apiVersion").and_then(Value::as_str).unwrap_or("");
            if api != "networking.k8s.io/v1" {
                return Err(ManifestError::UnknownKind {
                    kind: format!("{kind} ({api})"),
                    name,
                });
            }
            // Never dropped for a type error: what cannot be read fails closed (`lenient`).
            let (spec, _) = lenient::policy_spec(v.get("spec"));
            Ok(ModelChange::UpsertPolicy(NetworkPolicy {
                namespace,
                name,
                spec,
            }))
        }
        "Node" => {
            let addresses = v
                .pointer("/status/addresses")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|a| a.get("address").and_then(Value::as_str))
                .filter_map(|a| a.parse::<IpAddr>().ok())
                .collect();
            Ok(ModelChange::UpsertNode(Node {
                name,
                addresses,
                labels: labels(v),
            }))
        }
        "ClusterNetworkPolicy" => {
            cluster_policy(v, &ctx, name.clone()).map(ModelChange::UpsertClusterPolicy)
        }
        other => Err(ManifestError::UnknownKind {
            kind: other.to_owned(),
            name,
        }),
    }
}

/// The parts of a NetworkPolicy's spec that could not be read and what stands in for them.
fn unreadable_notes(v: &Value) -> Vec<ManifestError> {
    let name = str_at(v, &["metadata", "name"]).unwrap_or_default();
    let ctx = Ctx {
        kind: "NetworkPolicy",
        name,
    };
    let (_, unreadable) = lenient::policy_spec(v.get("spec"));
    unreadable
        .iter()
        .map(|u| ctx.field(&u.field, format!("{}; {}", u.reason, u.instead)))
        .collect()
}

struct Ctx<'a> {
    kind: &'a str,
    name: &'a str,
}

impl Ctx<'_> {
    fn field(&self, field: &str, reason: impl ToString) -> ManifestError {
        ManifestError::Field {
            kind: self.kind.to_owned(),
            name: self.name.to_owned(),
            field: field.to_owned(),
            reason: reason.to_string(),
        }
    }
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_str()
}

fn labels(v: &Value) -> Labels {
    let map = v.pointer("/metadata/labels").and_then(Value::as_object);
    map.into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
        .collect()
}

/// Palisade's own annotations (`palisade.dev/...`); the rest are not needed.
fn palisade_annotations(v: &Value) -> Labels {
    let map = v
        .pointer("/metadata/annotations")
        .and_then(Value::as_object);
    map.into_iter()
        .flatten()
        .filter(|(k, _)| k.starts_with("palisade.dev/"))
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
        .collect()
}

fn parse_ip(text: &str, ctx: &Ctx<'_>, field: &str) -> Result<IpAddr, ManifestError> {
    text.parse().map_err(|e| ctx.field(field, e))
}

fn protocol(v: &Value, ctx: &Ctx<'_>, field: &str) -> Result<Protocol, ManifestError> {
    match v.get("protocol").and_then(Value::as_str) {
        None => Ok(Protocol::Tcp),
        Some(p) => {
            Protocol::parse(p).ok_or_else(|| ctx.field(field, format!("unknown protocol {p:?}")))
        }
    }
}

fn port_number(v: Option<&Value>, ctx: &Ctx<'_>, field: &str) -> Result<u16, ManifestError> {
    let n = v
        .and_then(Value::as_i64)
        .ok_or_else(|| ctx.field(field, "missing or not a number"))?;
    u16::try_from(n)
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| ctx.field(field, format!("{n} is out of range 1-65535")))
}

fn pod(v: &Value, ctx: &Ctx<'_>, namespace: String, name: String) -> Result<Pod, ManifestError> {
    let mut ips = Vec::new();
    let listed = v
        .pointer("/status/podIPs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten();
    for (i, entry) in listed.enumerate() {
        if let Some(ip) = entry.get("ip").and_then(Value::as_str) {
            ips.push(parse_ip(ip, ctx, &format!("status.podIPs[{i}].ip"))?);
        }
    }
    if let Some(ip) = str_at(v, &["status", "podIP"]) {
        let ip = parse_ip(ip, ctx, "status.podIP")?;
        if !ips.contains(&ip) {
            ips.insert(0, ip);
        }
    }
    let mut container_ports = Vec::new();
    let containers = v
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten();
    for (c, container) in containers.enumerate() {
        let ports = container
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten();
        for (p, port) in ports.enumerate() {
            let field = format!("spec.containers[{c}].ports[{p}]");
            container_ports.push(ContainerPort {
                name: port.get("name").and_then(Value::as_str).map(str::to_owned),
                port: port_number(
                    port.get("containerPort"),
                    ctx,
                    &format!("{field}.containerPort"),
                )?,
                protocol: protocol(port, ctx, &format!("{field}.protocol"))?,
            });
        }
    }
    Ok(Pod {
        labels: labels(v),
        namespace,
        name,
        ips,
        node_name: str_at(v, &["spec", "nodeName"]).map(str::to_owned),
        host_network: v
            .pointer("/spec/hostNetwork")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        container_ports,
    })
}

fn service(
    v: &Value,
    ctx: &Ctx<'_>,
    namespace: String,
    name: String,
) -> Result<Service, ManifestError> {
    let mut cluster_ips = Vec::new();
    let listed = v
        .pointer("/spec/clusterIPs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten();
    let single = v.pointer("/spec/clusterIP").into_iter();
    for ip in listed.chain(single).filter_map(Value::as_str) {
        if ip != "None" && !ip.is_empty() {
            let ip = parse_ip(ip, ctx, "spec.clusterIPs")?;
            if !cluster_ips.contains(&ip) {
                cluster_ips.push(ip);
            }
        }
    }
    let selector = v
        .pointer("/spec/selector")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        });
    let mut ports = Vec::new();
    let listed = v
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten();
    for (i, p) in listed.enumerate() {
        let field = format!("spec.ports[{i}]");
        let port = port_number(p.get("port"), ctx, &format!("{field}.port"))?;
        let target_port = match p.get("targetPort") {
            None => IntOrString::Int(i64::from(port)),
            Some(Value::String(s)) => IntOrString::String(s.clone()),
            Some(other) => IntOrString::Int(other.as_i64().ok_or_else(|| {
                ctx.field(&format!("{field}.targetPort"), "not a number or name")
            })?),
        };
        ports.push(ServicePort {
            name: p.get("name").and_then(Value::as_str).map(str::to_owned),
            protocol: protocol(p, ctx, &format!("{field}.protocol"))?,
            port,
            target_port,
        });
    }
    Ok(Service {
        namespace,
        name,
        cluster_ips,
        selector,
        ports,
    })
}

/// A `policy.networking.k8s.io/v1alpha2` ClusterNetworkPolicy: cluster-scoped, so
/// `metadata.namespace` is ignored. Other versions of the kind are skipped with a note.
fn cluster_policy(
    v: &Value,
    ctx: &Ctx<'_>,
    name: String,
) -> Result<ClusterNetworkPolicy, ManifestError> {
    let api = v.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    if api != CLUSTER_POLICY_API_VERSION {
        return Err(ManifestError::UnknownKind {
            kind: format!("{} ({api})", ctx.kind),
            name,
        });
    }
    // Never dropped for a type error: an unreadable rule fails closed (`cluster_lenient`).
    let (spec, _) = cluster_lenient::cluster_spec(v.get("spec"));
    Ok(ClusterNetworkPolicy { name, spec })
}

/// The parts of a ClusterNetworkPolicy's spec that could not be read and what stands in for
/// them (none for other versions of the kind, which are skipped with their own note).
fn cluster_unreadable_notes(v: &Value) -> Vec<ManifestError> {
    if v.get("apiVersion").and_then(Value::as_str) != Some(CLUSTER_POLICY_API_VERSION) {
        return Vec::new();
    }
    let name = str_at(v, &["metadata", "name"]).unwrap_or_default();
    let ctx = Ctx {
        kind: CLUSTER_POLICY_KIND,
        name,
    };
    let (_, unreadable) = cluster_lenient::cluster_spec(v.get("spec"));
    unreadable
        .iter()
        .map(|u| ctx.field(&u.field, format!("{}; {}", u.reason, u.instead)))
        .collect()
}
