//! The environment cases run in: a two-node test cluster, one Palisade agent per node, one
//! pod (serving its TCP/UDP containerPorts) and one ClusterIP Service per case pod, and the
//! files the agents read (or, with `--source kube`, the API server they watch). It is reused
//! from case to case: [`Env::sync`] brings pods, Services and manifests (or API objects) to a
//! case's state, creating and deleting only what differs.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use super::agent::{self, Agent, AgentError, AgentPaths, AgentSource, Barrier, RunDir, Status};
use super::case::Protocol;
use super::cli::Source;
#[cfg(feature = "kube")]
use super::kube::{KubeFeed, KubeFeedError};
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
    #[cfg(feature = "kube")]
    #[error(transparent)]
    Kube(#[from] Box<KubeFeedError>),
    #[error("--source kube: this runner was built without the `kube` feature (cargo build -p palisade-tests --features kube)")]
    NoKube,
}

#[cfg(feature = "kube")]
impl From<KubeFeedError> for EnvError {
    fn from(e: KubeFeedError) -> Self {
        EnvError::Kube(Box::new(e))
    }
}

impl EnvError {
    /// The fields the API server dropped, when that is what failed (the case needs the
    /// manifest source).
    pub fn dropped_fields(&self) -> Option<String> {
        match self {
            #[cfg(feature = "kube")]
            EnvError::Kube(e) if matches!(**e, KubeFeedError::Dropped { .. }) => {
                Some(e.to_string())
            }
            _ => None,
        }
    }
}

/// Without the `kube` feature there is no API feed: this type has no values.
#[cfg(not(feature = "kube"))]
#[derive(Debug)]
enum KubeFeed {}

#[cfg(not(feature = "kube"))]
impl KubeFeed {
    fn sync(&mut self, _: &World, _: &Runtime) -> Result<bool, EnvError> {
        match *self {}
    }

    fn targets(&self) -> BTreeMap<&'static str, u64> {
        match *self {}
    }
}

