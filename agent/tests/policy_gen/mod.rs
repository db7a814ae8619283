//! Proptest generators of small random clusters and policies, shared by the property tests.
//! Values come from small pools so that selectors, CIDRs and named ports collide often.
#![allow(dead_code, reason = "each test binary uses a different part")]

use std::collections::BTreeMap;
use std::net::IpAddr;

use palisade::model::{
    ClusterEgressRule, ClusterIngressRule, ClusterNetworkPolicy, ClusterNetworkPolicySpec,
    ClusterPolicyPeer, ClusterPolicyProtocol, ClusterPolicySubject, ClusterPort, ClusterPortRange,
    ContainerPort, EgressRule, IngressRule, IntOrString, IpBlock, LabelSelector,
    LabelSelectorRequirement, Labels, Model, ModelChange, Namespace, NamespacedPod, NetworkPolicy,
    NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec, Node, Pod, Protocol, ProtocolMatch,
};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;

pub const NAMESPACES: [&str; 3] = ["x", "y", "z"];
pub const PORTS: [u16; 5] = [53, 80, 81, 8080, 8085];
/// Addresses probed besides pod IPs: node addresses, an address inside the pod range that no pod
/// has, and the outside world, in both families.
pub const EXTRA_IPS: [&str; 6] = [
    "192.168.0.1",
    "192.168.0.2",
    "10.0.1.200",
    "8.8.8.8",
    "fd00::1:c8",
    "2001:db8::1",
];

fn labels(
    pool: &'static [(&'static str, &'static [&'static str])],
) -> impl Strategy<Value = Labels> {
    let entries: Vec<_> = pool
        .iter()
        .map(|(k, vals)| {
            option::of(proptest::sample::select(*vals))
                .prop_map(move |v| v.map(|v| (k.to_string(), v.to_string())))
        })
        .collect();
    entries.prop_map(|e| e.into_iter().flatten().collect())
}

fn pod_labels() -> impl Strategy<Value = Labels> {
    labels(&[("app", &["a", "b", "c"]), ("tier", &["f", "b"])])
}

fn ns_labels() -> impl Strategy<Value = Labels> {
    labels(&[("team", &["red", "blue"]), ("env", &["prod"])])
}

fn container_port() -> impl Strategy<Value = ContainerPort> {
    prop_oneof![
        Just(("http", 80, Protocol::Tcp)),
        Just(("http", 8080, Protocol::Tcp)),
        Just(("http", 80, Protocol::Udp)),
        Just(("dns", 53, Protocol::Udp)),
        Just(("dns", 53, Protocol::Tcp)),
        Just(("alt", 81, Protocol::Sctp)),
        Just(("alt", 8085, Protocol::Tcp)),
    ]
    .prop_map(|(n, p, proto)| ContainerPort {
        name: Some(n.to_owned()),
        port: p,
        protocol: proto,
    })
}

/// One pod spec before IPs are assigned: (namespace index, labels, ports, node, hostNetwork,
/// dual-stack, has IP).
type PodSpec = (usize, Labels, Vec<ContainerPort>, usize, bool, bool, bool);

fn pod_spec() -> impl Strategy<Value = PodSpec> {
    (
        0..3usize,
        pod_labels(),
        vec(container_port(), 0..3),
        0..2usize,
        prop::bool::weighted(0.1),
        prop::bool::weighted(0.3),
        prop::bool::weighted(0.95),
    )
}

fn requirement() -> impl Strategy<Value = LabelSelectorRequirement> {
    let key = proptest::sample::select(vec![
        "app",
        "tier",
        "team",
        "env",
        "kubernetes.io/metadata.name",
    ]);
    let values = vec(
        proptest::sample::select(vec!["a", "b", "f", "red", "prod", "x", "y"]),
        1..3,
    );
    (key, 0..4usize, values).prop_map(|(key, op, values)| {
        let (operator, values) = match op {
            0 => ("In", Some(values.into_iter().map(str::to_owned).collect())),
            1 => (
                "NotIn",
                Some(values.into_iter().map(str::to_owned).collect()),
            ),
            2 => ("Exists", None),
            _ => ("DoesNotExist", None),
        };
        LabelSelectorRequirement {
            key: key.to_owned(),
            operator: operator.to_owned(),
            values,
        }
    })
}

fn selector(pool: fn() -> BoxedStrategy<Labels>) -> impl Strategy<Value = LabelSelector> {
    (option::of(pool()), option::of(vec(requirement(), 0..2))).prop_map(
        |(match_labels, match_expressions)| LabelSelector {
            match_labels: match_labels.map(|l| l.into_iter().collect::<BTreeMap<_, _>>()),
            match_expressions,
        },
    )
}

