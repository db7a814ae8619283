//! The chaos environment: two test nodes, six pods, two Services, the real agent on each node
//! (manifest-directory source, or the Kubernetes API with `--source kube`: [`super::kube`]),
//! echo servers for long-lived connections, and the two policy states the outage scenarios
//! switch between.
//!
//! ```text
//! node 0: a (server, app=a)   b (client, role=client)   d (never allowed to a:80 in state A)
//! node 1: f (server, app=f)   c (client, role=client)   e (never allowed)
//! ```
//! Every pod serves TCP 80 and 81 (`probe serve`); a serves echo on 9000, f on 9000 and 9001.
//! Services s-a and s-f expose 80, 81, 9000, 9001 (port == targetPort).
//! Policies: servers-in (a, f accept role=client on 80 and 9000), clients-out (clients may
//! only reach a and f), and the flip: state A has `f-flip` (c may reach f on 81 and 9001),
//! state B has `a-from-d` (d may reach a on 80) instead.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::{ChaosError, SourceMode};
use crate::agent::{node_name, pod_manifest, AgentProcess, Manifests};
use crate::{CniMode, Family, IpFamily, Pod, Port, Proto, TestCluster};

/// The pods: (name, node, labels).
const PODS: [(&str, usize, &str); 6] = [
    ("a", 0, "server"),
    ("b", 0, "client"),
    ("d", 0, "other"),
    ("f", 1, "server"),
    ("c", 1, "client"),
    ("e", 1, "other"),
];

/// Service ports (port == targetPort).
pub const SERVICE_PORTS: [u16; 4] = [80, 81, 9000, 9001];

/// How long an agent may take to apply a revision with its pods attached.
pub const APPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// Which of the two policy states is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum PolicyState {
    /// c may reach f on 81/9001; d may not reach a.
    A,
    /// d may reach a on 80; c may not reach f on 81/9001.
    B,
}

impl PolicyState {
    pub fn flipped(self) -> Self {
        match self {
            Self::A => Self::B,
            Self::B => Self::A,
        }
    }
}

/// A TCP echo server in a pod's namespace, stopped on drop.
#[derive(Debug)]
pub struct EchoServer {
    stop: Arc<AtomicBool>,
}

