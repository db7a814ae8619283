//! The chaos environment: two test nodes, six pods, two Services, the real agent on each node
//! (manifest-directory source), echo servers for long-lived connections, and the two policy
//! states the outage scenarios switch between.
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

use super::ChaosError;
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

/// Field order is teardown order: agents, echo servers, the cluster, the directory.
#[derive(Debug)]
pub struct Env {
    pub agents: Vec<AgentProcess>,
    _echo: Vec<EchoServer>,
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
    pub fn build(agent_bin: &Path) -> Result<Self, ChaosError> {
        crate::cleanup_stale();
        let dir =
            TempDir(std::env::temp_dir().join(format!("palisade-chaos-{}", std::process::id())));
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
        let mut pods = BTreeMap::new();
        for (name, node, role) in PODS {
            let pod = cluster.add_pod(node, "x", name, &[Port::tcp(80), Port::tcp(81)])?;
            let labels = json!({"app": name, "role": role});
            manifests.put(
                &format!("pod-{name}"),
                &pod_manifest(&pod, &node_name(node), &labels),
            )?;
            pods.insert(name.to_owned(), pod);
        }
        let mut echo = Vec::new();
        for (server, echo_ports) in [("a", &[9000][..]), ("f", &[9000, 9001][..])] {
            let pod = &pods[server];
            let svc_ports: Vec<(u16, Proto, u16)> =
                SERVICE_PORTS.iter().map(|p| (*p, Proto::Tcp, *p)).collect();
            let svc = cluster.add_service("x", &format!("s-{server}"), &svc_ports, &[pod])?;
            let ip = svc.cluster_ip(IpFamily::Ipv4).map(|ip| ip.to_string());
            let spec_ports: Vec<Value> = SERVICE_PORTS
                .iter()
                .map(|p| json!({"port": p, "targetPort": p, "protocol": "TCP"}))
                .collect();
            manifests.put(&format!("svc-{server}"), &json!({
                "apiVersion":"v1","kind":"Service","metadata":{"namespace":"x","name":format!("s-{server}")},
                "spec":{"clusterIP": ip, "clusterIPs": [ip], "selector":{"app":server}, "ports": spec_ports}}))?;
            for port in echo_ports {
                echo.push(EchoServer::start(pod, *port)?);
            }
        }
        manifests.put("np-servers-in", &policy("servers-in", json!({
            "podSelector":{"matchExpressions":[{"key":"app","operator":"In","values":["a","f"]}]},
            "ingress":[{"from":[{"podSelector":{"matchLabels":{"role":"client"}}}],"ports":ports(&[80, 9000])}]})))?;
        manifests.put("np-clients-out", &policy("clients-out", json!({
            "podSelector":{"matchLabels":{"role":"client"}}, "policyTypes":["Egress"],
            "egress":[{"to":[{"podSelector":{"matchExpressions":[{"key":"app","operator":"In","values":["a","f"]}]}}],
                       "ports":ports(&SERVICE_PORTS)}]})))?;
        let mut env = Env {
            agents: Vec::new(),
            _echo: echo,
            cluster,
            manifests,
            pods,
            state: PolicyState::A,
            revision: 0,
            agent_bin: agent_bin.to_owned(),
            dir,
        };
        env.write_state(PolicyState::A, None)?;
        // Extra agent flags, for negative controls of the harness itself (`--audit` must show
        // denied attempts succeeding).
        let extra = std::env::var("PALISADE_CHAOS_AGENT_ARGS").unwrap_or_default();
        let extra: Vec<&str> = extra.split_whitespace().collect();
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
    /// directory while it is moved away). Does not commit.
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

    /// Whether every agent's status shows `revision` applied with its pods attached.
    pub fn applied(&self, revision: u64) -> bool {
        self.agents.iter().enumerate().all(|(n, agent)| {
            agent.status().is_some_and(|s| {
                s["applied_revision"].as_u64().unwrap_or(0) >= revision
                    && self
                        .local(n)
                        .iter()
                        .all(|p| s["endpoints"][p.as_str()] == "attached")
            })
        })
    }

    /// Waits until both agents applied `revision` with their pods attached.
    pub fn wait_applied(&mut self, revision: u64) -> Result<(), ChaosError> {
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