fn boxed_pod_labels() -> BoxedStrategy<Labels> {
    pod_labels().boxed()
}

fn boxed_ns_labels() -> BoxedStrategy<Labels> {
    ns_labels().boxed()
}

const CIDRS: [&str; 8] = [
    "10.0.0.0/16",
    "10.0.1.0/24",
    "10.0.1.2/32",
    "0.0.0.0/0",
    "192.168.0.0/24",
    "10.0.0.0/8",
    "fd00::/64",
    "fd00::1:0/112",
];

fn ip_block() -> impl Strategy<Value = IpBlock> {
    (
        proptest::sample::select(CIDRS.to_vec()),
        vec(proptest::sample::select(CIDRS.to_vec()), 0..2),
    )
        .prop_map(|(cidr, except)| {
            let outer: ipnet::IpNet = cidr.parse().unwrap();
            // Only valid excepts (strictly inside the cidr): the reference and the compiler agree on
            // invalid ones by construction, the bad-input tests cover them.
            let except: Vec<String> = except
                .into_iter()
                .filter(|e| {
                    let e: ipnet::IpNet = e.parse().unwrap();
                    outer.contains(&e) && e != outer
                })
                .map(str::to_owned)
                .collect();
            IpBlock {
                cidr: cidr.to_owned(),
                except: (!except.is_empty()).then_some(except),
            }
        })
}

fn peer() -> impl Strategy<Value = NetworkPolicyPeer> {
    prop_oneof![
        selector(boxed_pod_labels).prop_map(|s| NetworkPolicyPeer {
            pod_selector: Some(s),
            ..Default::default()
        }),
        selector(boxed_ns_labels).prop_map(|s| NetworkPolicyPeer {
            namespace_selector: Some(s),
            ..Default::default()
        }),
        (selector(boxed_pod_labels), selector(boxed_ns_labels)).prop_map(|(p, n)| {
            NetworkPolicyPeer {
                pod_selector: Some(p),
                namespace_selector: Some(n),
                ..Default::default()
            }
        }),
        ip_block().prop_map(|b| NetworkPolicyPeer {
            ip_block: Some(b),
            ..Default::default()
        }),
    ]
}

fn policy_port() -> impl Strategy<Value = NetworkPolicyPort> {
    let protocol = option::of(proptest::sample::select(vec!["TCP", "UDP", "SCTP"]));
    let port = prop_oneof![
        2 => Just(None),
        3 => proptest::sample::select(PORTS.to_vec()).prop_map(|p| Some(IntOrString::Int(i64::from(p)))),
        3 => proptest::sample::select(vec!["http", "dns", "alt", "nope"]).prop_map(|n| Some(IntOrString::String(n.to_owned()))),
    ];
    (protocol, port, option::weighted(0.3, 0i64..8000)).prop_map(|(protocol, port, end)| {
        let end_port = match (&port, end) {
            (Some(IntOrString::Int(p)), Some(delta)) => Some(p + delta),
            _ => None,
        };
        NetworkPolicyPort {
            protocol: protocol.map(str::to_owned),
            port,
            end_port,
        }
    })
}

fn peers() -> impl Strategy<Value = Option<Vec<NetworkPolicyPeer>>> {
    prop_oneof![1 => Just(None), 1 => Just(Some(Vec::new())), 4 => vec(peer(), 1..3).prop_map(Some)]
}

fn ports() -> impl Strategy<Value = Option<Vec<NetworkPolicyPort>>> {
    prop_oneof![2 => Just(None), 1 => Just(Some(Vec::new())), 4 => vec(policy_port(), 1..3).prop_map(Some)]
}

fn policy() -> impl Strategy<Value = NetworkPolicy> {
    let types = prop_oneof![
        3 => Just(None),
        1 => Just(Some(vec!["Ingress".to_owned()])),
        1 => Just(Some(vec!["Egress".to_owned()])),
        1 => Just(Some(vec!["Ingress".to_owned(), "Egress".to_owned()])),
    ];
    let ingress = option::of(vec(
        (peers(), ports()).prop_map(|(from, ports)| IngressRule { from, ports }),
        0..3,
    ));
    let egress = option::of(vec(
        (peers(), ports()).prop_map(|(to, ports)| EgressRule { to, ports }),
        0..3,
    ));
    (
        0..3usize,
        0..6u32,
        selector(boxed_pod_labels),
        types,
        ingress,
        egress,
    )
        .prop_map(
            |(ns, n, pod_selector, policy_types, ingress, egress)| NetworkPolicy {
                namespace: NAMESPACES[ns].to_owned(),
                name: format!("p{n}"),
                spec: NetworkPolicySpec {
                    pod_selector,
                    policy_types,
                    ingress,
                    egress,
                },
            },
        )
}