impl EchoServer {
    pub fn start(pod: &Pod, port: u16) -> Result<Self, ChaosError> {
        let listener = crate::netns::run_in(pod.netns_name(), || {
            TcpListener::bind((std::net::Ipv6Addr::UNSPECIFIED, port))
                .or_else(|_| TcpListener::bind((std::net::Ipv4Addr::UNSPECIFIED, port)))
        })?
        .map_err(|e| ChaosError::Io(format!("echo server {}:{port}: {e}", pod.key())))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| ChaosError::Io(e.to_string()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::spawn(move || accept_loop(&listener, &flag));
        Ok(Self { stop })
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn accept_loop(listener: &TcpListener, stop: &Arc<AtomicBool>) {
    use std::io::{Read, Write};
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((mut conn, _)) => {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let _ = conn.set_nonblocking(false);
                    let _ = conn.set_read_timeout(Some(Duration::from_millis(200)));
                    let mut buf = [0u8; 256];
                    while !stop.load(Ordering::SeqCst) {
                        match conn.read(&mut buf) {
                            Ok(0) => break,
                            Ok(n) => {
                                if conn.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                            }
                            Err(e)
                                if matches!(
                                    e.kind(),
                                    std::io::ErrorKind::WouldBlock
                                        | std::io::ErrorKind::TimedOut
                                        // A read with a timeout is never restarted after a
                                        // signal handler ran (signal(7)).
                                        | std::io::ErrorKind::Interrupted
                                ) => {}
                            Err(_) => break,
                        }
                    }
                });
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Removes a directory tree on drop.
#[derive(Debug)]
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Where the cluster state is written.
#[derive(Debug)]
pub enum Backend {
    /// The manifest directory ([`Env::manifests`]).
    Manifests,
    /// The Kubernetes API.
    #[cfg(feature = "kube")]
    Kube(Box<super::kube::KubeBackend>),
}

impl Backend {
    fn start(source: SourceMode, cluster: &TestCluster) -> Result<Self, ChaosError> {
        match source {
            SourceMode::Manifests => Ok(Self::Manifests),
            #[cfg(feature = "kube")]
            SourceMode::Kube => Ok(Self::Kube(Box::new(super::kube::KubeBackend::start(
                cluster, 2,
            )?))),
            #[cfg(not(feature = "kube"))]
            SourceMode::Kube => {
                let _ = cluster;
                Err(ChaosError::Kube(
                    "this chaos binary was built without the `kube` feature".into(),
                ))
            }
        }
    }
}

/// Field order is teardown order: agents, echo servers, the API server, the cluster, the
/// directory.
#[derive(Debug)]
pub struct Env {
    pub agents: Vec<AgentProcess>,
    _echo: Vec<EchoServer>,
    pub backend: Backend,
    pub cluster: TestCluster,
    pub manifests: Manifests,
    pods: BTreeMap<String, Pod>,
    pub state: PolicyState,
    /// The last revision committed.
    pub revision: u64,
    pub agent_bin: PathBuf,
    dir: TempDir,
}

fn policy(name: &str, spec: Value) -> Value {
    json!({"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy",
           "metadata":{"namespace":"x","name":name},"spec":spec})
}

fn ports(list: &[u16]) -> Value {
    Value::Array(list.iter().map(|p| json!({"port": p})).collect())
}

impl Env {
    /// Builds the cluster, writes state A, starts the agents and waits until they applied it.
    pub fn build(agent_bin: &Path, source: SourceMode) -> Result<Self, ChaosError> {
        crate::cleanup_stale();
        let dir =
            TempDir(std::env::temp_dir().join(format!("palisade-chaos-{}", std::process::id())));
        let cluster = TestCluster::builder()
            .family(Family::Ipv4)
            .nodes(2)
            .cni(CniMode::Bridge)
            .build()?;
        let backend = Backend::start(source, &cluster)?;
        let manifests = Manifests::new(dir.0.join("manifests"))?;
        let mut env = Env {
            agents: Vec::new(),
            _echo: Vec::new(),
            backend,
            cluster,
            manifests,
            pods: BTreeMap::new(),
            state: PolicyState::A,
            revision: 0,
            agent_bin: agent_bin.to_owned(),
            dir,
        };
        env.put(
            "ns-x",
            &json!({"apiVersion":"v1","kind":"Namespace","metadata":{"name":"x"}}),
        )?;
        env.add_pods()?;
        env.add_services()?;
        env.put("np-servers-in", &policy("servers-in", json!({
            "podSelector":{"matchExpressions":[{"key":"app","operator":"In","values":["a","f"]}]},
            "ingress":[{"from":[{"podSelector":{"matchLabels":{"role":"client"}}}],"ports":ports(&[80, 9000])}]})))?;
        env.put("np-clients-out", &policy("clients-out", json!({
            "podSelector":{"matchLabels":{"role":"client"}}, "policyTypes":["Egress"],
            "egress":[{"to":[{"podSelector":{"matchExpressions":[{"key":"app","operator":"In","values":["a","f"]}]}}],
                       "ports":ports(&SERVICE_PORTS)}]})))?;
        env.write_state(PolicyState::A, None)?;
        // Extra agent flags, for negative controls of the harness itself (`--audit` must show
        // denied attempts succeeding).
        let extra = std::env::var("PALISADE_CHAOS_AGENT_ARGS").unwrap_or_default();
        let mut extra: Vec<&str> = extra.split_whitespace().collect();
        let source_args = env.source_args();
        extra.extend(source_args.iter().map(String::as_str));
        for n in 0..2 {
            let agent = AgentProcess::start_with(
                &env.cluster,
                n,
                &env.agent_bin,
                &env.manifests,
                env.dir.0.join(format!("node{n}")),
                &extra,
            )?;
            env.agents.push(agent);
        }
        for pod in env.pods.values() {
            env.agents[pod.node()].report_endpoint(pod)?;
        }
        let rev = env.commit()?;
        env.wait_applied(rev)?;
        Ok(env)
    }

    /// Writes a namespace or policy into the manifest directory and, with the API source,
    /// through the API (with the manifest source, only the directory is read).
    fn put(&mut self, file: &str, object: &Value) -> Result<(), ChaosError> {
        self.manifests.put(file, object)?;
        #[cfg(feature = "kube")]
        if let Backend::Kube(k) = &mut self.backend {
            match object["kind"].as_str() {
                Some("Namespace") => {
                    k.namespace(object["metadata"]["name"].as_str().unwrap_or(""))?
                }
                _ => k.policy(object)?,
            }
        }
        Ok(())
    }

    /// The pods: wired by the CNI plugin, written as manifests (with the API source: created
    /// and given their status through the API).
    fn add_pods(&mut self) -> Result<(), ChaosError> {
        for (name, node, role) in PODS {
            let pod = self
                .cluster
                .add_pod(node, "x", name, &[Port::tcp(80), Port::tcp(81)])?;
            let labels = json!({"app": name, "role": role});
            self.manifests.put(
                &format!("pod-{name}"),
                &pod_manifest(&pod, &node_name(node), &labels),
            )?;
            #[cfg(feature = "kube")]
            if let Backend::Kube(k) = &mut self.backend {
                k.pod(&pod, &node_name(node), &[("app", name), ("role", role)])?;
            }
            self.pods.insert(name.to_owned(), pod);
        }
        Ok(())
    }

    /// Services s-a and s-f, and the echo servers behind them.
    fn add_services(&mut self) -> Result<(), ChaosError> {
        for (server, echo_ports) in [("a", &[9000][..]), ("f", &[9000, 9001][..])] {
            let pod = &self.pods[server];
            let name = format!("s-{server}");
            let svc_ports: Vec<(u16, Proto, u16)> =
                SERVICE_PORTS.iter().map(|p| (*p, Proto::Tcp, *p)).collect();
            let svc = self.cluster.add_service("x", &name, &svc_ports, &[pod])?;
            let ip = svc.cluster_ip(IpFamily::Ipv4).map(|ip| ip.to_string());
            let spec_ports: Vec<Value> = SERVICE_PORTS
                .iter()
                .map(|p| json!({"port": p, "targetPort": p, "protocol": "TCP"}))
                .collect();
            self.manifests.put(&format!("svc-{server}"), &json!({
                "apiVersion":"v1","kind":"Service","metadata":{"namespace":"x","name":name},
                "spec":{"clusterIP": ip, "clusterIPs": [ip], "selector":{"app":server}, "ports": spec_ports}}))?;
            #[cfg(feature = "kube")]
            if let Backend::Kube(k) = &self.backend {
                k.service(&name, &self.cluster, server, &SERVICE_PORTS)?;
            }
            for port in echo_ports {
                self._echo.push(EchoServer::start(pod, *port)?);
            }
        }
        Ok(())
    }

    /// The agent flags that select the source (none for the manifest directory, which
    /// [`AgentProcess`] always passes).
    fn source_args(&self) -> Vec<String> {
        match &self.backend {
            Backend::Manifests => Vec::new(),
            #[cfg(feature = "kube")]
            Backend::Kube(k) => k.agent_args(),
        }
    }

    /// Stops the API server (scenario (c) with the API source).
    pub fn stop_api(&mut self) -> Result<(), ChaosError> {
        match &mut self.backend {
            Backend::Manifests => Err(ChaosError::Kube("no API server to stop".into())),
            #[cfg(feature = "kube")]
            Backend::Kube(k) => {
                k.stop_apiserver();
                Ok(())
            }
        }
    }

    /// Starts the API server again on the same port with the same etcd data; returns once it
    /// is ready.
    pub fn start_api(&mut self) -> Result<(), ChaosError> {
        match &mut self.backend {
            Backend::Manifests => Err(ChaosError::Kube("no API server to start".into())),
            #[cfg(feature = "kube")]
            Backend::Kube(k) => k.start_apiserver(),
        }
    }

    /// Whether every agent's status shows the API source failing (it noticed the outage).
    pub fn agents_see_api_down(&self) -> bool {
        self.agents.iter().all(|a| {
            a.status().is_some_and(|s| {
                s["kube"]["resources"]
                    .as_object()
                    .is_some_and(|r| r.values().any(|h| h["failing"] == true))
            })
        })
    }

    /// Whether the cluster state goes through the API.
    pub fn is_kube(&self) -> bool {
        !matches!(self.backend, Backend::Manifests)
    }

    pub fn pod(&self, name: &str) -> &Pod {
        &self.pods[name]
    }

    /// The address of `pod`'s `port`, at its pod IP or through its Service (a and f only).
    pub fn addr(&self, pod: &str, port: u16, via_service: bool) -> SocketAddr {
        let ip = if via_service {
            self.cluster
                .service("x", &format!("s-{pod}"))
                .and_then(|s| s.cluster_ip(IpFamily::Ipv4))
        } else {
            self.pods[pod].ip(IpFamily::Ipv4)
        };
        SocketAddr::new(ip.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into()), port)
    }

    /// Writes the flip policies of `state` into the manifest directory, or into `dir` (the
    /// directory while it is moved away), or through the API (old policy deleted first). Does
    /// not commit.
    pub fn write_state(
        &mut self,
        state: PolicyState,
        dir: Option<&Path>,
    ) -> Result<(), ChaosError> {
        let dir = dir.unwrap_or(self.manifests.dir()).to_owned();
        let f_flip = dir.join("np-f-flip.json");
        let a_from_d = dir.join("np-a-from-d.json");
        let (write, remove, object) = match state {
            PolicyState::A => (
                f_flip,
                a_from_d,
                policy(
                    "f-flip",
                    json!({
                "podSelector":{"matchLabels":{"app":"f"}},
                "ingress":[{"from":[{"podSelector":{"matchLabels":{"app":"c"}}}],"ports":ports(&[81, 9001])}]}),
                ),
            ),
            PolicyState::B => (
                a_from_d,
                f_flip,
                policy(
                    "a-from-d",
                    json!({
                "podSelector":{"matchLabels":{"app":"a"}},
                "ingress":[{"from":[{"podSelector":{"matchLabels":{"app":"d"}}}],"ports":ports(&[80])}]}),
                ),
            ),
        };
        #[cfg(feature = "kube")]
        if let Backend::Kube(k) = &mut self.backend {
            let old = match state {
                PolicyState::A => "a-from-d",
                PolicyState::B => "f-flip",
            };
            k.replace_policy(old, &object)?;
            self.state = state;
            return Ok(());
        }
        crate::agent::write_atomic(&write, object.to_string().as_bytes())?;
        match std::fs::remove_file(&remove) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(ChaosError::Io(format!("{}: {e}", remove.display())))
            }
            _ => {}
        }
        self.state = state;
        Ok(())
    }

