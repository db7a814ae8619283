//! A node: a network namespace with forwarding on, an underlay link, a pod CIDR per family,
//! kube-proxy's base chains, and the CNI config its pods are wired with.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use ipnet::IpNet;
use serde_json::Value;

use crate::addr::{self, Family, IpFamily};
use crate::cni::{self, CniMode};
use crate::exec::{self, ExecError};
use crate::names::RunId;
use crate::netns::{self, Netns, NetnsError};
use crate::service::{self, ServiceError};

/// The node's underlay interface (veth to the other node, or a dummy on a one-node cluster).
pub const UPLINK: &str = "ul0";

/// Setting up a node failed.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("node setup: {0}")]
    Exec(#[from] ExecError),
    #[error("cannot set sysctl {key} in {ns}: {source}")]
    Sysctl {
        ns: String,
        key: String,
        #[source]
        source: std::io::Error,
    },
    #[error("kube-proxy base rules: {0}")]
    Service(#[from] ServiceError),
}

/// One test node. Immutable once built, except for the lock that serialises CNI calls (the
/// bridge plugin races with itself when two ADDs create the bridge at once).
#[derive(Debug)]
pub struct Node {
    index: usize,
    family: Family,
    mode: CniMode,
    chain: Vec<Value>,
    pub(crate) cni_lock: Mutex<()>,
    netns: Netns,
}

impl Node {
    /// Creates the namespace, sets the sysctls and renders the CNI chain. The underlay is
    /// wired separately ([`link_underlay`]) because it joins two nodes.
    pub(crate) fn create(
        run: &RunId,
        index: usize,
        family: Family,
        mode: CniMode,
        chained: &[Value],
        state_dir: &Path,
    ) -> Result<Self, NodeError> {
        let netns = Netns::create(&run.name(&format!("n{index}")))?;
        let ipam_dir = state_dir.join(format!("ipam-n{index}"));
        let subnets: Vec<IpNet> = family
            .ip_families()
            .iter()
            .map(|f| addr::pod_cidr(index, *f))
            .collect();
        let mut chain = vec![cni::main_plugin(mode, &subnets, &ipam_dir)];
        chain.extend(chained.iter().cloned());
        let node = Node {
            index,
            family,
            mode,
            chain,
            cni_lock: Mutex::new(()),
            netns,
        };
        node.set_sysctls()?;
        Ok(node)
    }

    fn set_sysctls(&self) -> Result<(), NodeError> {
        let mut keys = vec![
            "net/ipv4/ip_forward",
            "net/ipv6/conf/all/forwarding",
            // Addresses the plugins put on the bridge and host veths would otherwise stay
            // "tentative" for a second or more, and early probes would fail.
            "net/ipv6/conf/all/accept_dad:0",
            "net/ipv6/conf/default/accept_dad:0",
        ];
        if self.mode == CniMode::Bridge {
            // Per namespace on this kernel and 1 by default; with 0, replies from a bridged
            // backend skip conntrack and are never un-DNATed.
            keys.push("net/bridge/bridge-nf-call-iptables");
            keys.push("net/bridge/bridge-nf-call-ip6tables");
        }
        for key in keys {
            let (key, value) = key.split_once(':').unwrap_or((key, "1"));
            self.sysctl(key, value)?;
        }
        Ok(())
    }

    fn sysctl(&self, key: &str, value: &str) -> Result<(), NodeError> {
        let path = PathBuf::from("/proc/sys").join(key);
        self.netns
            .run(|| std::fs::write(&path, value))?
            .map_err(|source| NodeError::Sysctl {
                ns: self.netns.name().to_owned(),
                key: key.to_owned(),
                source,
            })
    }

    fn ip(&self, args: &[&str]) -> Result<(), NodeError> {
        exec::run(
            Command::new("ip")
                .arg("-n")
                .arg(self.netns.name())
                .args(args),
        )?;
        Ok(())
    }

    /// Addresses on the uplink, routes to the other nodes' pod CIDRs and to the Service CIDR,
    /// and kube-proxy's base chains.
    pub(crate) fn configure(&self, nodes: usize) -> Result<(), NodeError> {
        for &fam in self.family.ip_families() {
            let own = addr::node_ip(self.index, fam).to_string();
            self.ip(&["addr", "add", &own, "dev", UPLINK])?;
        }
        self.ip(&["link", "set", UPLINK, "up"])?;
        for &fam in self.family.ip_families() {
            for peer in (0..nodes).filter(|&j| j != self.index) {
                let cidr = addr::pod_cidr(peer, fam).to_string();
                let via = addr::node_ip(peer, fam).addr().to_string();
                self.ip(&["route", "add", &cidr, "via", &via])?;
            }
            // Like a node's default route: lets processes on the node reach ClusterIPs
            // (OUTPUT DNAT happens after the routing decision).
            let svc = addr::service_cidr(fam).to_string();
            self.ip(&["route", "add", &svc, "dev", UPLINK])?;
            service::apply(self.netns.name(), fam, &service::bootstrap_rules())?;
        }
        Ok(())
    }

    pub fn index(&self) -> usize {
        self.index
    }

    pub fn family(&self) -> Family {
        self.family
    }

    pub fn cni_mode(&self) -> CniMode {
        self.mode
    }

    /// The CNI plugin chain (main plugin first) pods on this node are added with.
    pub fn cni_chain(&self) -> &[Value] {
        &self.chain
    }

    pub fn netns_name(&self) -> &str {
        self.netns.name()
    }

    /// `/var/run/netns/<name>`.
    pub fn netns_path(&self) -> PathBuf {
        self.netns.path()
    }

    /// The node's underlay IPs (what a hostNetwork peer on this node appears as).
    pub fn ips(&self) -> Vec<IpAddr> {
        self.family
            .ip_families()
            .iter()
            .map(|f| addr::node_ip(self.index, *f).addr())
            .collect()
    }

    /// This node's pod CIDRs, one per family.
    pub fn pod_cidrs(&self) -> Vec<IpNet> {
        self.family
            .ip_families()
            .iter()
            .map(|f| addr::pod_cidr(self.index, *f))
            .collect()
    }

    /// The uplink's name (`ul0`), as the agent would see it inside the node namespace.
    pub fn uplink(&self) -> &'static str {
        UPLINK
    }

    pub fn uplink_ifindex(&self) -> Result<u32, NetnsError> {
        netns::ifindex(self.netns.name(), UPLINK)
    }

    /// The bridge in bridge mode (exists once the first pod is added).
    pub fn bridge(&self) -> Option<&'static str> {
        (self.mode == CniMode::Bridge).then_some(cni::BRIDGE_NAME)
    }

    /// A command that runs inside the node namespace (the agent is started this way). Only
    /// the network namespace changes: mounts, including bpffs, stay the host's.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Result<Command, NetnsError> {
        self.netns.command(program)
    }

    /// Runs `f` on a thread inside the node namespace.
    pub fn run<T: Send, F: FnOnce() -> T + Send>(&self, f: F) -> Result<T, NetnsError> {
        self.netns.run(f)
    }
}