/// Where the case state goes: files, or the API server.
#[derive(Debug)]
enum Feed {
    Manifests {
        dir: DirWriter,
        revision: u64,
    },
    #[cfg_attr(
        not(feature = "kube"),
        expect(dead_code, reason = "no API feed without the kube feature")
    )]
    Kube(Box<KubeFeed>),
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
    feed: Feed,
    cluster: TestCluster,
    endpoints: Vec<DirWriter>,
    live: BTreeMap<String, Live>,
    next_node: usize,
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
    /// Builds the cluster (and with `Source::Kube` the API server), starts the agents and
    /// waits until both have applied an empty state.
    pub fn build(family: Family, agent_bin: &Path, source: Source) -> Result<Self, EnvError> {
        agent::cleanup_stale();
        let run = RunDir::create()?;
        let cluster = TestCluster::builder()
            .family(family)
            .nodes(NODES)
            .cni(CniMode::Bridge)
            .build()?;
        let (feed, agent_source) = Self::feed(source, &cluster, &run)?;
        let mut env = Env {
            agents: Vec::new(),
            feed,
            endpoints: Vec::new(),
            live: BTreeMap::new(),
            next_node: 0,
            cluster,
            _run: run,
        };
        for idx in 0..NODES {
            let name = node_name(idx);
            let paths = AgentPaths::new(env._run.path(), &name)?;
            env.endpoints.push(DirWriter::new(paths.endpoints.clone())?);
            let agent = Agent::start(&env.cluster, idx, &name, agent_bin, &paths, &agent_source)?;
            env.agents.push(agent);
        }
        env.wait_ready()?;
        Ok(env)
    }

    fn feed(
        source: Source,
        cluster: &TestCluster,
        run: &RunDir,
    ) -> Result<(Feed, AgentSource), EnvError> {
        match source {
            Source::Manifests => {
                let dir = DirWriter::new(run.path().join("manifests"))?;
                manifests::write_revision(dir.path(), 1)?;
                Ok((Feed::Manifests { dir, revision: 1 }, AgentSource::Manifests))
            }
            #[cfg(feature = "kube")]
            Source::Kube => {
                let feed = KubeFeed::start(cluster, NODES)?;
                let kubeconfig = feed.kubeconfig();
                Ok((Feed::Kube(Box::new(feed)), AgentSource::Kube { kubeconfig }))
            }
            #[cfg(not(feature = "kube"))]
            Source::Kube => {
                let _ = cluster;
                Err(EnvError::NoKube)
            }
        }
    }

    /// What the agents must have applied to reflect every change made so far.
    fn barrier(&self) -> Barrier {
        match &self.feed {
            Feed::Manifests { revision, .. } => Barrier::Revision(*revision),
            Feed::Kube(k) => Barrier::Kube(k.targets()),
        }
    }

    pub fn cluster(&self) -> &TestCluster {
        &self.cluster
    }

    /// The manifest revision last written (0 with the API source).
    pub fn revision(&self) -> u64 {
        match &self.feed {
            Feed::Manifests { revision, .. } => *revision,
            Feed::Kube(_) => 0,
        }
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
        live_runtime(&self.live)
    }

    /// Brings pods, Services and files (or API objects) to `world`. Deleted pods leave the
    /// files before the cluster; new pods join the cluster before the files. With the API
    /// source the agents must also have dropped a deleted pod before its endpoint report goes
    /// (otherwise they would look for its veth, as for a pod the CNI plugin never reported).
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
            let present = self.present(world);
            self.retire(&present)?;
            for l in gone {
                self.cluster
                    .remove_service(l.pod.namespace(), &l.service.name)?;
                self.cluster.remove_pod(l.pod.namespace(), l.pod.name())?;
            }
        }
        self.create_missing(world)?;
        let present = self.present(world);
        self.write_files(&present)
    }

    /// Before pods leave the cluster: the state without them, as [`Env::write_files`] would
    /// write it, except that the API source's agents must first have dropped them.
    fn retire(&mut self, present: &World) -> Result<(), EnvError> {
        if !self.feed_api(present)? {
            return self.write_files(present);
        }
        self.wait_ready()?;
        self.write_endpoints(present).map(drop)
    }

    /// Manifests, then endpoint reports, then `.revision`; or with the API source, endpoint
    /// reports (the CNI plugin reports a pod before the kubelet writes its IP), then the API
    /// calls.
    fn write_files(&mut self, present: &World) -> Result<(), EnvError> {
        if let Feed::Manifests { dir, .. } = &mut self.feed {
            let files = manifests::render(present, &live_runtime(&self.live))?;
            let mut changed = dir.sync(&files)?;
            changed |= self.write_endpoints(present)?;
            if let Feed::Manifests { dir, revision } = &mut self.feed {
                if changed {
                    *revision += 1;
                    manifests::write_revision(dir.path(), *revision)?;
                }
            }
            return Ok(());
        }
        self.write_endpoints(present)?;
        self.feed_api(present).map(drop)
    }

    /// With the API source, makes the API calls for `present` and returns true (whether or not
    /// anything changed); false with the manifest source.
    fn feed_api(&mut self, present: &World) -> Result<bool, EnvError> {
        match &mut self.feed {
            Feed::Manifests { .. } => Ok(false),
            Feed::Kube(k) => {
                k.sync(present, &live_runtime(&self.live))?;
                Ok(true)
            }
        }
    }

    /// `world` with only the pods that exist.
    fn present(&self, world: &World) -> World {
        let mut present = world.clone();
        present.pods.retain(|k, _| self.live.contains_key(k));
        present
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

    /// Each node's endpoint reports, as the chained CNI plugin would write them. Returns
    /// whether any changed.
    fn write_endpoints(&mut self, present: &World) -> Result<bool, EnvError> {
        let runtime = self.runtime();
        let mut changed = false;
        for (idx, writer) in self.endpoints.iter_mut().enumerate() {
            let files = manifests::render_endpoints(present, &runtime, &node_name(idx));
            changed |= writer.sync(&files)?;
        }
        Ok(changed)
    }

    /// Waits until every agent has applied every change made so far and attached its pods.
    pub fn wait_ready(&mut self) -> Result<Vec<Status>, EnvError> {
        let barrier = self.barrier();
        let mut statuses = Vec::new();
        for (idx, agent) in self.agents.iter_mut().enumerate() {
            let local: Vec<String> = self
                .live
                .iter()
                .filter(|(_, l)| l.pod.node() == idx)
                .map(|(k, _)| k.clone())
                .collect();
            statuses.push(agent.wait_for(&barrier, &local, READY_TIMEOUT)?);
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

/// Each live pod's runtime facts (a free function, so that it borrows only `live`).
fn live_runtime(live: &BTreeMap<String, Live>) -> Runtime {
    live.iter()
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
