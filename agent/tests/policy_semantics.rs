//! Table-driven tests, one per rule of DESIGN.md's "Semantics" section (quoted above each test).
//! Every case runs through the compiled lookup and is cross-checked with the reference.
mod policy_util;

use policy_util::{check, SCTP, TCP, UDP};

fn deny_all_ingress(ns: &str) -> String {
    format!("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: deny, namespace: {ns}}}\nspec: {{podSelector: {{}}, policyTypes: [Ingress]}}\n")
}

#[test]
fn no_policy_allows_everything() {
    check(
        "",
        &[
            ("x/a", "x/b", TCP, 80, true),
            ("y/c", "x/a", UDP, 53, true),
            ("x/a", "8.8.8.8", TCP, 443, true),
        ],
    );
}

/// "A pod is isolated for a direction iff some policy in its namespace selects it and that
/// direction is among the policy's effective policyTypes (explicit list; else Ingress, plus
/// Egress when egress has rules)."
#[test]
fn policy_types_inference() {
    // No policyTypes, no egress field: Ingress only.
    let p = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: x}\nspec: {podSelector: {matchLabels: {app: a}}}\n";
    check(
        p,
        &[
            ("x/b", "x/a", TCP, 80, false),
            ("x/a", "x/b", TCP, 8080, true),
            ("x/b", "x/b", TCP, 8080, true),
        ],
    );
    // egress: [] is not "egress has rules": still Ingress only.
    let p = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: x}\nspec: {podSelector: {matchLabels: {app: a}}, egress: []}\n";
    check(
        p,
        &[
            ("x/b", "x/a", TCP, 80, false),
            ("x/a", "y/a", TCP, 80, true),
        ],
    );
    // egress with rules: Ingress and Egress.
    let p = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: x}\nspec: {podSelector: {matchLabels: {app: a}}, egress: [{to: [{podSelector: {matchLabels: {app: b}}}]}]}\n";
    check(
        p,
        &[
            ("x/b", "x/a", TCP, 80, false),
            ("x/a", "y/a", TCP, 80, false),
            ("x/a", "x/b", TCP, 8080, true),
        ],
    );
    // Explicit Egress only: the listed ingress rules are ignored, ingress stays open.
    let p = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: x}\nspec: {podSelector: {matchLabels: {app: a}}, policyTypes: [Egress], ingress: []}\n";
    check(
        p,
        &[
            ("x/b", "x/a", TCP, 80, true),
            ("x/a", "x/b", TCP, 8080, false),
        ],
    );
    // A policy in another namespace never isolates.
    let p = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: y}\nspec: {podSelector: {}, policyTypes: [Ingress, Egress]}\n";
    check(
        p,
        &[
            ("x/b", "x/a", TCP, 80, true),
            ("x/a", "y/a", TCP, 80, false),
            ("y/a", "x/a", TCP, 80, false),
        ],
    );
}

/// "Isolated directions allow only the union of matching rules; others allow all." (Policies are
/// never ANDed.)
#[test]
fn union_of_policies_and_rules() {
    let p = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p1, namespace: x}\nspec: {podSelector: {matchLabels: {app: a}}, ingress: [{from: [{podSelector: {matchLabels: {app: b}}}]}]}\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p2, namespace: x}\nspec: {podSelector: {}, ingress: [{from: [{namespaceSelector: {matchLabels: {team: blue}}}], ports: [{port: 80}]}]}\n";
    check(
        p,
        &[
            ("x/b", "x/a", TCP, 80, true),
            ("y/a", "x/a", TCP, 80, true),
            ("y/a", "x/a", TCP, 81, false),
            ("y/a", "x/b", TCP, 80, true),
            ("x/a", "x/b", TCP, 8080, false),
        ],
    );
}

/// "A connection needs the client's egress and the server's ingress to allow it."
#[test]
fn both_sides_must_allow() {
    let p = format!("{}---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: e, namespace: y}}\nspec: {{podSelector: {{}}, policyTypes: [Egress], egress: [{{}}]}}\n", deny_all_ingress("x"));
    check(
        &p,
        &[
            ("y/a", "x/a", TCP, 80, false),
            ("x/a", "y/a", TCP, 80, true),
            ("x/a", "x/b", TCP, 80, false),
        ],
    );
}

/// "Missing or empty ports = all ports and protocols; missing or empty from/to = all peers;
/// `ingress: []` allows nothing; `ingress: [{}]` allows everything."
#[test]
fn empty_lists() {
    let none = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: x}\nspec: {podSelector: {}, ingress: []}\n";
    check(
        none,
        &[
            ("y/a", "x/a", TCP, 80, false),
            ("x/a", "x/a", UDP, 53, false),
        ],
    );
    let all = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: x}\nspec: {podSelector: {}, ingress: [{}]}\n";
    check(
        all,
        &[
            ("y/a", "x/a", TCP, 80, true),
            ("y/c", "x/a", SCTP, 9, true),
            ("8.8.8.8", "x/a", UDP, 53, true),
        ],
    );
    let empty = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: x}\nspec: {podSelector: {}, ingress: [{from: [], ports: []}]}\n";
    check(
        empty,
        &[
            ("y/a", "x/a", TCP, 80, true),
            ("8.8.8.8", "x/b", SCTP, 1, true),
        ],
    );
}

