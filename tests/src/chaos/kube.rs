//! The chaos environment through the Kubernetes API (`chaos --source kube`): a loopback
//! control plane (etcd, kube-apiserver), relayed into each node's namespace, the agents on
//! `--source kube`, and every object — namespace, pods with the status a kubelet would write,
//! Services, policies and the flip — written through the API. Scenario (c) stops the API
//! server and starts it again on the same port with the same etcd data.
//!
//! An agent has applied what was written when its status shows the API source synced, the
//! generation it reports as applied is the source's current one, and for each kind written the
//! source's model holds at least the resourceVersion of the last write (the versions of one
//! kind arrive in order on its watch).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::{core::v1::Pod as ApiPod, networking::v1::NetworkPolicy};
use kube::{
    config::{KubeConfigOptions, Kubeconfig},
    Api, Client, Config, Resource,
};
use serde_json::Value;

use super::ChaosError;
use crate::kube::{Binaries, ControlPlane, LoopbackForward, TestApi};
use crate::{IpFamily, Pod, TestCluster};

fn api_err(what: &str) -> impl FnOnce(crate::kube::ApiError) -> ChaosError + '_ {
    move |e| ChaosError::Kube(format!("{what}: {e}"))
}

fn kube_err(what: &str) -> impl FnOnce(kube::Error) -> ChaosError + '_ {
    move |e| ChaosError::Kube(format!("{what}: {e}"))
}

/// The control plane, a client, and the relays into the node namespaces. Field order is
/// teardown order: relays, clients, then the control plane.
pub struct KubeBackend {
    _relays: Vec<LoopbackForward>,
    pub api: TestApi,
    rt: tokio::runtime::Runtime,
    client: Client,
    cp: ControlPlane,
    /// The resourceVersion of the last write per watched resource (`pods`, `networkpolicies`).
    pub want: BTreeMap<&'static str, u64>,
}

impl std::fmt::Debug for KubeBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeBackend")
            .field("want", &self.want)
            .finish_non_exhaustive()
    }
}

impl KubeBackend {
    /// Starts the control plane (on this thread, which owns it) and relays it into every node.
    pub fn start(cluster: &TestCluster, nodes: usize) -> Result<Self, ChaosError> {
        let bins = Binaries::locate().map_err(|e| ChaosError::Kube(e.to_string()))?;
        let parent = std::env::temp_dir();
        crate::kube::cleanup_stale(&parent);
        let cp = ControlPlane::start(&bins, &parent)
            .map_err(|e| ChaosError::Kube(format!("control plane: {e}")))?;
        let api = TestApi::connect(&cp.kubeconfig()).map_err(api_err("client"))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ChaosError::Io(format!("runtime: {e}")))?;
        let kc = Kubeconfig::read_from(cp.kubeconfig())
            .map_err(|e| ChaosError::Kube(format!("kubeconfig: {e}")))?;
        let client = rt
            .block_on(async {
                let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                    .await
                    .map_err(|e| e.to_string())?;
                Client::try_from(config).map_err(|e| e.to_string())
            })
            .map_err(ChaosError::Kube)?;
        let relays = (0..nodes)
            .map(|n| cp.forward_into(cluster.node(n).netns_name()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ChaosError::Kube(format!("relay: {e}")))?;
        Ok(Self {
            _relays: relays,
            api,
            rt,
            client,
            cp,
            want: BTreeMap::new(),
        })
    }

    /// The agent flags that point it at this API server.
    pub fn agent_args(&self) -> Vec<String> {
        vec![
            "--source".into(),
            "kube".into(),
            "--kubeconfig".into(),
            self.cp.kubeconfig().display().to_string(),
        ]
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.cp.kubeconfig()
    }

    /// Creates the namespace.
    pub fn namespace(&self, name: &str) -> Result<(), ChaosError> {
        self.api.namespace(name, &[]).map_err(api_err("namespace"))
    }

