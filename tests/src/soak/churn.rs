//! The soak's cluster and its churn: a fixed server, client and never-allowed pod with traffic
//! between them, and churn pods and policies created, relabelled, changed and deleted at a
//! steady rate. Each change is published and applied before the next.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::SoakError;
use crate::agent::{node_name, pod_manifest, AgentProcess, Manifests};
use crate::{CniMode, Family, IpFamily, Pod, Port, Proto, TestCluster};

/// At most this many churn pods / policies live at once.
pub const MAX_PODS: usize = 6;
pub const MAX_POLICIES: usize = 4;
const APPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// Label values churn pods and policies draw from (so that they select each other).
const APPS: [&str; 3] = ["red", "green", "blue"];

/// Counts of what the churn did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ChurnCounts {
    pub pods_created: u64,
    pub pods_deleted: u64,
    pub relabels: u64,
    pub policies_created: u64,
    pub policies_updated: u64,
    pub policies_deleted: u64,
    /// Revisions published and applied by both agents.
    pub revisions: u64,
    /// Milliseconds from publishing a revision until both agents applied it.
    pub apply_ms: Vec<f64>,
    /// What each step did, with its revision.
    pub steps: Vec<(u64, String)>,
}

/// Removes a directory tree on drop.
#[derive(Debug)]
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Field order is teardown order.
#[derive(Debug)]
pub struct Env {
    pub agents: Vec<AgentProcess>,
    pub cluster: TestCluster,
    pub manifests: Manifests,
    /// The fixed pods: srv (node 0), cli (node 1), deny (node 0).
    pub fixed: BTreeMap<&'static str, Pod>,
    /// Churn pods by name, with their labels.
    pub churn: BTreeMap<String, (Pod, String)>,
    /// Churn policies by name.
    pub policies: BTreeMap<String, u64>,
    pub counts: ChurnCounts,
    next: u64,
    rng: u64,
    dir: TempDir,
}

fn policy(name: &str, spec: Value) -> Value {
    json!({"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy",
           "metadata":{"namespace":"x","name":name},"spec":spec})
}

impl Env {
    pub fn build(agent_bin: &Path) -> Result<Self, SoakError> {
        crate::cleanup_stale();
        let dir =
            TempDir(std::env::temp_dir().join(format!("palisade-soak-{}", std::process::id())));
        let cluster = TestCluster::builder()
            .family(Family::Ipv4)
            .nodes(2)
            .cni(CniMode::Bridge)
            .build()?;
        let manifests = Manifests::new(dir.0.join("manifests"))?;
        manifests.put(
            "ns-x",
            &json!({"apiVersion":"v1","kind":"Namespace","metadata":{"name":"x"}}),
        )?;
        let mut fixed = BTreeMap::new();
        for (name, node, role) in [
            ("srv", 0, "server"),
            ("cli", 1, "client"),
            ("deny", 0, "none"),
        ] {
            let pod = cluster.add_pod(node, "x", name, &[Port::tcp(80)])?;
            manifests.put(
                &format!("pod-{name}"),
                &pod_manifest(&pod, &node_name(node), &json!({"role": role})),
            )?;
            fixed.insert(name, pod);
        }
        let svc = cluster.add_service("x", "s-srv", &[(80, Proto::Tcp, 80)], &[&fixed["srv"]])?;
        let ip = svc.cluster_ip(IpFamily::Ipv4).map(|i| i.to_string());
        manifests.put(
            "svc-srv",
            &json!({"apiVersion":"v1","kind":"Service",
            "metadata":{"namespace":"x","name":"s-srv"},
            "spec":{"clusterIP": ip, "clusterIPs":[ip], "selector":{"role":"server"},
                    "ports":[{"port":80,"targetPort":80,"protocol":"TCP"}]}}),
        )?;
        manifests.put("np-srv-in", &policy("srv-in", json!({
            "podSelector":{"matchLabels":{"role":"server"}},
            "ingress":[{"from":[{"podSelector":{"matchLabels":{"role":"client"}}}],"ports":[{"port":80},{"port":9000}]}]})))?;
        let mut env = Env {
            agents: Vec::new(),
            cluster,
            manifests,
            fixed,
            churn: BTreeMap::new(),
            policies: BTreeMap::new(),
            counts: ChurnCounts::default(),
            next: 0,
            rng: u64::from(std::process::id()) | 1,
            dir,
        };
        for n in 0..2 {
            let root = env.dir.0.join(format!("node{n}"));
            let agent = AgentProcess::start(&env.cluster, n, agent_bin, &env.manifests, root)?;
            env.agents.push(agent);
        }
        for pod in env.fixed.values() {
            env.agents[pod.node()].report_endpoint(pod)?;
        }
        env.publish()?;
        Ok(env)
    }

