//! A reference evaluator written straight from the spec (DESIGN.md, "Semantics", and the
//! ClusterNetworkPolicy API text), sharing no code with the compiler: it answers one connection at
//! a time by walking the model's policies, tier by tier. The compiler is tested against it.
//!
//! [`evaluate`] answers allowed or not per side; [`evaluate_detailed`] also says which tier,
//! policy and rule decided ([`Decider`]).
//!
//! Where the input is invalid it fails closed the way the compiler documents: an invalid peer or
//! port entry matches nothing, an invalid podSelector selects the whole namespace.
use std::net::IpAddr;

use ipnet::IpNet;

use crate::model::{
    IntOrString, LabelSelector, Labels, Model, NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort,
    ObjectKey, Pod, Protocol,
};

mod cluster;

pub use cluster::{tier_matches, ClusterAction, ClusterMatch, ClusterTier};

/// Options that match the compiler's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReferenceOptions {
    pub allow_node_traffic: bool,
}

impl Default for ReferenceOptions {
    fn default() -> Self {
        Self {
            allow_node_traffic: true,
        }
    }
}

/// The reference answer for one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReferenceVerdict {
    pub egress: bool,
    pub ingress: bool,
}

impl ReferenceVerdict {
    pub fn allowed(self) -> bool {
        self.egress && self.ingress
    }
}

/// A rule's peers and ports, whichever the direction.
type RuleParts<'a> = (
    Option<&'a Vec<NetworkPolicyPeer>>,
    Option<&'a Vec<NetworkPolicyPort>>,
);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Dir {
    Ingress,
    Egress,
}

/// What decided one side of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decider {
    /// The address is not a local endpoint: nothing to enforce on this side.
    NotEndpoint,
    /// The peer is the pod's own node (allowed before any tier).
    NodeTraffic,
    /// An Admin or Baseline rule with Accept or Deny.
    Cluster(ClusterMatch),
    /// A NetworkPolicy rule allowed it (the smallest policy key, then rule index).
    NetworkPolicy { policy: ObjectKey, index: u32 },
    /// NetworkPolicy isolates the direction and no rule allows it.
    NetworkPolicyIsolated { isolated_by: Vec<ObjectKey> },
    /// No tier decided: "the default kubernetes policy is applied, which says that all pods can
    /// communicate with each other". `passed` is a Baseline Pass rule that ended the tier.
    Default { passed: Option<ClusterMatch> },
}

/// One side's answer and who decided it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SideAnswer {
    pub allowed: bool,
    pub decider: Decider,
    /// The Admin Pass rule that handed this connection to the next tier, if one did.
    pub admin_pass: Option<ClusterMatch>,
}

impl SideAnswer {
    fn new(allowed: bool, decider: Decider) -> Self {
        Self {
            allowed,
            decider,
            admin_pass: None,
        }
    }
}

/// Both sides with their deciders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetailedVerdict {
    pub egress: SideAnswer,
    pub ingress: SideAnswer,
}

impl DetailedVerdict {
    pub fn allowed(&self) -> bool {
        self.egress.allowed && self.ingress.allowed
    }
}

/// "A connection needs the client's egress and the server's ingress to allow it."
pub fn evaluate(
    model: &Model,
    options: ReferenceOptions,
    from: IpAddr,
    to: IpAddr,
    protocol: Protocol,
    port: u16,
) -> ReferenceVerdict {
    let d = evaluate_detailed(model, options, from, to, protocol, port);
    ReferenceVerdict {
        egress: d.egress.allowed,
        ingress: d.ingress.allowed,
    }
}

/// [`evaluate`] with the tier, policy and rule that decided each side.
pub fn evaluate_detailed(
    model: &Model,
    options: ReferenceOptions,
    from: IpAddr,
    to: IpAddr,
    protocol: Protocol,
    port: u16,
) -> DetailedVerdict {
    let client = endpoint_with_ip(model, from);
    let server = endpoint_with_ip(model, to);
    let conn = Conn { protocol, port };
    let egress = client.map_or(SideAnswer::new(true, Decider::NotEndpoint), |c| {
        side(model, options, c, Dir::Egress, to, server, conn)
    });
    let ingress = server.map_or(SideAnswer::new(true, Decider::NotEndpoint), |s| {
        side(model, options, s, Dir::Ingress, from, client, conn)
    });
    DetailedVerdict { egress, ingress }
}

#[derive(Clone, Copy)]
struct Conn {
    protocol: Protocol,
    port: u16,
}