    /// The pods of node `n`, as `ns/name`.
    fn local(&self, n: usize) -> Vec<String> {
        self.pods
            .values()
            .filter(|p| p.node() == n)
            .map(Pod::key)
            .collect()
    }

    /// Bumps the manifests' revision (after the changes it publishes).
    pub fn commit(&mut self) -> Result<u64, ChaosError> {
        self.revision = self.manifests.commit()?;
        Ok(self.revision)
    }

    /// Whether a status shows what was last written applied: the manifests' `revision`, or
    /// every write through the API.
    fn applied_in(&self, status: &Value, revision: u64) -> bool {
        match &self.backend {
            Backend::Manifests => status["applied_revision"].as_u64().unwrap_or(0) >= revision,
            #[cfg(feature = "kube")]
            Backend::Kube(k) => k.applied(status),
        }
    }

    /// Whether every agent's status shows `revision` (with the API source: every write)
    /// applied with its pods attached.
    pub fn applied(&self, revision: u64) -> bool {
        self.agents.iter().enumerate().all(|(n, agent)| {
            agent.status().is_some_and(|s| {
                self.applied_in(&s, revision)
                    && self
                        .local(n)
                        .iter()
                        .all(|p| s["endpoints"][p.as_str()] == "attached")
            })
        })
    }

