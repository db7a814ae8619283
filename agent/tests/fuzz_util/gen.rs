//! Generated documents: well-formed objects (so that they reach the compiler) whose values are
//! drawn from small pools of valid, edge and invalid values: ports 0/65535/65536/negative, named
//! ports that resolve nowhere, endPort below port, CIDRs with host bits, /0, other families,
//! excepts outside their cidr, unknown operators and protocols, duplicate pod IPs, pods on
//! unknown nodes.

use serde_json::{json, Value};

use super::rng::Rng;

const KEYS: &[&str] = &[
    "app",
    "tier",
    "team",
    "kubernetes.io/metadata.name",
    "",
    "bad key!",
    "a/b/c",
];
const VALUES: &[&str] = &["a", "b", "c", "x", "y", "red", "", "-bad-"];
const NAMESPACES: &[&str] = &["x", "y", "z", "default", ""];
const PORTS: &[i64] = &[0, 1, 53, 80, 81, 8080, 65535, 65536, -1, 32768, 1024];
const PORT_NAMES: &[&str] = &["http", "dns", "assoc", "nope", "", "80", "HTTP"];
const PROTOCOLS: &[&str] = &["TCP", "UDP", "SCTP", "tcp", "ICMP", ""];
const CIDRS: &[&str] = &[
    "10.0.0.0/16",
    "10.0.0.0/8",
    "10.0.0.1/32",
    "10.0.0.1/8",
    "0.0.0.0/0",
    "::/0",
    "fd00::/64",
    "fd00::1/128",
    "::ffff:10.0.0.0/104",
    "192.168.1.0/24",
    "10.0.1.0/24",
    "10.0.0.0/33",
    "not-a-cidr",
    "",
    "10.0.0.0",
    "fd00::/129",
    "2001:db8::/32",
];
const OPERATORS: &[&str] = &["In", "NotIn", "Exists", "DoesNotExist", "in", "Equals", ""];
const IPS: &[&str] = &[
    "10.0.0.1",
    "10.0.0.2",
    "10.0.0.3",
    "10.0.1.3",
    "fd00::1",
    "fd00::3",
    "192.168.1.1",
    "::ffff:10.0.0.9",
    "0.0.0.0",
    "255.255.255.255",
    "::",
    "10.0.0.300",
];

fn labels(rng: &mut Rng) -> Value {
    let mut m = serde_json::Map::new();
    for _ in 0..rng.below(3) {
        m.insert((*rng.pick(KEYS)).to_owned(), Value::from(*rng.pick(VALUES)));
    }
    Value::Object(m)
}

fn selector(rng: &mut Rng) -> Value {
    let mut s = serde_json::Map::new();
    if rng.chance(2, 3) {
        s.insert("matchLabels".into(), labels(rng));
    }
    if rng.chance(1, 2) {
        let exprs: Vec<Value> = (0..rng.below(3))
            .map(|_| {
                let mut e = json!({"key": rng.pick(KEYS), "operator": rng.pick(OPERATORS)});
                if rng.chance(2, 3) {
                    let vals: Vec<&str> = (0..rng.below(3)).map(|_| *rng.pick(VALUES)).collect();
                    e["values"] = json!(vals);
                }
                e
            })
            .collect();
        s.insert("matchExpressions".into(), Value::Array(exprs));
    }
    Value::Object(s)
}

fn peer(rng: &mut Rng) -> Value {
    match rng.below(5) {
        0 => json!({"podSelector": selector(rng)}),
        1 => json!({"namespaceSelector": selector(rng)}),
        2 => json!({"podSelector": selector(rng), "namespaceSelector": selector(rng)}),
        3 => {
            let excepts: Vec<&str> = (0..rng.below(3)).map(|_| *rng.pick(CIDRS)).collect();
            json!({"ipBlock": {"cidr": rng.pick(CIDRS), "except": excepts}})
        }
        // The API forbids ipBlock with selectors; a manifest can still say it.
        _ => json!({"ipBlock": {"cidr": rng.pick(CIDRS)}, "podSelector": selector(rng)}),
    }
}

fn port(rng: &mut Rng) -> Value {
    let mut p = serde_json::Map::new();
    if rng.chance(2, 3) {
        p.insert("protocol".into(), Value::from(*rng.pick(PROTOCOLS)));
    }
    match rng.below(3) {
        0 => {}
        1 => {
            p.insert("port".into(), Value::from(*rng.pick(PORT_NAMES)));
        }
        _ => {
            let port = *rng.pick(PORTS);
            p.insert("port".into(), Value::from(port));
            if rng.chance(1, 3) {
                let end = port + *rng.pick(&[0i64, 1, 100, -1, 70000, 65535]);
                p.insert("endPort".into(), Value::from(end));
            }
        }
    }
    if rng.chance(1, 10) {
        p.insert("endPort".into(), Value::from(*rng.pick(PORTS)));
    }
    Value::Object(p)
}