/// One side, tier by tier: "Policy tiers are evaluated in the following order: Admin tier,
/// NetworkPolicy tier, Baseline tier".
fn side(
    model: &Model,
    options: ReferenceOptions,
    pod: &Pod,
    dir: Dir,
    peer_ip: IpAddr,
    peer_pod: Option<&Pod>,
    conn: Conn,
) -> SideAnswer {
    // "Traffic to and from the node a pod runs on is always allowed (kubelet probes)": before
    // any tier, as the dataplane does it.
    if options.allow_node_traffic {
        if let Some(node) = &pod.node_name {
            if node_addresses(model, node).contains(&peer_ip) {
                return SideAnswer::new(true, Decider::NodeTraffic);
            }
        }
    }
    let egress = dir == Dir::Egress;
    let tier = |t| {
        cluster::first_match(
            model,
            t,
            pod,
            egress,
            peer_ip,
            peer_pod,
            conn.protocol,
            conn.port,
        )
    };
    // "If Admin tier has made a final decision (Accept or Deny) on a connection, then no further
    // evaluation is done."
    let admin = tier(ClusterTier::Admin);
    let admin_pass = match admin {
        Some(m) if m.action == ClusterAction::Pass => Some(m),
        Some(m) => return SideAnswer::new(m.action == ClusterAction::Accept, Decider::Cluster(m)),
        None => None,
    };
    // "v1.NetworkPolicy always makes a final decision for selected pods. Further evaluation only
    // happens for Pods not selected by a v1.NetworkPolicy."
    let answer = match np_side(model, pod, dir, peer_ip, peer_pod, conn) {
        Some(decider) => {
            let allowed = matches!(decider, Decider::NetworkPolicy { .. });
            SideAnswer::new(allowed, decider)
        }
        None => match tier(ClusterTier::Baseline) {
            Some(m) if m.action == ClusterAction::Pass => {
                SideAnswer::new(true, Decider::Default { passed: Some(m) })
            }
            Some(m) => SideAnswer::new(m.action == ClusterAction::Accept, Decider::Cluster(m)),
            None => SideAnswer::new(true, Decider::Default { passed: None }),
        },
    };
    SideAnswer {
        admin_pass,
        ..answer
    }
}

/// The pod that owns `ip` as an endpoint ("hostNetwork pods are not endpoints"); the smallest
/// `namespace/name` if several claim it.
pub fn endpoint_with_ip(model: &Model, ip: IpAddr) -> Option<&Pod> {
    model
        .pods
        .values()
        .find(|p| !p.host_network && p.ips.contains(&ip))
}

/// The addresses of a node: its Node object and the IPs of hostNetwork pods on it.
fn node_addresses(model: &Model, node: &str) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = model
        .nodes
        .get(node)
        .map(|n| n.addresses.clone())
        .unwrap_or_default();
    for pod in model.pods.values() {
        if pod.host_network && pod.node_name.as_deref() == Some(node) {
            out.extend(&pod.ips);
        }
    }
    out
}

/// The NetworkPolicy tier: `None` when no policy isolates the direction.
fn np_side(
    model: &Model,
    pod: &Pod,
    dir: Dir,
    peer_ip: IpAddr,
    peer_pod: Option<&Pod>,
    conn: Conn,
) -> Option<Decider> {
    // "A pod is isolated for a direction iff some policy in its namespace selects it and that
    // direction is among the policy's effective policyTypes".
    let policies: Vec<&NetworkPolicy> = model
        .policies
        .values()
        .filter(|p| p.namespace == pod.namespace)
        .filter(|p| selector_matches(&p.spec.pod_selector, &pod.labels).unwrap_or(true))
        .filter(|p| has_type(p, dir))
        .collect();
    if policies.is_empty() {
        return None;
    }
    // "Isolated directions allow only the union of matching rules".
    let dest = match dir {
        Dir::Ingress => Some(pod),
        Dir::Egress => peer_pod,
    };
    for policy in &policies {
        let rules: Vec<RuleParts<'_>> = match dir {
            Dir::Ingress => policy
                .spec
                .ingress
                .iter()
                .flatten()
                .map(|r| (r.from.as_ref(), r.ports.as_ref()))
                .collect(),
            Dir::Egress => policy
                .spec
                .egress
                .iter()
                .flatten()
                .map(|r| (r.to.as_ref(), r.ports.as_ref()))
                .collect(),
        };
        let hit = rules.into_iter().position(|(peers, ports)| {
            peers_match(model, policy, peers, peer_ip, peer_pod)
                && ports_match(ports, conn.protocol, conn.port, dest)
        });
        if let Some(index) = hit {
            return Some(Decider::NetworkPolicy {
                policy: policy.key(),
                index: u32::try_from(index).unwrap_or(u32::MAX),
            });
        }
    }
    let isolated_by = policies.iter().map(|p| p.key()).collect();
    Some(Decider::NetworkPolicyIsolated { isolated_by })
}

/// "Effective policyTypes (explicit list; else Ingress, plus Egress when egress has rules)".
fn has_type(policy: &NetworkPolicy, dir: Dir) -> bool {
    let spec = &policy.spec;
    match &spec.policy_types {
        Some(types) if !types.is_empty() => {
            let known = types.iter().any(|t| t == "Ingress" || t == "Egress");
            let want = match dir {
                Dir::Ingress => "Ingress",
                Dir::Egress => "Egress",
            };
            !known || types.iter().any(|t| t == want)
        }
        _ => match dir {
            Dir::Ingress => true,
            Dir::Egress => spec.egress.as_ref().is_some_and(|e| !e.is_empty()),
        },
    }
}