    /// Waits until both agents applied `revision` (with the API source: every write) with their
    /// pods attached.
    pub fn wait_applied(&mut self, revision: u64) -> Result<(), ChaosError> {
        if self.is_kube() {
            return self.wait_applied_kube();
        }
        for n in 0..self.agents.len() {
            let local = self.local(n);
            let agent = &mut self.agents[n];
            agent
                .wait_applied(revision, &local, APPLY_TIMEOUT)
                .map_err(|e| {
                    ChaosError::Agent(format!(
                        "{e}\nagent log (tail):\n{}",
                        tail(&agent.log(), 30)
                    ))
                })?;
        }
        Ok(())
    }

    /// [`Env::wait_applied`] for the API source: polls the statuses (and that the agents run).
    fn wait_applied_kube(&mut self) -> Result<(), ChaosError> {
        let deadline = std::time::Instant::now() + APPLY_TIMEOUT;
        loop {
            self.agents_alive()?;
            if self.applied(0) {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                let statuses: Vec<String> = self
                    .agents
                    .iter()
                    .map(|a| a.status().map(|s| s.to_string()).unwrap_or_default())
                    .collect();
                return Err(ChaosError::Agent(format!(
                    "the writes through the API were not applied within {APPLY_TIMEOUT:?}; statuses:\n{}\n{}",
                    statuses.join("\n"),
                    self.logs(30)
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether both agents still run (a wait for an already applied revision).
    pub fn agents_alive(&mut self) -> Result<(), ChaosError> {
        for n in 0..self.agents.len() {
            let local = self.local(n);
            let agent = &mut self.agents[n];
            if let Err(e @ crate::agent::AgentError::Exited { .. }) =
                agent.wait_applied(0, &local, Duration::from_millis(1))
            {
                return Err(ChaosError::Agent(format!(
                    "{e}\nagent log (tail):\n{}",
                    tail(&agent.log(), 30)
                )));
            }
        }
        Ok(())
    }

    /// The last lines of every agent's log.
    pub fn logs(&self, lines: usize) -> String {
        self.agents
            .iter()
            .enumerate()
            .map(|(n, a)| format!("--- agent node {n}:\n{}", tail(&a.log(), lines)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
