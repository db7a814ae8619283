//! A synthetic cluster of any size (`agent/src/compiler/bench.rs` has a fixed shape that
//! repeats pod IPs past 250 pods per namespace): namespaces of 100 pods (10 apps × 10
//! replicas), unique pod IPs, 100 pods per node, and `policies` NetworkPolicies spread
//! round-robin over the namespaces, of four kinds in turn:
//! 0. ingress from the previous app of the namespace on the named port `http`;
//! 1. ingress from tier-0 pods of the namespaces of one team (namespace and pod selector),
//!    TCP 9000-9100 (`endPort`);
//! 2. egress to one app in every namespace on `http`, and UDP 53 to 10.0.0.0/8 except a /16;
//! 3. ingress from 192.168.x.0/24 on TCP 443 and from every pod of the namespace on 8080.

use std::{collections::BTreeMap, net::IpAddr};

use palisade::model::{
    ContainerPort, EgressRule, IngressRule, IntOrString, IpBlock, LabelSelector, Labels,
    ModelChange, Namespace, NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec,
    Pod, Protocol,
};
use serde::Serialize;

pub const PODS_PER_NAMESPACE: usize = 100;
pub const PODS_PER_NODE: usize = 100;
const APPS: usize = 10;

/// Size of the synthetic cluster.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Size {
    pub pods: usize,
    pub policies: usize,
}

impl Size {
    pub fn namespaces(&self) -> usize {
        self.pods.div_ceil(PODS_PER_NAMESPACE).max(1)
    }

    pub fn nodes(&self) -> usize {
        self.pods.div_ceil(PODS_PER_NODE).max(1)
    }
}

/// The node the agent compiles for.
pub const NODE: &str = "node0";

fn labels(pairs: &[(&str, String)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

fn select(pairs: &[(&str, String)]) -> LabelSelector {
    LabelSelector {
        match_labels: Some(labels(pairs).into_iter().collect::<BTreeMap<_, _>>()),
        match_expressions: None,
    }
}

fn pod(i: usize, size: &Size) -> Pod {
    let ns = i / PODS_PER_NAMESPACE;
    let app = (i % PODS_PER_NAMESPACE) / (PODS_PER_NAMESPACE / APPS);
    let n = u32::try_from(i + 1).unwrap_or(u32::MAX).to_be_bytes();
    Pod {
        namespace: format!("ns{ns}"),
        name: format!("app{app}-{i}"),
        labels: labels(&[
            ("app", format!("app{app}")),
            ("tier", format!("t{}", app % 3)),
        ]),
        ips: vec![IpAddr::from([10, n[1], n[2], n[3]])],
        node_name: Some(format!("node{}", i % size.nodes())),
        host_network: false,
        container_ports: vec![
            ContainerPort {
                name: Some("http".to_owned()),
                port: 8080,
                protocol: Protocol::Tcp,
            },
            ContainerPort {
                name: Some("metrics".to_owned()),
                port: 9090,
                protocol: Protocol::Tcp,
            },
        ],
    }
}

fn port(protocol: &str, port: IntOrString, end_port: Option<i64>) -> NetworkPolicyPort {
    NetworkPolicyPort {
        protocol: Some(protocol.to_owned()),
        port: Some(port),
        end_port,
    }
}

fn peer_pods(sel: LabelSelector) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        pod_selector: Some(sel),
        ..Default::default()
    }
}

fn peer_cidr(cidr: String, except: Option<Vec<String>>) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        ip_block: Some(IpBlock { cidr, except }),
        ..Default::default()
    }
}

/// Policy number `k`.
fn policy(k: usize, size: &Size) -> NetworkPolicy {
    let namespaces = size.namespaces();
    let ns = k % namespaces;
    let round = k / namespaces;
    let app = (round + ns) % APPS;
    let prev = (app + APPS - 1) % APPS;
    let http = || port("TCP", IntOrString::String("http".to_owned()), None);
    let target = select(&[("app", format!("app{app}"))]);
    let spec = match k % 4 {
        0 => NetworkPolicySpec {
            pod_selector: target,
            ingress: Some(vec![IngressRule {
                from: Some(vec![peer_pods(select(&[("app", format!("app{prev}"))]))]),
                ports: Some(vec![http()]),
            }]),
            ..Default::default()
        },
        1 => NetworkPolicySpec {
            pod_selector: target,
            ingress: Some(vec![IngressRule {
                from: Some(vec![NetworkPolicyPeer {
                    namespace_selector: Some(select(&[("team", format!("team{}", k % 10))])),
                    pod_selector: Some(select(&[("tier", "t0".to_owned())])),
                    ..Default::default()
                }]),
                ports: Some(vec![port("TCP", IntOrString::Int(9000), Some(9100))]),
            }]),
            ..Default::default()
        },
        2 => NetworkPolicySpec {
            pod_selector: target,
            policy_types: Some(vec!["Egress".to_owned()]),
            egress: Some(vec![
                EgressRule {
                    to: Some(vec![NetworkPolicyPeer {
                        namespace_selector: Some(LabelSelector::default()),
                        pod_selector: Some(select(&[("app", format!("app{prev}"))])),
                        ..Default::default()
                    }]),
                    ports: Some(vec![http()]),
                },
                EgressRule {
                    to: Some(vec![peer_cidr(
                        "10.0.0.0/8".to_owned(),
                        Some(vec![format!("10.{}.0.0/16", ns % 250)]),
                    )]),
                    ports: Some(vec![port("UDP", IntOrString::Int(53), None)]),
                },
            ]),
            ..Default::default()
        },
        _ => NetworkPolicySpec {
            pod_selector: target,
            ingress: Some(vec![
                IngressRule {
                    from: Some(vec![peer_cidr(format!("192.168.{}.0/24", k % 256), None)]),
                    ports: Some(vec![port("TCP", IntOrString::Int(443), None)]),
                },
                IngressRule {
                    from: Some(vec![peer_pods(LabelSelector::default())]),
                    ports: Some(vec![port("TCP", IntOrString::Int(8080), None)]),
                },
            ]),
            ..Default::default()
        },
    };
    NetworkPolicy {
        namespace: format!("ns{ns}"),
        name: format!("p{k}"),
        spec,
    }
}

/// The model's objects as changes, in the order a source would deliver them.
pub fn changes(size: &Size) -> Vec<ModelChange> {
    let mut out = Vec::with_capacity(size.namespaces() + size.pods + size.policies);
    for ns in 0..size.namespaces() {
        out.push(ModelChange::UpsertNamespace(Namespace::new(
            format!("ns{ns}"),
            labels(&[("team", format!("team{}", ns % 10))]),
        )));
    }
    out.extend((0..size.pods).map(|i| ModelChange::UpsertPod(pod(i, size))));
    out.extend((0..size.policies).map(|k| ModelChange::UpsertPolicy(policy(k, size))));
    out
}