/// "missing or empty from/to = all peers"; "separate peers = OR".
fn peers_match(
    model: &Model,
    policy: &NetworkPolicy,
    peers: Option<&Vec<NetworkPolicyPeer>>,
    peer_ip: IpAddr,
    peer_pod: Option<&Pod>,
) -> bool {
    match peers {
        None => true,
        Some(list) if list.is_empty() => true,
        Some(list) => list
            .iter()
            .any(|peer| peer_matches(model, policy, peer, peer_ip, peer_pod)),
    }
}

fn peer_matches(
    model: &Model,
    policy: &NetworkPolicy,
    peer: &NetworkPolicyPeer,
    peer_ip: IpAddr,
    peer_pod: Option<&Pod>,
) -> bool {
    match (&peer.pod_selector, &peer.namespace_selector, &peer.ip_block) {
        (None, None, None) => false,
        // "ipBlock = CIDR minus except, and it matches pod IPs too".
        (None, None, Some(block)) => {
            let Some(cidr) = parse_cidr(&block.cidr) else {
                return false;
            };
            let mut excepts = Vec::new();
            for text in block.except.iter().flatten() {
                match parse_cidr(text) {
                    Some(e) if cidr.contains(&e) => excepts.push(e),
                    _ => return false,
                }
            }
            cidr.contains(&peer_ip) && !excepts.iter().any(|e| e.contains(&peer_ip))
        }
        (_, _, Some(_)) => false,
        (pods, namespaces, None) => {
            let Some(pod) = peer_pod else {
                return false;
            };
            // "podSelector alone = the policy's namespace; namespaceSelector alone = all pods of
            // matching namespaces; both in one peer = AND".
            let ns_ok = match namespaces {
                None => pod.namespace == policy.namespace,
                Some(sel) => {
                    selector_matches(sel, &model.namespace_labels(&pod.namespace)) == Some(true)
                }
            };
            let pod_ok = match pods {
                None => true,
                Some(sel) => selector_matches(sel, &pod.labels) == Some(true),
            };
            ns_ok && pod_ok
        }
    }
}

pub(crate) fn parse_cidr(text: &str) -> Option<IpNet> {
    text.trim().parse::<IpNet>().ok().map(|n| n.trunc())
}

/// `None` when the selector is invalid. "matchLabels and matchExpressions (In, NotIn, Exists,
/// DoesNotExist); {} matches all."
pub(crate) fn selector_matches(sel: &LabelSelector, labels: &Labels) -> Option<bool> {
    let mut ok = sel
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    for req in sel.match_expressions.iter().flatten() {
        let values = req.values.clone().unwrap_or_default();
        let have = labels.get(&req.key);
        let matched = match req.operator.as_str() {
            "In" if !values.is_empty() => have.is_some_and(|v| values.contains(v)),
            "NotIn" if !values.is_empty() => have.is_none_or(|v| !values.contains(v)),
            "Exists" if values.is_empty() => have.is_some(),
            "DoesNotExist" if values.is_empty() => have.is_none(),
            _ => return None,
        };
        ok &= matched;
    }
    Some(ok)
}

/// "Missing or empty ports = all ports and protocols".
fn ports_match(
    ports: Option<&Vec<NetworkPolicyPort>>,
    protocol: Protocol,
    port: u16,
    dest: Option<&Pod>,
) -> bool {
    match ports {
        None => true,
        Some(list) if list.is_empty() => true,
        Some(list) => list.iter().any(|p| port_matches(p, protocol, port, dest)),
    }
}

fn port_matches(
    entry: &NetworkPolicyPort,
    protocol: Protocol,
    port: u16,
    dest: Option<&Pod>,
) -> bool {
    // "protocol defaults to TCP".
    let want = match entry.protocol.as_deref() {
        None => Protocol::Tcp,
        Some(text) => match Protocol::parse(text) {
            Some(p) => p,
            None => return false,
        },
    };
    if want != protocol {
        return false;
    }
    let port = i64::from(port);
    match (&entry.port, entry.end_port) {
        // "a port entry with only a protocol = all ports of it".
        (None, None) => true,
        (None, Some(_)) => false,
        // "endPort is an inclusive range".
        (Some(IntOrString::Int(n)), end) => {
            let end = end.unwrap_or(*n);
            (1..=65535).contains(n)
                && (1..=65535).contains(&end)
                && end >= *n
                && (*n..=end).contains(&port)
        }
        (Some(IntOrString::String(_)), Some(_)) => false,
        // "a named port resolves on the destination pod's containerPorts (name and protocol), per
        // destination pod, also in egress rules".
        (Some(IntOrString::String(name)), None) => dest.is_some_and(|pod| {
            pod.container_ports.iter().any(|cp| {
                cp.name.as_deref() == Some(name.as_str())
                    && cp.protocol == protocol
                    && i64::from(cp.port) == port
            })
        }),
    }
}

/// IANA service name rules, as the API validates port names (written here again, not shared
/// with the compiler).
fn valid_port_name(name: &str) -> bool {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let has_letter = name.bytes().any(|b| b.is_ascii_lowercase());
    !name.is_empty()
        && name.len() <= 15
        && ok_chars
        && has_letter
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--")
}
