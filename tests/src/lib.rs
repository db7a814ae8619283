//! Test nodes for Palisade: nodes and pods as network namespaces wired by the real CNI
//! plugins, Services as kube-proxy-style iptables DNAT, and real TCP/UDP probes.
//!
//! ```no_run
//! use palisade_tests::{CniMode, Family, Port, Proto, ProbeSpec, TestCluster};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let cluster = TestCluster::builder().family(Family::Dual).nodes(2).cni(CniMode::Bridge).build()?;
//! let a = cluster.add_pod(0, "x", "a", &[Port::tcp(80), Port::udp(81)])?;
//! let b = cluster.add_pod(1, "x", "b", &[Port::tcp(80)])?;
//! let svc = cluster.add_service("x", "s-x-a", &[(80, Proto::Tcp, 80)], &[&a])?;
//! let to = std::net::SocketAddr::new(svc.cluster_ips[0], 80);
//! let spec = ProbeSpec { from: &b, to, proto: Proto::Tcp, timeout: std::time::Duration::from_secs(1) };
//! assert!(cluster.probe_many(&[spec])?[0].allowed);
//! # Ok(()) }
//! ```
//! See docs/test-nodes.md for the topology and how each part emulates a real node.

pub mod addr;
pub mod agent;
pub mod bench;
pub mod chaos;
pub mod cluster;
pub mod cni;
pub mod conformance;
pub mod exec;
pub mod kube;
pub mod names;
pub mod netns;
pub mod node;
pub mod pod;
pub mod probe;
pub mod service;
pub mod soak;

pub use addr::{Family, IpFamily};
pub use cluster::{ClusterError, ProbeSpec, TestCluster, TestClusterBuilder};
pub use cni::CniMode;
pub use names::cleanup_stale;
pub use node::Node;
pub use pod::{Pod, Port};
pub use probe::{Outcome, Proto};
pub use service::Service;

/// Why privileged tests cannot run here, if they cannot: not root, or a tool is missing.
pub fn missing_privileges() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (network namespaces, veths, iptables)".to_owned());
    }
    let tools = [
        ("/usr/lib/cni/bridge", "containernetworking-plugins"),
        ("/usr/lib/cni/ptp", "containernetworking-plugins"),
        ("/usr/lib/cni/host-local", "containernetworking-plugins"),
        ("/usr/sbin/ip", "iproute2"),
        ("/usr/sbin/iptables-restore", "iptables"),
    ];
    let missing: Vec<&str> = tools
        .iter()
        .filter(|(path, _)| !std::path::Path::new(path).exists())
        .map(|(_, pkg)| *pkg)
        .collect();
    (!missing.is_empty())
        .then(|| format!("missing packages: apt-get install -y {}", missing.join(" ")))
}

/// Returns from the calling test, saying why, when it cannot run on this machine.
#[macro_export]
macro_rules! require_root {
    () => {
        if let Some(why) = $crate::missing_privileges() {
            let thread = ::std::thread::current();
            let test = thread.name().unwrap_or(module_path!());
            eprintln!("SKIPPED {test}: {why}");
            return;
        }
    };
}
