//! What the agent reads: the shared manifest directory (Namespaces, Pods, Services,
//! NetworkPolicies, ClusterNetworkPolicies, one JSON object per file, then `.revision`) and
//! each node's endpoints
//! directory (`<ns>_<name>.json`, as the chained CNI plugin would report). Every file is
//! written to a temporary name and renamed, so the agent never reads half a file.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::world::{PodState, World};

/// Rendering or writing the files failed.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("pod {0} is in the case but was not created")]
    NoRuntime(String),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot remove {path}: {source}")]
    Remove {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What the harness made of a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodRuntime {
    /// The node it runs on (`spec.nodeName`, the agent's `--node`).
    pub node_name: String,
    /// Its IPs, IPv4 first.
    pub ips: Vec<IpAddr>,
    /// Its Service's ClusterIPs, IPv4 first.
    pub cluster_ips: Vec<IpAddr>,
    /// The host end of its veth, in the node namespace.
    pub host_veth: String,
}

/// Pod key → runtime facts.
pub type Runtime = BTreeMap<String, PodRuntime>;

/// The Service name upstream gives a pod's Service.
pub fn service_name(pod: &PodState) -> String {
    format!("s-{}-{}", pod.namespace, pod.name)
}

/// Every manifest file (name → object) for the world. Policies are written as the world holds
/// them (templates were filled in when the policy was created or updated).
pub fn render(world: &World, runtime: &Runtime) -> Result<BTreeMap<String, Value>, ManifestError> {
    let mut files = BTreeMap::new();
    for (name, labels) in &world.namespaces {
        let ns = json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": labels}});
        files.insert(format!("namespace_{name}.json"), ns);
    }
    for (key, pod) in &world.pods {
        let rt = runtime
            .get(key)
            .ok_or_else(|| ManifestError::NoRuntime(key.clone()))?;
        let file = format!("{}_{}.json", pod.namespace, pod.name);
        files.insert(format!("pod_{file}"), pod_manifest(pod, rt));
        files.insert(format!("service_{file}"), service_manifest(pod, rt));
    }
    for ((ns, name), policy) in &world.policies {
        files.insert(
            format!("policy_{ns}_{name}.json"),
            policy_manifest(ns, policy.clone()),
        );
    }
    // Cluster-scoped: written as the case gives it, one document per file.
    for (name, policy) in &world.cluster_policies {
        files.insert(format!("clusterpolicy_{name}.json"), policy.clone());
    }
    Ok(files)
}

fn pod_manifest(pod: &PodState, rt: &PodRuntime) -> Value {
    let ports: Vec<Value> = pod
        .ports
        .iter()
        .map(|p| serde_json::to_value(p).unwrap_or(Value::Null))
        .collect();
    let ips: Vec<Value> = rt.ips.iter().map(|ip| json!({"ip": ip})).collect();
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": pod.name, "namespace": pod.namespace, "labels": pod.labels},
        "spec": {"nodeName": rt.node_name,
                 "containers": [{"name": "server", "ports": ports}]},
        "status": {"phase": "Running", "podIP": rt.ips.first(), "podIPs": ips}})
}

fn service_manifest(pod: &PodState, rt: &PodRuntime) -> Value {
    let ports: Vec<Value> = pod
        .served_ports()
        .map(|p| {
            let name = format!(
                "{}-{}",
                p.protocol.to_string().to_lowercase(),
                p.container_port
            );
            json!({"name": name, "protocol": p.protocol, "port": p.container_port,
                   "targetPort": p.container_port})
        })
        .collect();
    let families: Vec<&str> = rt
        .cluster_ips
        .iter()
        .map(|ip| if ip.is_ipv4() { "IPv4" } else { "IPv6" })
        .collect();
    let mut spec = json!({"type": "ClusterIP", "clusterIP": rt.cluster_ips.first(),
        "clusterIPs": rt.cluster_ips, "ipFamilies": families, "ports": ports});
    if !pod.labels.is_empty() {
        spec["selector"] = json!(pod.labels);
    }
    json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": service_name(pod), "namespace": pod.namespace}, "spec": spec})
}

/// The policy as the case gives it, with `metadata.namespace` set as the API server would.
fn policy_manifest(ns: &str, mut policy: Value) -> Value {
    if let Some(meta) = policy.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.entry("namespace").or_insert_with(|| json!(ns));
    }
    policy
}

/// The endpoint files (name → object) of the pods on one node.
pub fn render_endpoints(world: &World, runtime: &Runtime, node: &str) -> BTreeMap<String, Value> {
    world
        .pods
        .iter()
        .filter_map(|(key, pod)| {
            let rt = runtime.get(key).filter(|rt| rt.node_name == node)?;
            let file = format!("{}_{}.json", pod.namespace, pod.name);
            let body = json!({"namespace": pod.namespace, "name": pod.name,
                              "ifname": rt.host_veth, "ips": rt.ips});
            Some((file, body))
        })
        .collect()
}

/// A directory whose files are kept equal to a desired set, remembering what it wrote.
#[derive(Debug)]
pub struct DirWriter {
    dir: PathBuf,
    written: BTreeMap<String, String>,
}

impl DirWriter {
    /// Takes over `dir` (created if missing; expected empty).
    pub fn new(dir: PathBuf) -> Result<Self, ManifestError> {
        std::fs::create_dir_all(&dir).map_err(|source| ManifestError::Write {
            path: dir.clone(),
            source,
        })?;
        Ok(DirWriter {
            dir,
            written: BTreeMap::new(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Writes new and changed files, removes files no longer wanted. Returns whether
    /// anything changed.
    pub fn sync(&mut self, files: &BTreeMap<String, Value>) -> Result<bool, ManifestError> {
        let mut changed = false;
        for (name, value) in files {
            let text = serde_json::to_string_pretty(value).unwrap_or_default();
            if self.written.get(name) != Some(&text) {
                write_atomic(&self.dir, name, &text)?;
                self.written.insert(name.clone(), text);
                changed = true;
            }
        }
        let gone: Vec<String> = self
            .written
            .keys()
            .filter(|n| !files.contains_key(*n))
            .cloned()
            .collect();
        for name in gone {
            let path = self.dir.join(&name);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(ManifestError::Remove { path, source }),
            }
            self.written.remove(&name);
            changed = true;
        }
        Ok(changed)
    }
}

/// Writes `dir/name` through a hidden temporary file (`.name.tmp`, which no reader picks up)
/// and a rename.
pub fn write_atomic(dir: &Path, name: &str, text: &str) -> Result<(), ManifestError> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let path = dir.join(name);
    let err = |path: &Path| {
        let path = path.to_owned();
        move |source| ManifestError::Write { path, source }
    };
    std::fs::write(&tmp, text).map_err(err(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(err(&path))
}

/// Writes `.revision` (last, after every manifest change).
pub fn write_revision(dir: &Path, revision: u64) -> Result<(), ManifestError> {
    write_atomic(dir, ".revision", &format!("{revision}\n"))
}