/// "protocol defaults to TCP; a port entry with only a protocol = all ports of it; endPort is an
/// inclusive range".
#[test]
fn ports_protocols_and_ranges() {
    let p = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: x}\nspec: {podSelector: {}, ingress: [{ports: [{port: 80}, {protocol: UDP}, {protocol: SCTP, port: 8000, endPort: 8080}]}]}\n";
    check(
        p,
        &[
            ("y/a", "x/a", TCP, 80, true),
            ("y/a", "x/a", TCP, 81, false),
            ("y/a", "x/a", UDP, 80, true),
            ("y/a", "x/a", UDP, 65535, true),
            ("y/a", "x/a", SCTP, 8000, true),
            ("y/a", "x/a", SCTP, 8080, true),
            ("y/a", "x/a", SCTP, 8081, false),
            ("y/a", "x/a", SCTP, 7999, false),
            ("y/a", "x/a", TCP, 8000, false),
        ],
    );
}

/// "a named port resolves on the destination pod's containerPorts (name and protocol), per
/// destination pod, also in egress rules."
#[test]
fn named_ports_per_destination() {
    let ingress = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: x}\nspec: {podSelector: {}, ingress: [{ports: [{port: http}, {port: dns, protocol: UDP}]}]}\n";
    check(
        ingress,
        &[
            ("y/a", "x/a", TCP, 80, true),
            ("y/a", "x/a", TCP, 8080, false),
            ("y/a", "x/b", TCP, 8080, true),
            ("y/a", "x/b", TCP, 80, false),
            ("y/a", "x/a", UDP, 53, true),
            ("y/a", "x/a", UDP, 80, false),
            ("y/a", "x/b", UDP, 53, false),
        ],
    );
    let egress = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: y}\nspec: {podSelector: {}, policyTypes: [Egress], egress: [{ports: [{port: http}]}]}\n";
    check(
        egress,
        &[
            ("y/c", "x/a", TCP, 80, true),
            ("y/c", "x/b", TCP, 8080, true),
            ("y/c", "x/b", TCP, 80, false),
            ("y/c", "y/c", TCP, 80, false),
            ("y/c", "10.9.9.9", TCP, 80, false),
        ],
    );
    // With an ipBlock peer the name resolves only on pod IPs the block covers.
    let block = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: y}\nspec: {podSelector: {}, policyTypes: [Egress], egress: [{to: [{ipBlock: {cidr: 10.0.0.0/31}}], ports: [{port: http}]}]}\n";
    check(
        block,
        &[
            ("y/c", "x/a", TCP, 80, true),
            ("y/c", "x/b", TCP, 8080, false),
            ("y/c", "10.0.0.0", TCP, 80, false),
            ("y/c", "y/a", TCP, 80, false),
        ],
    );
}

/// "podSelector alone = the policy's namespace; namespaceSelector alone = all pods of matching
/// namespaces ({} = all); both in one peer = AND; separate peers = OR".
#[test]
fn peer_selectors() {
    let pod_only = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: x}\nspec: {podSelector: {matchLabels: {app: b}}, ingress: [{from: [{podSelector: {matchLabels: {app: a}}}]}]}\n";
    check(
        pod_only,
        &[
            ("x/a", "x/b", TCP, 8080, true),
            ("y/a", "x/b", TCP, 8080, false),
        ],
    );
    let ns_only = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: x}\nspec: {podSelector: {}, ingress: [{from: [{namespaceSelector: {matchLabels: {team: blue}}}]}]}\n";
    check(
        ns_only,
        &[
            ("y/a", "x/b", TCP, 8080, true),
            ("y/c", "x/b", TCP, 8080, true),
            ("x/a", "x/b", TCP, 8080, false),
        ],
    );
    let all_ns = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: x}\nspec: {podSelector: {}, ingress: [{from: [{namespaceSelector: {}}]}]}\n";
    check(
        all_ns,
        &[
            ("y/a", "x/b", TCP, 8080, true),
            ("x/a", "x/b", TCP, 8080, true),
            ("8.8.8.8", "x/b", TCP, 8080, false),
        ],
    );
    let and = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: x}\nspec: {podSelector: {}, ingress: [{from: [{namespaceSelector: {matchLabels: {team: blue}}, podSelector: {matchLabels: {app: a}}}]}]}\n";
    check(
        and,
        &[
            ("y/a", "x/b", TCP, 8080, true),
            ("y/c", "x/b", TCP, 8080, false),
            ("x/a", "x/b", TCP, 8080, false),
        ],
    );
    let or = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: x}\nspec: {podSelector: {}, ingress: [{from: [{namespaceSelector: {matchLabels: {team: blue}}}, {podSelector: {matchLabels: {app: a}}}]}]}\n";
    check(
        or,
        &[
            ("y/a", "x/b", TCP, 8080, true),
            ("y/c", "x/b", TCP, 8080, true),
            ("x/a", "x/b", TCP, 8080, true),
            ("x/b", "x/a", TCP, 80, false),
        ],
    );
}

