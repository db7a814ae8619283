//! The runner's blocking API client: objects applied server-side (as `kubectl apply
//! --server-side` would), pod status written as the kubelet does, deletions followed to their
//! end, and every write's `resourceVersion` returned, so that the runner can wait until each
//! agent's model holds it.
//!
//! All four kinds go through one dynamic path (`DynamicObject` with the kind's `ApiResource`):
//! the runner holds its objects as JSON.

use std::path::Path;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use k8s_openapi::api::{
    core::v1::{Namespace, Pod, Service},
    networking::v1::NetworkPolicy,
};
use kube::{
    api::{
        ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
        WatchEvent, WatchParams,
    },
    config::{KubeConfigOptions, Kubeconfig},
    Api, Client, Config,
};
use serde_json::{json, Value};

use super::KubeFeedError;

/// The field manager of every write.
const MANAGER: &str = "palisade-conformance";

/// The kinds the runner writes, in the order they are created (deleted in reverse).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Namespace,
    Pod,
    Service,
    NetworkPolicy,
}

impl Kind {
    pub const ALL: [Kind; 4] = [
        Kind::Namespace,
        Kind::Pod,
        Kind::Service,
        Kind::NetworkPolicy,
    ];

    /// From an object's `kind`.
    pub fn from_kind(kind: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == kind)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Namespace => "Namespace",
            Kind::Pod => "Pod",
            Kind::Service => "Service",
            Kind::NetworkPolicy => "NetworkPolicy",
        }
    }

    /// The key of this kind in the agent's status (`kube.resources.<key>`).
    pub fn health_key(self) -> &'static str {
        match self {
            Kind::Namespace => "namespaces",
            Kind::Pod => "pods",
            Kind::Service => "services",
            Kind::NetworkPolicy => "networkpolicies",
        }
    }

    fn resource(self) -> ApiResource {
        match self {
            Kind::Namespace => ApiResource::erase::<Namespace>(&()),
            Kind::Pod => ApiResource::erase::<Pod>(&()),
            Kind::Service => ApiResource::erase::<Service>(&()),
            Kind::NetworkPolicy => ApiResource::erase::<NetworkPolicy>(&()),
        }
    }
}

/// One API object the runner owns.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjRef {
    pub kind: Kind,
    /// Empty for namespaces.
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for ObjRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind.as_str(), self.name)
        } else {
            write!(f, "{} {}/{}", self.kind.as_str(), self.namespace, self.name)
        }
    }
}

/// A `resourceVersion` as the number it is with etcd behind the API server (the runner owns
/// that server; the agents' status reports the same numbers).
pub fn version_of(object: &Value) -> Option<u64> {
    object
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .and_then(|v| v.parse().ok())
}

/// A connected client with its own single-threaded runtime; every call blocks.
pub struct ApiClient {
    rt: tokio::runtime::Runtime,
    client: Client,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient").finish_non_exhaustive()
    }
}