    /// Creates `pod` bound to its node with `labels`, then writes its status (phase Running,
    /// its IPs) as the kubelet does.
    pub fn pod(
        &mut self,
        pod: &Pod,
        node: &str,
        labels: &[(&str, &str)],
    ) -> Result<(), ChaosError> {
        let ports: Vec<(u16, &str, Option<&str>)> = pod
            .ports()
            .iter()
            .map(|p| (p.port, "TCP", p.name.as_deref()))
            .collect();
        let what = format!("pod {}", pod.key());
        self.api
            .pod(pod.namespace(), pod.name(), node, labels, &ports)
            .map_err(api_err(&what))?;
        self.api
            .pod_status(pod.namespace(), pod.name(), pod.ips(), "Running")
            .map_err(api_err(&what))?;
        let version = self.version::<ApiPod>(pod.namespace(), pod.name())?;
        self.written("pods", version);
        Ok(())
    }

    /// Creates a ClusterIP Service selecting `app=<selector>` on `ports` (port == targetPort).
    pub fn service(
        &self,
        name: &str,
        cluster: &TestCluster,
        selector: &str,
        ports: &[u16],
    ) -> Result<(), ChaosError> {
        let svc = cluster
            .service("x", name)
            .ok_or_else(|| ChaosError::Kube(format!("no service {name}")))?;
        let ips: Vec<_> = svc.cluster_ip(IpFamily::Ipv4).into_iter().collect();
        let ports: Vec<(u16, &str, u16)> = ports.iter().map(|p| (*p, "TCP", *p)).collect();
        self.api
            .service("x", name, &ips, &[("app", selector)], &ports)
            .map_err(api_err("service"))
    }

    /// Creates or replaces a policy (a whole NetworkPolicy object).
    pub fn policy(&mut self, object: &Value) -> Result<(), ChaosError> {
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        self.api.apply(object).map_err(api_err("policy"))?;
        let version = self.version::<NetworkPolicy>("x", name)?;
        self.written("networkpolicies", version);
        Ok(())
    }

    /// The flip: deletes `remove` first, then writes `object`, so that there is never a moment
    /// with both (the in-between state allows less than either).
    pub fn replace_policy(&mut self, remove: &str, object: &Value) -> Result<(), ChaosError> {
        self.api
            .delete("NetworkPolicy", "x", remove)
            .map_err(api_err("delete policy"))?;
        // Created after the deletion, so its version is higher: an agent holding it has seen
        // the deletion too.
        self.policy(object)
    }

    /// The current resourceVersion of one object.
    fn version<K>(&self, ns: &str, name: &str) -> Result<u64, ChaosError>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let api: Api<K> = Api::namespaced(self.client.clone(), ns);
        let obj = self
            .rt
            .block_on(api.get(name))
            .map_err(kube_err("reading a resourceVersion"))?;
        obj.meta()
            .resource_version
            .as_deref()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| ChaosError::Kube(format!("{name} has no numeric resourceVersion")))
    }

    fn written(&mut self, resource: &'static str, version: u64) {
        let want = self.want.entry(resource).or_default();
        *want = (*want).max(version);
    }

    /// Whether an agent's status shows every write applied.
    pub fn applied(&self, status: &Value) -> bool {
        let kube = &status["kube"];
        let current = kube["synced"].as_bool() == Some(true)
            && kube["generation"].as_u64().is_some()
            && kube["generation"] == status["applied_revision"];
        current
            && self.want.iter().all(|(kind, want)| {
                kube["resources"][kind]["resource_version"]
                    .as_u64()
                    .is_some_and(|have| have >= *want)
            })
    }

    /// Stops the API server (SIGTERM, reaped); etcd keeps the data.
    pub fn stop_apiserver(&mut self) {
        self.cp.stop_apiserver();
    }

    /// Starts the API server again on the same port; returns once it is ready.
    pub fn start_apiserver(&mut self) -> Result<(), ChaosError> {
        self.cp
            .start_apiserver()
            .map_err(|e| ChaosError::Kube(format!("restarting the API server: {e}")))
    }

    /// The control plane's directory (logs).
    pub fn dir(&self) -> &Path {
        self.cp.dir()
    }
}
