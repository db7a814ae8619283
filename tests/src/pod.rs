//! Pods: a network namespace wired by the CNI chain of its node, with a probe server
//! serving its containerPorts.

use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

use crate::addr::IpFamily;
use crate::cni::{Attachment, CniError};
use crate::names::RunId;
use crate::netns::{self, Netns, NetnsError};
use crate::node::Node;
use crate::probe::Proto;

/// How long a probe server may take to bind its ports.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// A containerPort.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Port {
    pub proto: Proto,
    pub port: u16,
    pub name: Option<String>,
}

impl Port {
    pub fn tcp(port: u16) -> Self {
        Port {
            proto: Proto::Tcp,
            port,
            name: None,
        }
    }

    pub fn udp(port: u16) -> Self {
        Port {
            proto: Proto::Udp,
            port,
            name: None,
        }
    }

    /// An SCTP port: served only where the kernel has SCTP (`probe::sctp_supported`).
    pub fn sctp(port: u16) -> Self {
        Port {
            proto: Proto::Sctp,
            port,
            name: None,
        }
    }

    /// Gives the port a name (`serve-80-tcp`), for named-port policies.
    pub fn named(mut self, name: &str) -> Self {
        self.name = Some(name.to_owned());
        self
    }
}

/// Creating or serving a pod failed.
#[derive(Debug, thiserror::Error)]
pub enum PodError {
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error(transparent)]
    Cni(#[from] CniError),
    #[error("cannot write {path}: {source}")]
    Sysctl {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start probe server {bin}: {source}")]
    ProbeSpawn {
        bin: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("probe server in {pod} did not become ready: {reason}")]
    ProbeNotReady { pod: String, reason: String },
}

/// What the harness knows about a pod: its Kubernetes identity and what the runtime saw.
/// Cheap to clone; the namespace and server belong to the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pod {
    namespace: String,
    name: String,
    node: usize,
    netns: String,
    container_id: String,
    ips: Vec<IpAddr>,
    host_veth: String,
    host_ifindex: u32,
    ports: Vec<Port>,
    cni_result: Value,
}

impl Pod {
    pub fn namespace(&self) -> &str {
        &self.namespace
    }
    pub fn name(&self) -> &str {
        &self.name
    }
    /// `namespace/name`, the key upstream's tables use.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
    /// Index of the node it runs on.
    pub fn node(&self) -> usize {
        self.node
    }
    pub fn netns_name(&self) -> &str {
        &self.netns
    }
    pub fn netns_path(&self) -> PathBuf {
        netns::path_of(&self.netns)
    }
    pub fn container_id(&self) -> &str {
        &self.container_id
    }
    /// Pod IPs, IPv4 first on dual-stack.
    pub fn ips(&self) -> &[IpAddr] {
        &self.ips
    }
    pub fn ip(&self, fam: IpFamily) -> Option<IpAddr> {
        self.ips.iter().copied().find(|ip| IpFamily::of(*ip) == fam)
    }
    /// The host end of its veth, in the node namespace (where the agent attaches).
    pub fn host_veth(&self) -> &str {
        &self.host_veth
    }
    /// The host veth's ifindex in the node namespace.
    pub fn host_ifindex(&self) -> u32 {
        self.host_ifindex
    }
    pub fn ports(&self) -> &[Port] {
        &self.ports
    }
    /// The CNI ADD result of the last plugin in the chain, as a runtime caches it.
    pub fn cni_result(&self) -> &Value {
        &self.cni_result
    }
}

/// A running `probe serve`; killed on drop. It also exits by itself when our end of its stdin
/// closes, so a harness that dies without running destructors leaves no server behind.
#[derive(Debug)]
struct ProbeServer {
    child: Child,
    _stdin: Option<ChildStdin>,
}

impl Drop for ProbeServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A pod's resources: the server, the CNI attachment and the namespace, torn down in that
/// order (DEL runs even when ADD failed half way, as the CNI spec asks of runtimes).
#[derive(Debug)]
pub(crate) struct PodRuntime {
    pub(crate) pod: Pod,
    server: Option<ProbeServer>,
    attachment: Attachment,
    chain: Vec<Value>,
    result: Option<Value>,
    _netns: Netns,
}

impl Drop for PodRuntime {
    fn drop(&mut self) {
        self.server = None;
        let empty = Value::Object(Default::default());
        let prev = self.result.as_ref().unwrap_or(&empty);
        if let Err(e) = self.attachment.del(&self.chain, prev) {
            eprintln!("palisade-tests: {e}");
        }
        let _ = self.attachment.loopback("DEL");
    }
}

/// Everything needed to create a pod besides the node.
#[derive(Debug)]
pub(crate) struct PodSpec<'a> {
    pub run: &'a RunId,
    pub seq: u32,
    pub namespace: &'a str,
    pub name: &'a str,
    pub ports: &'a [Port],
    pub probe_bin: &'a Path,
    pub cni_path: &'a str,
}

