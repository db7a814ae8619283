//! The environment cases run in: a two-node test cluster, one Palisade agent per node, one
//! pod (serving its TCP/UDP containerPorts) and one ClusterIP Service per case pod, and the
//! files the agents read. It is reused from case to case: [`Env::sync`] brings pods,
//! Services and manifests to a case's state, creating and deleting only what differs.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use super::agent::{self, Agent, AgentError, AgentPaths, RunDir, Status};
use super::case::Protocol;
use super::manifests::{self, DirWriter, ManifestError, PodRuntime, Runtime};
use super::template::PodIps;
use super::world::{PodState, World};
use crate::addr::{Family, IpFamily};
use crate::cluster::{ClusterError, TestCluster};
use crate::pod::{Pod, Port};
use crate::probe::Proto;
use crate::service::Service;
use crate::CniMode;

/// Nodes per cluster: pods are spread over them round-robin.
pub const NODES: usize = 2;

/// How long an agent may take to apply a revision and attach its pods.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Building or changing the environment failed.
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    #[error("test cluster: {0}")]
    Cluster(#[from] Box<ClusterError>),
    #[error(transparent)]
    Agent(#[from] AgentError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
}

impl From<ClusterError> for EnvError {
    fn from(e: ClusterError) -> Self {
        EnvError::Cluster(Box::new(e))
    }
}

/// A pod the harness created, with its Service and what it was created from.
#[derive(Debug)]
struct Live {
    pod: Pod,
    service: Service,
    ports: Vec<Port>,
}

/// Field order is teardown order: agents stop before the namespaces go, and the run
/// directory (with the bpffs mounts) goes last.
#[derive(Debug)]
pub struct Env {
    agents: Vec<Agent>,
    cluster: TestCluster,
    manifests: DirWriter,
    endpoints: Vec<DirWriter>,
    live: BTreeMap<String, Live>,
    next_node: usize,
    revision: u64,
    _run: RunDir,
}

/// The name pods use in `spec.nodeName` for node `idx`.
pub fn node_name(idx: usize) -> String {
    format!("node-{idx}")
}

/// The harness ports of a case pod: its served containerPorts.
fn harness_ports(pod: &PodState) -> Vec<Port> {
    pod.served_ports()
        .map(|p| {
            let port = match p.protocol {
                Protocol::Udp => Port::udp(p.container_port),
                Protocol::Sctp => Port::sctp(p.container_port),
                Protocol::Tcp => Port::tcp(p.container_port),
            };
            match &p.name {
                Some(n) => port.named(n),
                None => port,
            }
        })
        .collect()
}

impl Env {
    /// Builds the cluster, starts the agents and waits until both have applied an empty
    /// state.
    pub fn build(family: Family, agent_bin: &Path) -> Result<Self, EnvError> {
        agent::cleanup_stale();
        let run = RunDir::create()?;
        let cluster = TestCluster::builder()
            .family(family)
            .nodes(NODES)
            .cni(CniMode::Bridge)
            .build()?;
        let mut env = Env {
            agents: Vec::new(),
            manifests: DirWriter::new(run.path().join("manifests"))?,
            endpoints: Vec::new(),
            live: BTreeMap::new(),
            next_node: 0,
            revision: 1,
            cluster,
            _run: run,
        };
        manifests::write_revision(env.manifests.path(), env.revision)?;
        for idx in 0..NODES {
            let name = node_name(idx);
            let paths = AgentPaths::new(env._run.path(), &name)?;
            env.endpoints.push(DirWriter::new(paths.endpoints.clone())?);
            let agent = Agent::start(&env.cluster, idx, &name, agent_bin, &paths)?;
            env.agents.push(agent);
        }
        env.wait_ready()?;
        Ok(env)
    }

    pub fn cluster(&self) -> &TestCluster {
        &self.cluster
    }

    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The harness pod of a case pod.
    pub fn pod(&self, key: &str) -> Option<&Pod> {
        self.live.get(key).map(|l| &l.pod)
    }

    /// The Service of a case pod.
    pub fn service(&self, key: &str) -> Option<&Service> {
        self.live.get(key).map(|l| &l.service)
    }

    /// Every live pod's IP of one family.
    pub fn pod_ips(&self, fam: IpFamily) -> PodIps {
        self.live
            .iter()
            .filter_map(|(k, l)| Some((k.clone(), l.pod.ip(fam)?)))
            .collect()
    }

    fn runtime(&self) -> Runtime {
        self.live
            .iter()
            .map(|(key, l)| {
                let rt = PodRuntime {
                    node_name: node_name(l.pod.node()),
                    ips: l.pod.ips().to_vec(),
                    cluster_ips: l.service.cluster_ips.clone(),
                    host_veth: l.pod.host_veth().to_owned(),
                };
                (key.clone(), rt)
            })
            .collect()
    }

    /// Brings pods, Services and files to `world`. Deleted pods leave the files before the
    /// cluster; new pods join the cluster before the files.
    pub fn sync(&mut self, world: &World) -> Result<(), EnvError> {
        let doomed: Vec<String> = self
            .live
            .iter()
            .filter(|(k, l)| {
                world
                    .pods
                    .get(*k)
                    .is_none_or(|p| harness_ports(p) != l.ports)
            })
            .map(|(k, _)| k.clone())
            .collect();
        if !doomed.is_empty() {
            let gone: Vec<Live> = doomed.iter().filter_map(|k| self.live.remove(k)).collect();
            self.write_files(world)?;
            for l in gone {
                self.cluster
                    .remove_service(l.pod.namespace(), &l.service.name)?;
                self.cluster.remove_pod(l.pod.namespace(), l.pod.name())?;
            }
        }
        self.create_missing(world)?;
        self.write_files(world)
    }

    /// Creates the world's pods that do not exist yet, each node's in parallel.
    fn create_missing(&mut self, world: &World) -> Result<(), EnvError> {
        let mut per_node: Vec<Vec<&PodState>> = vec![Vec::new(); NODES];
        for (key, pod) in &world.pods {
            if !self.live.contains_key(key) {
                per_node[self.next_node % NODES].push(pod);
                self.next_node += 1;
            }
        }
        let cluster = &self.cluster;
        let created: Vec<Result<Vec<(String, Live)>, EnvError>> = std::thread::scope(|s| {
            let handles: Vec<_> = per_node
                .iter()
                .enumerate()
                .map(|(idx, pods)| s.spawn(move || create_pods(cluster, idx, pods)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("pod creation does not panic"))
                .collect()
        });
        for result in created {
            self.live.extend(result?);
        }
        Ok(())
    }

    /// Writes manifests, then endpoint files, then `.revision`, for the pods that exist.
    fn write_files(&mut self, world: &World) -> Result<(), EnvError> {
        let mut present = world.clone();
        present.pods.retain(|k, _| self.live.contains_key(k));
        let runtime = self.runtime();
        let files = manifests::render(&present, &runtime)?;
        let mut changed = self.manifests.sync(&files)?;
        for (idx, writer) in self.endpoints.iter_mut().enumerate() {
            let files = manifests::render_endpoints(&present, &runtime, &node_name(idx));
            changed |= writer.sync(&files)?;
        }
        if changed {
            self.revision += 1;
            manifests::write_revision(self.manifests.path(), self.revision)?;
        }
        Ok(())
    }

    /// Waits until every agent has applied the current revision and attached its pods.
    pub fn wait_ready(&mut self) -> Result<Vec<Status>, EnvError> {
        let revision = self.revision;
        let mut statuses = Vec::new();
        for (idx, agent) in self.agents.iter_mut().enumerate() {
            let local: Vec<String> = self
                .live
                .iter()
                .filter(|(_, l)| l.pod.node() == idx)
                .map(|(k, _)| k.clone())
                .collect();
            statuses.push(agent.wait_applied(revision, &local, READY_TIMEOUT)?);
        }
        Ok(statuses)
    }

    /// Fails if an agent has exited.
    pub fn check_agents(&mut self) -> Result<(), EnvError> {
        for agent in &mut self.agents {
            agent.check_alive()?;
        }
        Ok(())
    }

    /// The agents' last log lines, for failure reports.
    pub fn agent_logs(&self, lines: usize) -> String {
        self.agents
            .iter()
            .map(|a| format!("--- {} ---\n{}", a.node(), a.log_tail(lines)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn create_pods(
    cluster: &TestCluster,
    idx: usize,
    pods: &[&PodState],
) -> Result<Vec<(String, Live)>, EnvError> {
    let mut out = Vec::new();
    for pod in pods {
        let ports = harness_ports(pod);
        let made = cluster.add_pod(idx, &pod.namespace, &pod.name, &ports)?;
        let svc_ports: Vec<(u16, Proto, u16)> =
            ports.iter().map(|p| (p.port, p.proto, p.port)).collect();
        let name = manifests::service_name(pod);
        let service = cluster.add_service(&pod.namespace, &name, &svc_ports, &[&made])?;
        out.push((
            made.key(),
            Live {
                pod: made,
                service,
                ports,
            },
        ));
    }
    Ok(out)
}