/// Connects the nodes' uplinks. Two nodes get a direct veth pair; any other count gets an
/// underlay namespace (`<prefix>-ul`) holding a bridge `br0` that every node's uplink veth is
/// plugged into (this kernel has no dummy device, so a lone node needs a peer too). The
/// interfaces are created directly inside the namespaces and never exist in the root one.
pub(crate) fn link_underlay(run: &RunId, nodes: &[Node]) -> Result<Option<Netns>, NodeError> {
    if let [a, b] = nodes {
        veth(a.netns_name(), UPLINK, b.netns_name(), UPLINK)?;
        return Ok(None);
    }
    let ul = Netns::create(&run.name("ul"))?;
    let ip = |args: &[&str]| exec::run(Command::new("ip").args(["-n", ul.name()]).args(args));
    ip(&["link", "add", "br0", "type", "bridge"])?;
    // A plain switch: no netfilter on bridged frames.
    ul.run(|| std::fs::write("/proc/sys/net/bridge/bridge-nf-call-iptables", "0"))?
        .map_err(|source| NodeError::Sysctl {
            ns: ul.name().to_owned(),
            key: "net/bridge/bridge-nf-call-iptables".to_owned(),
            source,
        })?;
    ip(&["link", "set", "br0", "up"])?;
    for n in nodes {
        let port = format!("n{}", n.index);
        veth(n.netns_name(), UPLINK, ul.name(), &port)?;
        ip(&["link", "set", &port, "master", "br0", "up"])?;
    }
    Ok(Some(ul))
}

fn veth(ns_a: &str, a: &str, ns_b: &str, b: &str) -> Result<(), ExecError> {
    let args = [
        "-n", ns_a, "link", "add", a, "type", "veth", "peer", "name", b, "netns", ns_b,
    ];
    exec::run(Command::new("ip").args(args)).map(drop)
}

/// The node's IP of one family (for hostNetwork peers).
pub fn node_ip(index: usize, fam: IpFamily) -> IpAddr {
    addr::node_ip(index, fam).addr()
}
