//! The enforcement modes compared, each switched on and off on the same test nodes.

use std::{net::Ipv4Addr, path::PathBuf, time::Duration};

use anyhow::Context as _;
use palisade_tests::{
    agent::{node_name, pod_manifest, AgentProcess, Manifests},
    bench::rulesets::{self, Rule},
    IpFamily, Pod, TestCluster,
};
use serde::Serialize;
use serde_json::json;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// No enforcement at all.
    None,
    /// The real Palisade agent on each node (manifest source).
    Palisade,
    /// kube-router's method: iptables chains and ipsets.
    Iptables,
    /// kube-network-policies' table layout, verdicts in nftables sets and verdict maps.
    Nftables,
}

impl Mode {
    pub const ALL: [Mode; 4] = [Mode::None, Mode::Palisade, Mode::Iptables, Mode::Nftables];
}

/// What is switched on; switching off drops it.
pub enum Active {
    None,
    Palisade {
        agents: Vec<AgentProcess>,
        dir: PathBuf,
    },
    Iptables {
        rules: usize,
        per_node: Vec<usize>,
    },
    Nftables,
}

pub struct Pods<'a> {
    pub client: &'a Pod,
    /// Server pods, each on its own node index.
    pub servers: &'a [Pod],
}

fn v4(pod: &Pod) -> anyhow::Result<Ipv4Addr> {
    match pod.ip(IpFamily::Ipv4) {
        Some(std::net::IpAddr::V4(a)) => Ok(a),
        _ => anyhow::bail!("pod {} has no IPv4 address", pod.key()),
    }
}

/// The server pods on node `n`, by IPv4 address.
fn local(pods: &Pods<'_>, n: usize) -> anyhow::Result<Vec<Ipv4Addr>> {
    pods.servers
        .iter()
        .filter(|p| p.node() == n)
        .map(v4)
        .collect()
}

/// Switches `mode` on with `rules` on every node.
pub fn enable(
    cluster: &TestCluster,
    pods: &Pods<'_>,
    mode: Mode,
    rules: &[Rule],
    agent_bin: &std::path::Path,
) -> anyhow::Result<Active> {
    let nodes = cluster.nodes().len();
    match mode {
        Mode::None => Ok(Active::None),
        Mode::Iptables => {
            let mut per_node = Vec::new();
            for n in 0..nodes {
                let ips = local(pods, n)?;
                rulesets::load_kube_router(cluster.node(n).netns_name(), rules, &ips)?;
                per_node.push(ips.len());
            }
            Ok(Active::Iptables {
                rules: rules.len(),
                per_node,
            })
        }
        Mode::Nftables => {
            for n in 0..nodes {
                let ips = local(pods, n)?;
                let node = cluster.node(n);
                // The node's own addresses: its underlay address and its pod gateway.
                let mut own: Vec<Ipv4Addr> = node
                    .ips()
                    .into_iter()
                    .filter_map(|a| match a {
                        std::net::IpAddr::V4(a) => Some(a),
                        std::net::IpAddr::V6(_) => None,
                    })
                    .collect();
                for net in node.pod_cidrs() {
                    if let ipnet::IpNet::V4(n4) = net {
                        own.push(Ipv4Addr::from(u32::from(n4.network()) + 1));
                    }
                }
                rulesets::load_nft(node.netns_name(), rules, &ips, &own)?;
            }
            Ok(Active::Nftables)
        }
        Mode::Palisade => {
            let dir = std::env::temp_dir().join(format!(
                "palisade-bench-traffic-{}-{}",
                std::process::id(),
                rules.len()
            ));
            let mut manifests = Manifests::new(dir.join("manifests"))?;
            manifests.put(
                "ns-bench",
                &json!({"apiVersion":"v1","kind":"Namespace","metadata":{"name":"bench"}}),
            )?;
            manifests.put(
                "pod-client",
                &pod_manifest(
                    pods.client,
                    &node_name(pods.client.node()),
                    &json!({"app":"client"}),
                ),
            )?;
            for s in pods.servers {
                manifests.put(
                    &format!("pod-{}", s.name()),
                    &pod_manifest(s, &node_name(s.node()), &json!({"app":"server"})),
                )?;
            }
            for (name, obj) in rulesets::policies(rules, "bench", "server") {
                manifests.put(&format!("np-{name}"), &obj)?;
            }
            let mut agents = Vec::new();
            for n in 0..nodes {
                agents.push(AgentProcess::start(
                    cluster,
                    n,
                    agent_bin,
                    &manifests,
                    dir.join(format!("node{n}")),
                )?);
            }
            let all: Vec<&Pod> = std::iter::once(pods.client).chain(pods.servers).collect();
            for p in &all {
                agents[p.node()].report_endpoint(p)?;
            }
            let rev = manifests.commit()?;
            for (n, agent) in agents.iter_mut().enumerate() {
                let mine: Vec<String> = all
                    .iter()
                    .filter(|p| p.node() == n)
                    .map(|p| p.key())
                    .collect();
                agent
                    .wait_applied(rev, &mine, Duration::from_secs(120))
                    .with_context(|| format!("agent log:\n{}", agent.log()))?;
            }
            Ok(Active::Palisade { agents, dir })
        }
    }
}

/// Switches the mode off again (agents stopped, their bpffs unmounted, which detaches the
/// programs; rulesets removed by name).
pub fn disable(cluster: &TestCluster, active: Active) -> anyhow::Result<()> {
    match active {
        Active::None => {}
        Active::Palisade { agents, dir } => {
            drop(agents);
            let _ = std::fs::remove_dir_all(dir);
        }
        Active::Iptables { rules, per_node } => {
            for (n, pods) in per_node.into_iter().enumerate() {
                rulesets::unload_kube_router(cluster.node(n).netns_name(), rules, pods)?;
            }
        }
        Active::Nftables => {
            for n in 0..cluster.nodes().len() {
                rulesets::unload_nft(cluster.node(n).netns_name())?;
            }
        }
    }
    Ok(())
}