/// Builds a pod from its spec; `i` numbers it (and its IPs).
fn pod(i: usize, spec: &PodSpec) -> Pod {
    let (ns, labels, ports, node, host, dual, has_ip) = spec;
    let node_name = format!("node-{node}");
    let ips: Vec<IpAddr> = match (host, has_ip) {
        (_, false) => Vec::new(),
        (true, true) => vec![format!("192.168.0.{}", node + 1).parse().unwrap()],
        (false, true) => {
            let mut ips = vec![format!("10.0.{}.{}", ns, i + 1).parse().unwrap()];
            if *dual {
                ips.push(format!("fd00::{:x}:{:x}", ns, i + 1).parse().unwrap());
            }
            ips
        }
    };
    Pod {
        namespace: NAMESPACES[*ns].to_owned(),
        name: format!("p{i}"),
        labels: labels.clone(),
        ips,
        node_name: Some(node_name),
        host_network: *host,
        container_ports: ports.clone(),
    }
}

fn node_labels() -> impl Strategy<Value = Labels> {
    labels(&[("role", &["infra", "edge"])])
}

fn boxed_node_labels() -> BoxedStrategy<Labels> {
    node_labels().boxed()
}

fn node(n: usize, labels: Labels) -> Node {
    Node {
        name: format!("node-{n}"),
        addresses: vec![format!("192.168.0.{}", n + 1).parse().unwrap()],
        labels,
    }
}

fn namespaced_pod() -> impl Strategy<Value = NamespacedPod> {
    (selector(boxed_ns_labels), selector(boxed_pod_labels)).prop_map(|(n, p)| NamespacedPod {
        namespace_selector: n,
        pod_selector: p,
    })
}

/// A ClusterNetworkPolicy peer; `egress` adds networks and nodes. Now and then one the API would
/// reject (no field set), which must fail closed the same way in both evaluators.
fn cluster_peer(egress: bool) -> BoxedStrategy<ClusterPolicyPeer> {
    let common = prop_oneof![
        4 => selector(boxed_ns_labels).prop_map(|s| ClusterPolicyPeer { namespaces: Some(s), ..Default::default() }),
        4 => namespaced_pod().prop_map(|p| ClusterPolicyPeer { pods: Some(p), ..Default::default() }),
        1 => Just(ClusterPolicyPeer::default()),
    ];
    if !egress {
        return common.boxed();
    }
    prop_oneof![
        6 => common,
        2 => vec(proptest::sample::select(CIDRS.to_vec()), 1..3).prop_map(|n| ClusterPolicyPeer {
            networks: Some(n.into_iter().map(str::to_owned).collect()),
            ..Default::default()
        }),
        1 => selector(boxed_node_labels).prop_map(|s| ClusterPolicyPeer { nodes: Some(s), ..Default::default() }),
    ]
    .boxed()
}

fn cluster_protocol() -> impl Strategy<Value = ClusterPolicyProtocol> {
    let port = prop_oneof![
        1 => Just(None),
        3 => proptest::sample::select(PORTS.to_vec()).prop_map(|p| Some(ClusterPort { number: Some(i64::from(p)), range: None })),
        2 => (proptest::sample::select(PORTS.to_vec()), 0i64..8000).prop_map(|(p, d)| Some(ClusterPort {
            number: None,
            range: Some(ClusterPortRange { start: i64::from(p), end: i64::from(p) + d }),
        })),
    ];
    prop_oneof![
        5 => (0..3usize, port).prop_map(|(which, destination_port)| {
            let m = Some(ProtocolMatch { destination_port });
            match which {
                0 => ClusterPolicyProtocol { tcp: m, ..Default::default() },
                1 => ClusterPolicyProtocol { udp: m, ..Default::default() },
                _ => ClusterPolicyProtocol { sctp: m, ..Default::default() },
            }
        }),
        2 => proptest::sample::select(vec!["http", "dns", "alt", "nope"]).prop_map(|n| ClusterPolicyProtocol {
            destination_named_port: Some(n.to_owned()),
            ..Default::default()
        }),
    ]
}

fn action() -> impl Strategy<Value = String> {
    prop_oneof![4 => Just("Accept"), 4 => Just("Deny"), 3 => Just("Pass"), 1 => Just("Drop")]
        .prop_map(str::to_owned)
}