fn list(rng: &mut Rng, f: fn(&mut Rng) -> Value) -> Value {
    match rng.below(6) {
        0 => Value::Null,
        1 => json!([]),
        _ => Value::Array((0..1 + rng.below(3)).map(|_| f(rng)).collect()),
    }
}

fn rules(rng: &mut Rng, peers_key: &str) -> Value {
    match rng.below(6) {
        0 => Value::Null,
        1 => json!([]),
        2 => json!([{}]),
        _ => Value::Array(
            (0..1 + rng.below(3))
                .map(|_| {
                    let mut r = serde_json::Map::new();
                    let peers = list(rng, peer);
                    if !peers.is_null() {
                        r.insert(peers_key.into(), peers);
                    }
                    let ports = list(rng, port);
                    if !ports.is_null() {
                        r.insert("ports".into(), ports);
                    }
                    Value::Object(r)
                })
                .collect(),
        ),
    }
}

fn policy(rng: &mut Rng) -> Value {
    let mut spec = serde_json::Map::new();
    if rng.chance(9, 10) {
        spec.insert("podSelector".into(), selector(rng));
    }
    if rng.chance(1, 2) {
        let types: Vec<&str> = (0..rng.below(3))
            .map(|_| *rng.pick(&["Ingress", "Egress", "ingress", "Both"]))
            .collect();
        spec.insert("policyTypes".into(), json!(types));
    }
    for (key, peers) in [("ingress", "from"), ("egress", "to")] {
        let r = rules(rng, peers);
        if !r.is_null() {
            spec.insert(key.into(), r);
        }
    }
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
           "metadata": {"name": format!("g{}", rng.below(4)), "namespace": rng.pick(NAMESPACES)},
           "spec": spec})
}

fn pod(rng: &mut Rng) -> Value {
    let ips: Vec<Value> = (0..rng.below(3))
        .map(|_| json!({"ip": rng.pick(IPS)}))
        .collect();
    let ports: Vec<Value> = (0..rng.below(3))
        .map(|_| json!({"name": rng.pick(PORT_NAMES), "containerPort": rng.pick(PORTS), "protocol": rng.pick(PROTOCOLS)}))
        .collect();
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": format!("q{}", rng.below(5)), "namespace": rng.pick(NAMESPACES), "labels": labels(rng)},
           "spec": {"nodeName": rng.pick(&["node-1", "node-2", "node-9", ""]), "hostNetwork": rng.chance(1, 8),
                    "containers": [{"name": "c", "ports": ports}]},
           "status": {"podIP": ips.first().and_then(|v| v.get("ip")).cloned(), "podIPs": ips}})
}

fn other(rng: &mut Rng) -> Value {
    match rng.below(4) {
        0 => json!({"apiVersion": "v1", "kind": "Namespace",
                    "metadata": {"name": rng.pick(NAMESPACES), "labels": labels(rng),
                                 "annotations": {"palisade.dev/audit": rng.pick(&["true", "false", "yes"])}}}),
        1 => json!({"apiVersion": "v1", "kind": "Node",
                    "metadata": {"name": rng.pick(&["node-1", "node-2", ""])},
                    "status": {"addresses": [{"address": rng.pick(IPS)}]}}),
        2 => json!({"apiVersion": "v1", "kind": "Service",
                    "metadata": {"name": "s", "namespace": rng.pick(NAMESPACES)},
                    "spec": {"clusterIP": rng.pick(&["10.96.0.10", "None", "", "fd00:96::1", "bad"]),
                             "selector": labels(rng),
                             "ports": [{"port": rng.pick(PORTS), "targetPort": rng.pick(PORT_NAMES), "protocol": rng.pick(PROTOCOLS)}]}}),
        _ => json!({"apiVersion": "v1", "kind": "List", "items": [policy(rng), pod(rng)]}),
    }
}

/// A multi-document input: some policies, pods and other objects.
pub fn documents(rng: &mut Rng) -> Vec<Value> {
    (0..1 + rng.below(6))
        .map(|_| match rng.below(5) {
            0 | 1 => policy(rng),
            2 | 3 => pod(rng),
            _ => other(rng),
        })
        .collect()
}