impl ApiClient {
    pub fn connect(kubeconfig: &Path) -> Result<Self, KubeFeedError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(KubeFeedError::Runtime)?;
        let kc = Kubeconfig::read_from(kubeconfig)?;
        let client = rt.block_on(async {
            let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
            Ok::<_, KubeFeedError>(Client::try_from(config)?)
        })?;
        Ok(Self { rt, client })
    }

    fn api(&self, kind: Kind, namespace: &str) -> Api<DynamicObject> {
        let ar = kind.resource();
        if namespace.is_empty() {
            Api::all_with(self.client.clone(), &ar)
        } else {
            Api::namespaced_with(self.client.clone(), namespace, &ar)
        }
    }

    /// Applies `object` server-side (forcing ownership) and returns it as stored.
    pub fn apply(&self, r: &ObjRef, object: &Value) -> Result<Value, KubeFeedError> {
        let api = self.api(r.kind, &r.namespace);
        let params = PatchParams::apply(MANAGER).force();
        let stored = self
            .rt
            .block_on(api.patch(&r.name, &params, &Patch::Apply(object)))
            .map_err(|e| KubeFeedError::write(r, "apply", e))?;
        Ok(serde_json::to_value(stored)?)
    }

    /// Creates `object`, or replaces it if it exists (`kubectl create`, then `kubectl
    /// replace`), and returns it as stored. Unlike a server-side apply, which refuses a field
    /// the server's schema lacks, these calls store the object without it, as a 1.20 server
    /// does with `endPort` from any client that is not applying server-side.
    pub fn create_or_replace(&self, r: &ObjRef, object: &Value) -> Result<Value, KubeFeedError> {
        let api = self.api(r.kind, &r.namespace);
        let obj: DynamicObject = serde_json::from_value(object.clone())?;
        let pp = PostParams::default();
        let stored = self
            .rt
            .block_on(async {
                match api.create(&pp, &obj).await {
                    Err(kube::Error::Api(s)) if s.code == 409 => {
                        api.replace(&r.name, &pp, &obj).await
                    }
                    other => other,
                }
            })
            .map_err(|e| KubeFeedError::write(r, "create or replace", e))?;
        Ok(serde_json::to_value(stored)?)
    }

    /// Writes a pod's status through the status subresource, as the kubelet does once the
    /// sandbox has its IPs; returns the pod as stored.
    pub fn pod_status(&self, r: &ObjRef, status: &Value) -> Result<Value, KubeFeedError> {
        let api = self.api(Kind::Pod, &r.namespace);
        let patch = json!({ "status": status });
        let stored = self
            .rt
            .block_on(api.patch_status(&r.name, &PatchParams::default(), &Patch::Merge(&patch)))
            .map_err(|e| KubeFeedError::write(r, "write status of", e))?;
        Ok(serde_json::to_value(stored)?)
    }

    /// Deletes an object at once (zero grace period: no kubelet would confirm a graceful
    /// deletion) and follows a watch until it is gone (a namespace: until its controller has
    /// finalized it). Returns the deletion's resourceVersion; `None` if it did not exist.
    pub fn delete(&self, r: &ObjRef, timeout: Duration) -> Result<Option<u64>, KubeFeedError> {
        let api = self.api(r.kind, &r.namespace);
        let deadline = Instant::now() + timeout;
        self.rt.block_on(async {
            // Watch from now (a fresh version: an object's own can be older than compaction).
            let now = api
                .list(&ListParams::default().limit(1))
                .await
                .map_err(|e| KubeFeedError::write(r, "list", e))?
                .metadata
                .resource_version
                .unwrap_or_default();
            let dp = DeleteParams::default().grace_period(0);
            match api.delete(&r.name, &dp).await {
                Err(kube::Error::Api(s)) if s.code == 404 => return Ok(None),
                Err(e) => return Err(KubeFeedError::write(r, "delete", e)),
                Ok(_) => {}
            }
            follow_deletion(&api, r, &now, deadline).await.map(Some)
        })
    }
}

/// Watches `r` from `version` until its Deleted event; returns that event's resourceVersion.
async fn follow_deletion(
    api: &Api<DynamicObject>,
    r: &ObjRef,
    version: &str,
    deadline: Instant,
) -> Result<u64, KubeFeedError> {
    let gone = |why: String| KubeFeedError::NotDeleted {
        object: r.to_string(),
        why,
    };
    let mut from = version.to_owned();
    loop {
        let left = deadline.saturating_duration_since(Instant::now()).as_secs();
        if left == 0 {
            return Err(gone("timed out".into()));
        }
        let wp = WatchParams::default()
            .fields(&format!("metadata.name={}", r.name))
            .timeout(u32::try_from(left).unwrap_or(u32::MAX));
        let stream = api
            .watch(&wp, &from)
            .await
            .map_err(|e| KubeFeedError::write(r, "watch", e))?;
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event.map_err(|e| KubeFeedError::write(r, "watch", e))? {
                WatchEvent::Deleted(obj) => {
                    let value = serde_json::to_value(obj)?;
                    return version_of(&value).ok_or_else(|| gone("no resourceVersion".into()));
                }
                WatchEvent::Added(obj) | WatchEvent::Modified(obj) => {
                    from = obj.metadata.resource_version.unwrap_or(from);
                }
                WatchEvent::Bookmark(b) => from = b.metadata.resource_version,
                WatchEvent::Error(e) => return Err(gone(e.message)),
            }
        }
    }
}

/// The paths of fields `sent` has and `stored` lacks (`spec.ingress[0].ports[0].endPort`):
/// what the API server dropped because it does not know them. Fields the server added
/// (defaults) and values it normalized are not reported.
pub fn dropped_fields(sent: &Value, stored: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk(sent, stored, String::new(), &mut out);
    out
}

fn walk(sent: &Value, stored: &Value, path: String, out: &mut Vec<String>) {
    match (sent, stored) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match b.get(k) {
                    // `null` and empty values are as good as absent in what was sent.
                    None if !is_empty(v) => out.push(p),
                    None => {}
                    Some(w) => walk(v, w, p, out),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, (v, w)) in a.iter().zip(b).enumerate() {
                walk(v, w, format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_fields_are_the_ones_the_server_lost() {
        let sent = json!({"spec": {"podSelector": {}, "ingress": [
            {"ports": [{"port": 80, "endPort": 90}], "from": []}]}});
        let stored = json!({"metadata": {"resourceVersion": "5"},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"], "ingress": [
            {"ports": [{"port": 80, "protocol": "TCP"}]}]}});
        assert_eq!(
            dropped_fields(&sent, &stored),
            vec!["spec.ingress[0].ports[0].endPort".to_owned()]
        );
        assert!(dropped_fields(&stored, &stored).is_empty());
        assert_eq!(version_of(&stored), Some(5));
    }
}