pub(crate) fn create(node: &Node, spec: &PodSpec<'_>) -> Result<PodRuntime, PodError> {
    let ns_name = spec
        .run
        .name(&format!("p{}-{}-{}", spec.seq, spec.namespace, spec.name));
    let netns = Netns::create(&ns_name)?;
    skip_dad(&netns)?;
    let attachment = Attachment {
        node_netns: node.netns_name().to_owned(),
        container_id: ns_name.clone(),
        pod_netns: netns.path(),
        ifname: "eth0".to_owned(),
        pod_namespace: spec.namespace.to_owned(),
        pod_name: spec.name.to_owned(),
        cni_path: spec.cni_path.to_owned(),
    };
    let mut rt = PodRuntime {
        pod: Pod {
            namespace: spec.namespace.to_owned(),
            name: spec.name.to_owned(),
            node: node.index(),
            netns: ns_name,
            container_id: attachment.container_id.clone(),
            ips: Vec::new(),
            host_veth: String::new(),
            host_ifindex: 0,
            ports: spec.ports.to_vec(),
            cni_result: Value::Null,
        },
        server: None,
        chain: node.cni_chain().to_vec(),
        attachment,
        result: None,
        _netns: netns,
    };
    wire(node, &mut rt)?;
    if !spec.ports.is_empty() {
        rt.server = Some(start_server(&rt.pod, spec.probe_bin)?);
    }
    Ok(rt)
}

/// Turns off IPv6 duplicate address detection in the pod: the plugins wait for addresses to
/// leave "tentative" (ptp about 2 s per pod), and addresses from host-local cannot collide.
fn skip_dad(netns: &Netns) -> Result<(), PodError> {
    netns.run(|| {
        for conf in ["all", "default"] {
            let path = format!("/proc/sys/net/ipv6/conf/{conf}/accept_dad");
            std::fs::write(&path, "0").map_err(|source| PodError::Sysctl { path, source })?;
        }
        Ok(())
    })?
}

fn wire(node: &Node, rt: &mut PodRuntime) -> Result<(), PodError> {
    let result = {
        let _serial = node.cni_lock.lock().unwrap_or_else(|e| e.into_inner());
        rt.attachment.loopback("ADD")?;
        rt.attachment.add(&rt.chain)?
    };
    rt.result = Some(result.raw.clone());
    rt.pod.ips = result.pod_ips();
    rt.pod.ips.sort_by_key(|ip| IpFamily::of(*ip));
    rt.pod.host_veth = result.host_veth()?.to_owned();
    rt.pod.host_ifindex = netns::ifindex(node.netns_name(), &rt.pod.host_veth)?;
    rt.pod.cni_result = result.raw;
    Ok(())
}

fn port_list(ports: &[Port], proto: Proto) -> String {
    let list: Vec<String> = ports
        .iter()
        .filter(|p| p.proto == proto)
        .map(|p| p.port.to_string())
        .collect();
    list.join(",")
}

fn start_server(pod: &Pod, bin: &Path) -> Result<ProbeServer, PodError> {
    let mut cmd = netns::command_in(&pod.netns, bin)?;
    cmd.args(["serve", "--id", &pod.key()])
        .args(["--tcp", &port_list(&pod.ports, Proto::Tcp)])
        .args(["--udp", &port_list(&pod.ports, Proto::Udp)]);
    let sctp = port_list(&pod.ports, Proto::Sctp);
    if !sctp.is_empty() {
        cmd.args(["--sctp", &sctp]);
    }
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
    let mut child = cmd.spawn().map_err(|source| PodError::ProbeSpawn {
        bin: bin.to_owned(),
        source,
    })?;
    let stdout = child.stdout.take();
    let server = ProbeServer {
        _stdin: child.stdin.take(),
        child,
    };
    wait_ready(stdout, &pod.key())?;
    Ok(server)
}

/// Waits for the server's "ready" line: it prints it only after binding every port.
fn wait_ready(stdout: Option<std::process::ChildStdout>, pod: &str) -> Result<(), PodError> {
    let not_ready = |reason: String| PodError::ProbeNotReady {
        pod: pod.to_owned(),
        reason,
    };
    let stdout = stdout.ok_or_else(|| not_ready("no stdout".to_owned()))?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = tx.send(BufReader::new(stdout).read_line(&mut line).map(|_| line));
    });
    match rx.recv_timeout(READY_TIMEOUT) {
        Ok(Ok(line)) if line.trim() == "ready" => Ok(()),
        Ok(Ok(line)) => Err(not_ready(format!(
            "exited or said {line:?} (see its stderr)"
        ))),
        Ok(Err(e)) => Err(not_ready(e.to_string())),
        Err(_) => Err(not_ready(format!("no \"ready\" within {READY_TIMEOUT:?}"))),
    }
}