/// "ipBlock = CIDR minus except, and it matches pod IPs too".
#[test]
fn ip_blocks() {
    let p = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: x}\nspec: {podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/16, except: [10.0.1.0/24, 10.0.0.2/32]}}, {ipBlock: {cidr: 10.0.1.3/32}}]}]}\n";
    check(
        p,
        &[
            ("x/a", "x/b", TCP, 8080, true),
            ("x/b", "x/a", TCP, 80, false),
            ("y/a", "x/b", TCP, 8080, false),
            ("y/c", "x/b", TCP, 8080, true),
            ("10.0.200.1", "x/a", TCP, 80, true),
            ("10.0.1.77", "x/a", TCP, 80, false),
            ("10.1.0.1", "x/a", TCP, 80, false),
        ],
    );
}

/// "Selectors: matchLabels and matchExpressions (In, NotIn, Exists, DoesNotExist); {} matches
/// all. Namespaces always carry kubernetes.io/metadata.name=<name>".
#[test]
fn selector_operators_and_name_label() {
    let exprs = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: x}\nspec:\n  podSelector: {matchExpressions: [{key: app, operator: In, values: [a]}]}\n  ingress:\n  - from: [{podSelector: {matchExpressions: [{key: tier, operator: NotIn, values: [front]}, {key: app, operator: Exists}]}, namespaceSelector: {}}]\n";
    check(
        exprs,
        &[
            ("x/b", "x/a", TCP, 80, true),
            ("y/c", "x/a", TCP, 80, true),
            ("x/a", "x/a", TCP, 80, false),
            ("x/a", "x/b", TCP, 8080, true),
        ],
    );
    let absent = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: x}\nspec: {podSelector: {}, ingress: [{from: [{namespaceSelector: {}, podSelector: {matchExpressions: [{key: tier, operator: DoesNotExist}]}}]}]}\n";
    check(
        absent,
        &[
            ("x/b", "x/a", TCP, 80, true),
            ("y/a", "x/a", TCP, 80, true),
            ("y/c", "x/a", TCP, 80, false),
            ("x/a", "x/b", TCP, 8080, false),
        ],
    );
    // y's manifest has no name label; the store adds it.
    let name = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: x}\nspec: {podSelector: {}, ingress: [{from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: y}}}]}]}\n";
    check(
        name,
        &[
            ("y/c", "x/a", TCP, 80, true),
            ("x/b", "x/a", TCP, 80, false),
        ],
    );
}

/// "Traffic to and from the node a pod runs on is always allowed (kubelet probes), by default.
/// hostNetwork pods are not endpoints; as peers they appear with the node's IP."
#[test]
fn node_traffic_and_host_network() {
    let p = format!("{}---\n{}---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: deny, namespace: kube-system}}\nspec: {{podSelector: {{}}, policyTypes: [Ingress, Egress]}}\n", deny_all_ingress("x"), deny_all_ingress("y"));
    check(
        &p,
        &[
            // kube-system/h is on node-1 with the node's IP: HOST for x/a (node-1), not for y/c (node-2).
            ("kube-system/h", "x/a", TCP, 80, true),
            ("192.168.1.1", "y/a", TCP, 80, true),
            ("kube-system/h", "y/c", TCP, 80, false),
            ("192.168.1.2", "y/c", TCP, 80, true),
            // h is not an endpoint: the kube-system deny-all does not apply to it.
            ("x/a", "kube-system/h", TCP, 10250, true),
        ],
    );
    let block = format!("{}---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: nodes, namespace: y}}\nspec: {{podSelector: {{}}, ingress: [{{from: [{{ipBlock: {{cidr: 192.168.1.0/24}}}}]}}]}}\n", deny_all_ingress("y"));
    check(
        &block,
        &[
            ("kube-system/h", "y/c", TCP, 80, true),
            ("x/a", "y/c", TCP, 80, false),
        ],
    );
}

/// "TCP, UDP and SCTP are policed ... IPv4 and IPv6 both work."
#[test]
fn sctp_and_ipv6() {
    let p = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: x}\nspec: {podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 'fd00::/127'}}], ports: [{protocol: SCTP, port: assoc}, {port: 80}]}]}\n";
    check(
        p,
        &[
            ("x/a6", "x/b6", SCTP, 80, true),
            ("x/a6", "x/b6", TCP, 80, true),
            ("x/a6", "x/b6", UDP, 80, false),
            ("x/b6", "x/a6", SCTP, 80, false),
            ("x/a", "x/b", SCTP, 80, false),
            ("fd00::1", "x/a6", TCP, 80, true),
        ],
    );
}
