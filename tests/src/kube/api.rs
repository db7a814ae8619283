//! A blocking client for tests and the conformance runner: objects are applied server-side
//! (field manager `palisade-tests`), as `kubectl apply --server-side` would, and pod status is
//! written through the status subresource, as the kubelet does once a sandbox has its IPs.
//!
//! A 1.20 API server has no kubelet or scheduler here: pods name their node themselves
//! (`spec.nodeName`), stay `Pending` until [`TestApi::pod_status`] says otherwise, and are
//! deleted with a zero grace period (nobody would confirm a graceful deletion).

use std::{net::IpAddr, path::Path, time::Duration};

use k8s_openapi::api::{
    core::v1::{Namespace, Pod, Service},
    networking::v1::NetworkPolicy,
};
use kube::{
    api::{DeleteParams, ListParams, Patch, PatchParams},
    config::{KubeConfigOptions, Kubeconfig},
    Api, Client, Config,
};
use serde_json::{json, Value};

/// Errors of the test client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("starting the client runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("object without {0}")]
    Incomplete(&'static str),
    #[error("kind {0} is not one the test client handles")]
    Kind(String),
    #[error("namespace {0} still exists after {1:?}")]
    NamespaceStuck(String, Duration),
}

const MANAGER: &str = "palisade-tests";
const PAUSE_IMAGE: &str = "registry.k8s.io/pause:3.9";

/// A connected client with its own runtime; every call blocks until the API answered.
pub struct TestApi {
    rt: tokio::runtime::Runtime,
    client: Client,
}

impl std::fmt::Debug for TestApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestApi").finish_non_exhaustive()
    }
}

fn labels(pairs: &[(&str, &str)]) -> Value {
    Value::Object(
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), json!(v)))
            .collect(),
    )
}