    fn random(&mut self, n: usize) -> usize {
        // xorshift64
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng % n.max(1) as u64) as usize
    }

    /// The directory of node `n`'s agent (bpffs, endpoints, status).
    pub fn agent_root(&self, n: usize) -> &Path {
        self.agents[n].root()
    }

    fn local(&self, n: usize) -> Vec<String> {
        self.fixed
            .values()
            .chain(self.churn.values().map(|(p, _)| p))
            .filter(|p| p.node() == n)
            .map(Pod::key)
            .collect()
    }

    fn note(&mut self, what: String) {
        self.counts.steps.push((self.counts.revisions + 1, what));
    }

    /// Publishes the written changes and waits until both agents applied them.
    pub fn publish(&mut self) -> Result<(), SoakError> {
        let rev = self.manifests.commit()?;
        let started = Instant::now();
        for n in 0..self.agents.len() {
            let local = self.local(n);
            let agent = &mut self.agents[n];
            agent
                .wait_applied(rev, &local, APPLY_TIMEOUT)
                .map_err(|e| SoakError::Agent(format!("{e}\nagent log:\n{}", agent.log())))?;
        }
        self.counts.revisions += 1;
        self.counts
            .apply_ms
            .push(started.elapsed().as_secs_f64() * 1000.0);
        Ok(())
    }

    fn create_pod(&mut self) -> Result<(), SoakError> {
        self.next += 1;
        let name = format!("churn-{}", self.next);
        self.note(format!("create pod {name}"));
        let node = (self.next % 2) as usize;
        let app = APPS[self.random(APPS.len())].to_owned();
        let pod = self
            .cluster
            .add_pod(node, "x", &name, &[Port::tcp(80).named("http")])?;
        self.manifests.put(
            &format!("pod-{name}"),
            &pod_manifest(&pod, &node_name(node), &json!({"churn": "yes", "app": app})),
        )?;
        self.agents[node].report_endpoint(&pod)?;
        self.churn.insert(name, (pod, app));
        self.counts.pods_created += 1;
        Ok(())
    }

    fn relabel(&mut self) -> Result<(), SoakError> {
        let i = self.random(self.churn.len());
        let app = APPS[self.random(APPS.len())].to_owned();
        let round = self.next;
        let Some((name, (pod, label))) = self.churn.iter_mut().nth(i) else {
            return Ok(());
        };
        *label = app.clone();
        let what = format!("relabel {name} app={app}");
        let labels = json!({"churn": "yes", "app": app, "round": round.to_string()});
        self.manifests.put(
            &format!("pod-{name}"),
            &pod_manifest(pod, &node_name(pod.node()), &labels),
        )?;
        self.counts.relabels += 1;
        self.note(what);
        Ok(())
    }

    fn delete_pod(&mut self) -> Result<(), SoakError> {
        let i = self.random(self.churn.len());
        let Some(name) = self.churn.keys().nth(i).cloned() else {
            return Ok(());
        };
        let (pod, _) = self.churn.remove(&name).expect("listed");
        self.note(format!("delete pod {name}"));
        // As the API server and kubelet do: the object goes, CNI DEL withdraws the report,
        // the sandbox goes.
        self.manifests.remove(&format!("pod-{name}"))?;
        self.agents[pod.node()].withdraw_endpoint("x", &name)?;
        self.cluster.remove_pod("x", &name)?;
        self.counts.pods_deleted += 1;
        Ok(())
    }

    fn upsert_policy(&mut self) -> Result<(), SoakError> {
        let k = self.random(MAX_POLICIES);
        let name = format!("churn-pol-{k}");
        let version = self.next;
        self.next += 1;
        let app = APPS[self.random(APPS.len())];
        let peer = APPS[self.random(APPS.len())];
        let spec = match self.random(3) {
            0 => json!({"podSelector":{"matchLabels":{"churn":"yes","app":app}},
                        "ingress":[{"from":[{"podSelector":{"matchLabels":{"app":peer}}}],"ports":[{"port":"http"}]}]}),
            1 => {
                json!({"podSelector":{"matchLabels":{"churn":"yes","app":app}},"policyTypes":["Ingress","Egress"],
                        "ingress":[{"from":[{"ipBlock":{"cidr":"10.244.0.0/16","except":[format!("10.244.{}.0/24", version % 2)]}}]}],
                        "egress":[{"to":[{"podSelector":{"matchLabels":{"role":"server"}}}],"ports":[{"port":80,"endPort": 80 + version % 50}]}]})
            }
            _ => {
                json!({"podSelector":{"matchExpressions":[{"key":"app","operator":"In","values":[app, peer]}]},
                        "ingress":[{"from":[{"namespaceSelector":{}, "podSelector":{"matchLabels":{"churn":"yes"}}}]}]})
            }
        };
        self.note(format!("policy {name}: {spec}"));
        self.manifests
            .put(&format!("np-{name}"), &policy(&name, spec))?;
        if self.policies.insert(name, version).is_some() {
            self.counts.policies_updated += 1;
        } else {
            self.counts.policies_created += 1;
        }
        Ok(())
    }

    fn delete_policy(&mut self) -> Result<(), SoakError> {
        let i = self.random(self.policies.len());
        let Some(name) = self.policies.keys().nth(i).cloned() else {
            return Ok(());
        };
        self.policies.remove(&name);
        self.note(format!("delete policy {name}"));
        self.manifests.remove(&format!("np-{name}"))?;
        self.counts.policies_deleted += 1;
        Ok(())
    }

    /// One churn step: a pod or policy created, changed or deleted, then published.
    pub fn step(&mut self) -> Result<(), SoakError> {
        let pods = self.churn.len();
        match self.random(8) {
            _ if pods < 2 => self.create_pod()?,
            _ if pods >= MAX_PODS => self.delete_pod()?,
            0 | 1 => self.create_pod()?,
            2 | 3 => self.delete_pod()?,
            4 | 5 => self.relabel()?,
            6 if self.policies.len() >= MAX_POLICIES => self.delete_policy()?,
            6 => self.upsert_policy()?,
            _ if self.policies.is_empty() => self.upsert_policy()?,
            _ => self.delete_policy()?,
        }
        self.publish()
    }

    /// Deletes every churn pod and policy and publishes (back to the baseline).
    pub fn drain(&mut self) -> Result<(), SoakError> {
        while !self.churn.is_empty() {
            self.delete_pod()?;
        }
        while !self.policies.is_empty() {
            self.delete_policy()?;
        }
        self.publish()
    }

    /// Node `n`'s uplink ifindex.
    pub fn uplink_ifindex(&self, n: usize) -> u32 {
        self.cluster.node(n).uplink_ifindex().unwrap_or(0)
    }
}
