//! The environment of the update-latency bench for one source: two test nodes, a client pod
//! on node 0 and a server pod on node 1 behind a default-deny ingress policy plus a policy
//! allowing the client, and the real agent on each node reading the manifest directory or the
//! Kubernetes API (a loopback API server, reached from the node namespaces through a relay).

use std::{path::PathBuf, time::Duration};

use anyhow::Context as _;
use palisade_tests::{
    agent::{node_name, pod_manifest, AgentProcess, Manifests},
    kube::{Binaries, ControlPlane, LoopbackForward, TestApi},
    CniMode, Family, Pod, Port, TestCluster,
};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(60);

/// Where the agents read the cluster from.
pub enum Source {
    Manifests(Manifests),
    Kube(Box<Kube>),
}

/// The API source's parts.
pub struct Kube {
    api: TestApi,
    // Dropped before the control plane (declaration order).
    _relays: Vec<LoopbackForward>,
    _cp: ControlPlane,
}

pub struct Env {
    pub agents: Vec<AgentProcess>,
    pub client: Pod,
    pub server: Pod,
    pub source: Source,
    _cluster: TestCluster,
    dir: PathBuf,
}

impl Drop for Env {
    fn drop(&mut self) {
        self.agents.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn deny_spec() -> Value {
    json!({"podSelector":{"matchLabels":{"app":"server"}},"policyTypes":["Ingress"]})
}

fn allow_spec() -> Value {
    json!({"podSelector":{"matchLabels":{"app":"server"}},
           "ingress":[{"from":[{"podSelector":{"matchLabels":{"app":"client"}}}],"ports":[{"port":80}]}]})
}

fn policy(name: &str, spec: Value) -> Value {
    json!({"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy",
           "metadata":{"namespace":"bench","name":name},"spec":spec})
}

/// Builds the environment; `kube` picks the API source (the control plane must have been built
/// once with `cargo xtask k8s up`).
pub fn setup(kube: bool, agent_bin: &std::path::Path) -> anyhow::Result<Env> {
    palisade_tests::cleanup_stale();
    let label = if kube { "kube" } else { "manifests" };
    let dir = std::env::temp_dir().join(format!(
        "palisade-bench-update-{label}-{}",
        std::process::id()
    ));
    let cluster = TestCluster::builder()
        .family(Family::Ipv4)
        .nodes(2)
        .cni(CniMode::Bridge)
        .build()?;
    let client = cluster.add_pod(0, "bench", "client", &[])?;
    let server = cluster.add_pod(1, "bench", "server", &[Port::tcp(80)])?;
    let mut manifests = Manifests::new(dir.join("manifests"))?;
    let mut kube_parts = None;
    let mut extra: Vec<String> = Vec::new();
    if kube {
        let bins = Binaries::locate()?;
        palisade_tests::kube::cleanup_stale(&std::env::temp_dir());
        let cp = ControlPlane::start(&bins, &std::env::temp_dir())?;
        let port = cp.ports().apiserver;
        let relays = (0..2)
            .map(|n| LoopbackForward::into_netns(cluster.node(n).netns_name(), port))
            .collect::<Result<Vec<_>, _>>()?;
        let api = TestApi::connect(&cp.kubeconfig())?;
        api.namespace("bench", &[])?;
        for (pod, node, app, ports) in [
            (&client, 0, "client", vec![]),
            (&server, 1, "server", vec![(80, "TCP", None)]),
        ] {
            api.pod(
                "bench",
                pod.name(),
                &node_name(node),
                &[("app", app)],
                &ports,
            )?;
            api.pod_status("bench", pod.name(), pod.ips(), "Running")?;
        }
        api.policy("bench", "deny", deny_spec())?;
        api.policy("bench", "allow-client", allow_spec())?;
        extra = vec![
            "--source".to_owned(),
            "kube".to_owned(),
            "--kubeconfig".to_owned(),
            cp.kubeconfig().display().to_string(),
        ];
        kube_parts = Some((api, relays, cp));
    } else {
        manifests.put(
            "ns-bench",
            &json!({"apiVersion":"v1","kind":"Namespace","metadata":{"name":"bench"}}),
        )?;
        manifests.put(
            "pod-client",
            &pod_manifest(&client, &node_name(0), &json!({"app":"client"})),
        )?;
        manifests.put(
            "pod-server",
            &pod_manifest(&server, &node_name(1), &json!({"app":"server"})),
        )?;
        manifests.put("np-deny", &policy("deny", deny_spec()))?;
        manifests.put("np-allow", &policy("allow-client", allow_spec()))?;
        manifests.commit()?;
    }
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let mut agents = Vec::new();
    for n in 0..2 {
        agents.push(AgentProcess::start_with(
            &cluster,
            n,
            agent_bin,
            &manifests,
            dir.join(format!("node{n}")),
            &extra,
        )?);
    }
    agents[0].report_endpoint(&client)?;
    agents[1].report_endpoint(&server)?;
    let source = match kube_parts {
        Some((api, relays, cp)) => Source::Kube(Box::new(Kube {
            api,
            _relays: relays,
            _cp: cp,
        })),
        None => Source::Manifests(manifests),
    };
    let mut env = Env {
        agents,
        client,
        server,
        source,
        _cluster: cluster,
        dir,
    };
    env.wait(1)?;
    Ok(env)
}

impl Env {
    /// Waits until both agents applied manifest revision `revision` (0 for the API source) with
    /// their pod attached.
    pub fn wait(&mut self, revision: u64) -> anyhow::Result<()> {
        let revision = match self.source {
            Source::Manifests(_) => revision,
            Source::Kube(_) => 0,
        };
        let pods = [self.client.key(), self.server.key()];
        for (n, agent) in self.agents.iter_mut().enumerate() {
            agent
                .wait_applied(revision, &[pods[n].clone()], WAIT)
                .with_context(|| format!("agent log:\n{}", agent.log()))?;
        }
        Ok(())
    }

    /// Makes one change; returns the manifest revision it published (0 for the API source).
    pub fn change(&mut self, kind: &str, to_allowed: bool) -> anyhow::Result<u64> {
        let app = if to_allowed { "client" } else { "other" };
        match &mut self.source {
            Source::Manifests(m) => {
                match (kind, to_allowed) {
                    ("policy", false) => m.remove("np-allow")?,
                    ("policy", true) => m.put("np-allow", &policy("allow-client", allow_spec()))?,
                    _ => m.put(
                        "pod-client",
                        &pod_manifest(&self.client, &node_name(0), &json!({ "app": app })),
                    )?,
                }
                Ok(m.commit()?)
            }
            Source::Kube(k) => {
                let api = &k.api;
                match (kind, to_allowed) {
                    ("policy", false) => api.delete("NetworkPolicy", "bench", "allow-client")?,
                    ("policy", true) => api.policy("bench", "allow-client", allow_spec())?,
                    _ => api.pod("bench", "client", &node_name(0), &[("app", app)], &[])?,
                }
                Ok(0)
            }
        }
    }
}