impl TestApi {
    /// Connects with a kubeconfig file (such as [`super::ControlPlane::kubeconfig`]).
    pub fn connect(kubeconfig: &Path) -> Result<Self, ApiError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(ApiError::Runtime)?;
        let kc = Kubeconfig::read_from(kubeconfig)?;
        let client = rt.block_on(async {
            let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
            Ok::<_, ApiError>(Client::try_from(config)?)
        })?;
        Ok(Self { rt, client })
    }

    /// The underlying client (for calls this helper does not wrap; run them on your runtime).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Applies a whole object (`apiVersion`, `kind`, `metadata.name`, and `metadata.namespace`
    /// for namespaced kinds): Namespace, Pod, Service or NetworkPolicy.
    pub fn apply(&self, object: &Value) -> Result<(), ApiError> {
        let kind = object["kind"]
            .as_str()
            .ok_or(ApiError::Incomplete("kind"))?;
        let name = object["metadata"]["name"]
            .as_str()
            .ok_or(ApiError::Incomplete("metadata.name"))?;
        let ns = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default");
        let params = PatchParams::apply(MANAGER).force();
        let patch = Patch::Apply(object);
        let c = self.client.clone();
        self.rt.block_on(async {
            match kind {
                "Namespace" => drop(
                    Api::<Namespace>::all(c)
                        .patch(name, &params, &patch)
                        .await?,
                ),
                "Pod" => drop(
                    Api::<Pod>::namespaced(c, ns)
                        .patch(name, &params, &patch)
                        .await?,
                ),
                "Service" => drop(
                    Api::<Service>::namespaced(c, ns)
                        .patch(name, &params, &patch)
                        .await?,
                ),
                "NetworkPolicy" => drop(
                    Api::<NetworkPolicy>::namespaced(c, ns)
                        .patch(name, &params, &patch)
                        .await?,
                ),
                other => return Err(ApiError::Kind(other.to_owned())),
            }
            Ok(())
        })
    }

    /// Creates or relabels a namespace.
    pub fn namespace(&self, name: &str, label_pairs: &[(&str, &str)]) -> Result<(), ApiError> {
        self.apply(&json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": labels(label_pairs)}}))
    }

    /// Creates or relabels a pod bound to `node`, with one container exposing `ports`
    /// (port, protocol, optional name).
    pub fn pod(
        &self,
        ns: &str,
        name: &str,
        node: &str,
        label_pairs: &[(&str, &str)],
        ports: &[(u16, &str, Option<&str>)],
    ) -> Result<(), ApiError> {
        let ports: Vec<Value> = ports
            .iter()
            .map(|(port, proto, pname)| {
                let mut p = json!({"containerPort": port, "protocol": proto});
                if let Some(n) = pname {
                    p["name"] = json!(n);
                }
                p
            })
            .collect();
        self.apply(&json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"namespace": ns, "name": name, "labels": labels(label_pairs)},
            "spec": {"nodeName": node, "containers": [
                {"name": "c", "image": PAUSE_IMAGE, "ports": ports}]}}))
    }

    /// Writes the pod's status as the kubelet does: phase, `podIP` and `podIPs`.
    pub fn pod_status(
        &self,
        ns: &str,
        name: &str,
        ips: &[IpAddr],
        phase: &str,
    ) -> Result<(), ApiError> {
        let pod_ips: Vec<Value> = ips.iter().map(|ip| json!({"ip": ip.to_string()})).collect();
        let status = json!({"status": {"phase": phase,
            "podIP": ips.first().map(ToString::to_string), "podIPs": pod_ips}});
        let api = Api::<Pod>::namespaced(self.client.clone(), ns);
        self.rt.block_on(async {
            api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
                .await
        })?;
        Ok(())
    }

    /// Creates or replaces a ClusterIP Service (`ports` as port, protocol, targetPort).
    pub fn service(
        &self,
        ns: &str,
        name: &str,
        cluster_ips: &[IpAddr],
        selector: &[(&str, &str)],
        ports: &[(u16, &str, u16)],
    ) -> Result<(), ApiError> {
        let ports: Vec<Value> = ports
            .iter()
            .enumerate()
            .map(|(i, (port, proto, target))| {
                json!({"name": format!("p{i}"), "port": port, "protocol": proto, "targetPort": target})
            })
            .collect();
        let ips: Vec<String> = cluster_ips.iter().map(ToString::to_string).collect();
        let mut spec = json!({"selector": labels(selector), "ports": ports});
        if let Some(first) = ips.first() {
            spec["clusterIP"] = json!(first);
            spec["clusterIPs"] = json!(ips);
            if ips.len() > 1 {
                spec["ipFamilyPolicy"] = json!("RequireDualStack");
            }
        }
        self.apply(&json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"namespace": ns, "name": name}, "spec": spec}))
    }

    /// Creates or replaces a NetworkPolicy with `spec`.
    pub fn policy(&self, ns: &str, name: &str, spec: Value) -> Result<(), ApiError> {
        self.apply(
            &json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"namespace": ns, "name": name}, "spec": spec}),
        )
    }

    /// Deletes an object at once (zero grace period); a missing object is not an error.
    pub fn delete(&self, kind: &str, ns: &str, name: &str) -> Result<(), ApiError> {
        let dp = DeleteParams::default().grace_period(0);
        let c = self.client.clone();
        let result = self.rt.block_on(async {
            match kind {
                "Namespace" => Api::<Namespace>::all(c).delete(name, &dp).await.map(drop),
                "Pod" => Api::<Pod>::namespaced(c, ns)
                    .delete(name, &dp)
                    .await
                    .map(drop),
                "Service" => Api::<Service>::namespaced(c, ns)
                    .delete(name, &dp)
                    .await
                    .map(drop),
                "NetworkPolicy" => Api::<NetworkPolicy>::namespaced(c, ns)
                    .delete(name, &dp)
                    .await
                    .map(drop),
                other => return Err(ApiError::Kind(other.to_owned())),
            }
            .map_err(ApiError::from)
        });
        match result {
            Err(ApiError::Kube(kube::Error::Api(s))) if s.code == 404 => Ok(()),
            other => other,
        }
    }

    /// The reasons of the events (events.k8s.io) about the object called `name`, oldest first.
    pub fn event_reasons(&self, ns: &str, name: &str) -> Result<Vec<String>, ApiError> {
        let api = Api::<k8s_openapi::api::events::v1::Event>::namespaced(self.client.clone(), ns);
        let list = self.rt.block_on(api.list(&ListParams::default()))?;
        Ok(list
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .filter_map(|e| e.reason)
            .collect())
    }

    /// Deletes a namespace and waits until it is gone. Its pods are deleted first with a zero
    /// grace period: with no kubelet, a graceful pod deletion would never finish, and neither
    /// would the namespace's.
    pub fn delete_namespace(&self, name: &str, timeout: Duration) -> Result<(), ApiError> {
        let pods = Api::<Pod>::namespaced(self.client.clone(), name);
        let dp = DeleteParams::default().grace_period(0);
        self.rt
            .block_on(async { pods.delete_collection(&dp, &ListParams::default()).await })?;
        self.delete("Namespace", "", name)?;
        let namespaces = Api::<Namespace>::all(self.client.clone());
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if self.rt.block_on(namespaces.get_opt(name))?.is_none() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(ApiError::NamespaceStuck(name.to_owned(), timeout))
    }
}
