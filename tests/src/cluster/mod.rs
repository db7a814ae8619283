//! A test cluster: nodes, pods, Services, probes. Everything it creates is removed when it is
//! dropped, including after a panic or a failed build.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

mod builder;

use builder::StateDir;
pub use builder::TestClusterBuilder;

use crate::addr::{self, Family, IpFamily};
use crate::exec::{self, ExecError};
use crate::names::RunId;
use crate::netns::{Netns, NetnsError};
use crate::node::{Node, NodeError};
use crate::pod::{self, Pod, PodError, PodRuntime, PodSpec, Port};
use crate::probe::{Outcome, Proto, Target};
use crate::service::{self, Backend, Service, ServiceError, ServicePort};

/// Building or changing the cluster failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("a cluster has 1 to {max} nodes (asked for {0})", max = addr::MAX_NODES)]
    NodeCount(usize),
    #[error("cannot create state directory {path}: {source}")]
    StateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("probe binary not found (looked at {0:?}); build it with `cargo build -p palisade-tests --bin probe` or set PALISADE_PROBE_BIN")]
    ProbeBinNotFound(Vec<PathBuf>),
    #[error("no node {0}")]
    NoNode(usize),
    #[error("{0} already exists")]
    Duplicate(String),
    #[error("{0} does not exist")]
    Missing(String),
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error(transparent)]
    Pod(#[from] PodError),
    #[error(transparent)]
    Service(#[from] ServiceError),
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("probe batch: {0}")]
    ProbeRun(#[from] ExecError),
    #[error("probe batch printed something unexpected: {0}")]
    ProbeOutput(#[from] serde_json::Error),
}

#[derive(Debug, Default)]
struct State {
    pods: BTreeMap<String, PodRuntime>,
    services: BTreeMap<String, Service>,
    /// Per family, the Service chains the last sync created.
    chains: BTreeMap<IpFamily, BTreeSet<String>>,
    next_pod: u32,
    next_service: u32,
}

/// One probe to run: from a pod to an address.
#[derive(Clone, Debug)]
pub struct ProbeSpec<'a> {
    pub from: &'a Pod,
    pub to: SocketAddr,
    pub proto: Proto,
    pub timeout: Duration,
}

/// A cluster of test nodes. All methods take `&self`, so one cluster can be shared by threads.
/// Field order is teardown order: pods (servers, CNI DEL, namespaces), then nodes, then state.
#[derive(Debug)]
pub struct TestCluster {
    state: Mutex<State>,
    nodes: Vec<Node>,
    _underlay: Option<Netns>,
    _state_dir: StateDir,
    run: RunId,
    family: Family,
    probe_bin: PathBuf,
    cni_path: String,
}

impl TestCluster {
    /// Defaults: IPv4, one node, bridge.
    pub fn builder() -> TestClusterBuilder {
        TestClusterBuilder::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `pal-<pid>-<counter>`: the prefix of every namespace this cluster owns.
    pub fn prefix(&self) -> String {
        self.run.prefix()
    }

    pub fn family(&self) -> Family {
        self.family
    }

    pub fn probe_bin(&self) -> &Path {
        &self.probe_bin
    }

    /// Panics if there is no node `idx`; see [`TestCluster::nodes`].
    pub fn node(&self, idx: usize) -> &Node {
        &self.nodes[idx]
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Runs `f` on a thread inside node `idx`'s namespace.
    pub fn run_in_node<T: Send, F: FnOnce() -> T + Send>(
        &self,
        idx: usize,
        f: F,
    ) -> Result<T, ClusterError> {
        let node = self.nodes.get(idx).ok_or(ClusterError::NoNode(idx))?;
        Ok(node.run(f)?)
    }

    /// A command that runs inside node `idx`'s namespace.
    pub fn node_command(
        &self,
        idx: usize,
        program: impl AsRef<std::ffi::OsStr>,
    ) -> Result<Command, ClusterError> {
        let node = self.nodes.get(idx).ok_or(ClusterError::NoNode(idx))?;
        Ok(node.command(program)?)
    }

    /// Creates pod `namespace/name` on node `node_idx` through the node's CNI chain and starts
    /// a probe server on its ports (waiting until it has bound them).
    pub fn add_pod(
        &self,
        node_idx: usize,
        namespace: &str,
        name: &str,
        ports: &[Port],
    ) -> Result<Pod, ClusterError> {
        let node = self
            .nodes
            .get(node_idx)
            .ok_or(ClusterError::NoNode(node_idx))?;
        let key = format!("{namespace}/{name}");
        let seq = {
            let mut st = self.lock();
            if st.pods.contains_key(&key) {
                return Err(ClusterError::Duplicate(format!("pod {key}")));
            }
            st.next_pod += 1;
            st.next_pod
        };
        // Created without the lock held, so pods on different nodes come up in parallel.
        let spec = PodSpec {
            run: &self.run,
            seq,
            namespace,
            name,
            ports,
            probe_bin: &self.probe_bin,
            cni_path: &self.cni_path,
        };
        let rt = pod::create(node, &spec)?;
        let pod = rt.pod.clone();
        let mut st = self.lock();
        if st.pods.contains_key(&key) {
            return Err(ClusterError::Duplicate(format!("pod {key}")));
        }
        st.pods.insert(key, rt);
        Ok(pod)
    }

    /// Deletes a pod (server, CNI DEL, namespace) and removes it from Service endpoints, as
    /// the endpoints controller would.
    pub fn remove_pod(&self, namespace: &str, name: &str) -> Result<(), ClusterError> {
        let key = format!("{namespace}/{name}");
        let mut st = self.lock();
        let rt = st
            .pods
            .remove(&key)
            .ok_or_else(|| ClusterError::Missing(format!("pod {key}")))?;
        let touched: Vec<String> = st
            .services
            .iter_mut()
            .filter(|(_, s)| s.backends.iter().any(|b| b.pod == key))
            .map(|(k, s)| {
                s.backends.retain(|b| b.pod != key);
                k.clone()
            })
            .collect();
        drop(rt);
        if touched.is_empty() {
            return Ok(());
        }
        self.sync_services(&mut st)?;
        self.flush_udp(&st, &touched);
        Ok(())
    }

    /// A pod by `namespace/name`.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<Pod> {
        self.lock()
            .pods
            .get(&format!("{namespace}/{name}"))
            .map(|rt| rt.pod.clone())
    }

    /// All pods, by `namespace/name`.
    pub fn pods(&self) -> Vec<Pod> {
        self.lock().pods.values().map(|rt| rt.pod.clone()).collect()
    }

    /// Creates a ClusterIP Service (one ClusterIP per cluster family) with `ports` as
    /// (port, protocol, targetPort) and `backends` as its endpoints, and programs every node.
    pub fn add_service(
        &self,
        namespace: &str,
        name: &str,
        ports: &[(u16, Proto, u16)],
        backends: &[&Pod],
    ) -> Result<Service, ClusterError> {
        let key = format!("{namespace}/{name}");
        let mut st = self.lock();
        if st.services.contains_key(&key) {
            return Err(ClusterError::Duplicate(format!("service {key}")));
        }
        let id = st.next_service;
        st.next_service += 1;
        let svc = Service {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            cluster_ips: self
                .family
                .ip_families()
                .iter()
                .map(|f| addr::cluster_ip(id, *f))
                .collect(),
            ports: ports
                .iter()
                .map(|&(port, proto, target_port)| ServicePort {
                    port,
                    proto,
                    target_port,
                })
                .collect(),
            backends: backends.iter().map(|p| backend(p)).collect(),
            id,
        };
        st.services.insert(key.clone(), svc.clone());
        if let Err(e) = self.sync_services(&mut st) {
            st.services.remove(&key);
            return Err(e);
        }
        Ok(svc)
    }

    /// Replaces a Service's endpoints.
    pub fn set_service_backends(
        &self,
        namespace: &str,
        name: &str,
        backends: &[&Pod],
    ) -> Result<Service, ClusterError> {
        let key = format!("{namespace}/{name}");
        let mut st = self.lock();
        let svc = st
            .services
            .get_mut(&key)
            .ok_or_else(|| ClusterError::Missing(format!("service {key}")))?;
        svc.backends = backends.iter().map(|p| backend(p)).collect();
        let svc = svc.clone();
        self.sync_services(&mut st)?;
        self.flush_udp(&st, &[key]);
        Ok(svc)
    }

    /// Deletes a Service and its rules.
    pub fn remove_service(&self, namespace: &str, name: &str) -> Result<(), ClusterError> {
        let key = format!("{namespace}/{name}");
        let mut st = self.lock();
        st.services
            .remove(&key)
            .ok_or_else(|| ClusterError::Missing(format!("service {key}")))?;
        self.sync_services(&mut st)
    }

    pub fn service(&self, namespace: &str, name: &str) -> Option<Service> {
        self.lock()
            .services
            .get(&format!("{namespace}/{name}"))
            .cloned()
    }

    pub fn services(&self) -> Vec<Service> {
        self.lock().services.values().cloned().collect()
    }

    /// Rewrites every node's Service chains (same rules on every node, as each runs kube-proxy).
    fn sync_services(&self, st: &mut State) -> Result<(), ClusterError> {
        for &fam in self.family.ip_families() {
            let services: Vec<&Service> = st.services.values().collect();
            let previous = st.chains.get(&fam).cloned().unwrap_or_default();
            let (rules, chains) = service::render(fam, &services, &previous);
            for node in &self.nodes {
                service::apply(node.netns_name(), fam, &rules)?;
            }
            st.chains.insert(fam, chains);
        }
        Ok(())
    }

    fn flush_udp(&self, st: &State, keys: &[String]) {
        let udp_ips = keys
            .iter()
            .filter_map(|k| st.services.get(k))
            .filter(|s| s.ports.iter().any(|p| p.proto == Proto::Udp))
            .flat_map(|s| s.cluster_ips.iter().copied());
        for ip in udp_ips {
            for node in &self.nodes {
                service::flush_udp_conntrack(node.netns_name(), ip);
            }
        }
    }

    /// Runs one probe.
    pub fn probe(&self, spec: &ProbeSpec<'_>) -> Result<Outcome, ClusterError> {
        let mut out = self.probe_many(std::slice::from_ref(spec))?;
        Ok(out.remove(0))
    }

    /// Runs all probes at once: one `probe batch` per source pod, all pods in parallel, each
    /// probing its targets concurrently. Outcomes come back in input order.
    pub fn probe_many(&self, specs: &[ProbeSpec<'_>]) -> Result<Vec<Outcome>, ClusterError> {
        let mut groups: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, s) in specs.iter().enumerate() {
            groups.entry(s.from.netns_name()).or_default().push(i);
        }
        let mut out: Vec<Option<Outcome>> = vec![None; specs.len()];
        std::thread::scope(|scope| {
            let handles: Vec<_> = groups
                .iter()
                .map(|(ns, idxs)| {
                    let targets: Vec<Target> = idxs.iter().map(|&i| target(&specs[i])).collect();
                    (idxs, scope.spawn(move || self.run_batch(ns, &targets)))
                })
                .collect();
            for (idxs, h) in handles {
                let outcomes = h.join().expect("batch thread does not panic")?;
                for (&i, o) in idxs.iter().zip(outcomes) {
                    out[i] = Some(o);
                }
            }
            Ok::<(), ClusterError>(())
        })?;
        Ok(out
            .into_iter()
            .map(|o| o.expect("every probe answered"))
            .collect())
    }

    /// Runs probes from node `idx` itself (as kubelet or a hostNetwork pod would).
    pub fn probe_from_node(
        &self,
        idx: usize,
        targets: &[Target],
    ) -> Result<Vec<Outcome>, ClusterError> {
        let node = self.nodes.get(idx).ok_or(ClusterError::NoNode(idx))?;
        self.run_batch(node.netns_name(), targets)
    }

    fn run_batch(&self, netns: &str, targets: &[Target]) -> Result<Vec<Outcome>, ClusterError> {
        let mut cmd = crate::netns::command_in(netns, &self.probe_bin)?;
        cmd.arg("batch");
        let input = serde_json::to_vec(targets)?;
        let out = exec::run_with_input(&mut cmd, &input)?;
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).map_err(ClusterError::from))
            .collect()
    }
}

fn backend(pod: &Pod) -> Backend {
    Backend {
        pod: pod.key(),
        ips: pod.ips().to_vec(),
    }
}

fn target(spec: &ProbeSpec<'_>) -> Target {
    Target {
        proto: spec.proto,
        addr: spec.to,
        timeout_ms: u64::try_from(spec.timeout.as_millis()).unwrap_or(u64::MAX),
    }
}

/// The address to probe a pod's port at, directly or through a Service, for one family.
pub fn socket(ip: Option<IpAddr>, port: u16) -> Option<SocketAddr> {
    ip.map(|ip| SocketAddr::new(ip, port))
}