fn cluster_protocols() -> impl Strategy<Value = Option<Vec<ClusterPolicyProtocol>>> {
    prop_oneof![2 => Just(None), 3 => vec(cluster_protocol(), 1..3).prop_map(Some)]
}

fn cluster_policy() -> impl Strategy<Value = ClusterNetworkPolicy> {
    let subject = prop_oneof![
        selector(boxed_ns_labels).prop_map(|s| ClusterPolicySubject {
            namespaces: Some(s),
            pods: None
        }),
        namespaced_pod().prop_map(|p| ClusterPolicySubject {
            namespaces: None,
            pods: Some(p)
        }),
    ];
    let ingress = option::of(vec(
        (
            action(),
            vec(cluster_peer(false), 0..3),
            cluster_protocols(),
        )
            .prop_map(|(action, from, protocols)| ClusterIngressRule {
                name: None,
                action,
                from: Some(from),
                protocols,
            }),
        0..3,
    ));
    let egress = option::of(vec(
        (action(), vec(cluster_peer(true), 1..3), cluster_protocols()).prop_map(
            |(action, to, protocols)| ClusterEgressRule {
                name: Some("r".to_owned()),
                action,
                to: Some(to),
                protocols,
            },
        ),
        0..3,
    ));
    let tier = prop_oneof![Just("Admin"), Just("Baseline")];
    (0..4u32, tier, 0..3i64, subject, ingress, egress).prop_map(
        |(n, tier, priority, subject, ingress, egress)| ClusterNetworkPolicy {
            name: format!("c{n}"),
            spec: ClusterNetworkPolicySpec {
                tier: tier.to_owned(),
                priority,
                subject,
                ingress,
                egress,
            },
        },
    )
}

/// A random cluster: namespaces, 1..8 pods, two labelled nodes, 0..5 policies and 0..4
/// ClusterNetworkPolicies.
pub fn cluster() -> impl Strategy<Value = Model> {
    (
        vec(ns_labels(), 3),
        vec(pod_spec(), 1..8),
        vec(policy(), 0..5),
        vec(node_labels(), 2),
        vec(cluster_policy(), 0..4),
    )
        .prop_map(|(ns_labels, pods, policies, node_labels, clusters)| {
            let mut model = Model::new();
            for (name, labels) in NAMESPACES.iter().zip(ns_labels) {
                model.apply(ModelChange::UpsertNamespace(Namespace::new(*name, labels)));
            }
            for (n, labels) in node_labels.into_iter().enumerate() {
                model.apply(ModelChange::UpsertNode(node(n, labels)));
            }
            for (i, spec) in pods.iter().enumerate() {
                model.apply(ModelChange::UpsertPod(pod(i, spec)));
            }
            for p in policies {
                model.apply(ModelChange::UpsertPolicy(p));
            }
            for c in clusters {
                model.apply(ModelChange::UpsertClusterPolicy(c));
            }
            model
        })
}

/// A random change to a cluster built by [`cluster`].
pub fn change() -> impl Strategy<Value = ModelChange> {
    prop_oneof![
        3 => (0..8usize, pod_spec()).prop_map(|(i, spec)| ModelChange::UpsertPod(pod(i, &spec))),
        1 => (0..3usize, 0..8usize).prop_map(|(ns, i)| ModelChange::DeletePod(palisade::model::ObjectKey::new(NAMESPACES[ns], format!("p{i}")))),
        4 => (0..3usize, ns_labels()).prop_map(|(ns, labels)| ModelChange::UpsertNamespace(Namespace::new(NAMESPACES[ns], labels))),
        3 => policy().prop_map(ModelChange::UpsertPolicy),
        1 => (0..3usize, 0..6u32).prop_map(|(ns, n)| ModelChange::DeletePolicy(palisade::model::ObjectKey::new(NAMESPACES[ns], format!("p{n}")))),
        3 => cluster_policy().prop_map(ModelChange::UpsertClusterPolicy),
        1 => (0..4u32).prop_map(|n| ModelChange::DeleteClusterPolicy(format!("c{n}"))),
        1 => (0..2usize, node_labels()).prop_map(|(n, labels)| ModelChange::UpsertNode(node(n, labels))),
    ]
}

/// Every address a property test probes: pod IPs plus [`EXTRA_IPS`].
pub fn probe_ips(model: &Model) -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = model
        .pods
        .values()
        .flat_map(|p| p.ips.iter().copied())
        .collect();
    ips.extend(EXTRA_IPS.iter().map(|s| s.parse::<IpAddr>().unwrap()));
    ips.sort();
    ips.dedup();
    ips
}
