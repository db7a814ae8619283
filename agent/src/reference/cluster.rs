//! ClusterNetworkPolicy tiers, straight from the upstream API text: no flattening, each
//! connection walks the Admin tier, NetworkPolicy and the Baseline tier in order.
//!
//! Invalid input fails closed as `docs/cluster-network-policy.md` says (the compiler does the
//! same): an Accept rule drops what it cannot read; a Deny or Pass rule with anything it cannot
//! read, or a rule with an unknown action, becomes "Deny everything".
use std::net::IpAddr;

use ipnet::IpNet;

use super::{parse_cidr, selector_matches};
use crate::model::{
    ClusterNetworkPolicy, ClusterPolicyPeer, ClusterPolicyProtocol, ClusterPort, ClusterRuleView,
    LabelSelector, Labels, Model, NamespacedPod, Pod, Protocol,
};

/// The two ClusterNetworkPolicy tiers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ClusterTier {
    Admin,
    Baseline,
}

impl ClusterTier {
    fn parse(text: &str) -> Option<Self> {
        match text {
            "Admin" => Some(Self::Admin),
            "Baseline" => Some(Self::Baseline),
            _ => None,
        }
    }
}

/// A rule's action after fail-closed reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ClusterAction {
    Accept,
    Deny,
    Pass,
}

/// Which ClusterNetworkPolicy rule matched a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterMatch {
    pub tier: ClusterTier,
    pub policy: String,
    pub priority: i64,
    pub direction_egress: bool,
    pub index: u32,
    pub rule_name: Option<String>,
    pub action: ClusterAction,
}

/// The first rule of `tier` (in priority order, then name, then rule order) that matches, if any.
/// "Policies with lower priority values have higher precedence"; "a rule that appears at the top
/// of the ingress rules would take the highest precedence". Same priority: ordered by name (the
/// API leaves the order open).
#[expect(
    clippy::too_many_arguments,
    reason = "one connection's worth of facts, spelled out"
)]
pub(super) fn first_match(
    model: &Model,
    tier: ClusterTier,
    pod: &Pod,
    egress: bool,
    peer_ip: IpAddr,
    peer_pod: Option<&Pod>,
    protocol: Protocol,
    port: u16,
) -> Option<ClusterMatch> {
    let conn = (peer_ip, peer_pod, protocol, port);
    matches_in_order(model, tier, pod, egress, conn).next()
}

/// Every rule of `tier` that matches the connection, in evaluation order (the first one is the
/// one that decides; `explain` lists the others as not reached). `peer_pod` is the peer's
/// endpoint pod, if the peer address is one ([`super::endpoint_with_ip`]).
#[expect(
    clippy::too_many_arguments,
    reason = "one connection's worth of facts, spelled out"
)]
pub fn tier_matches(
    model: &Model,
    tier: ClusterTier,
    pod: &Pod,
    egress: bool,
    peer_ip: IpAddr,
    peer_pod: Option<&Pod>,
    protocol: Protocol,
    port: u16,
) -> Vec<ClusterMatch> {
    let conn = (peer_ip, peer_pod, protocol, port);
    matches_in_order(model, tier, pod, egress, conn).collect()
}

/// The peer address, peer pod, protocol and destination port of one connection.
type ConnFacts<'a> = (IpAddr, Option<&'a Pod>, Protocol, u16);

/// The matching rules of `tier`, lazily, in evaluation order.
fn matches_in_order<'a>(
    model: &'a Model,
    tier: ClusterTier,
    pod: &'a Pod,
    egress: bool,
    (peer_ip, peer_pod, protocol, port): ConnFacts<'a>,
) -> impl Iterator<Item = ClusterMatch> + 'a {
    let mut policies: Vec<&ClusterNetworkPolicy> = model
        .cluster_policies
        .values()
        .filter(|p| ClusterTier::parse(&p.spec.tier) == Some(tier))
        .filter(|p| subject_selects(model, p, pod))
        .collect();
    policies.sort_by(|a, b| (a.spec.priority, &a.name).cmp(&(b.spec.priority, &b.name)));
    let dest = if egress { peer_pod } else { Some(pod) };
    policies.into_iter().flat_map(move |policy| {
        let rules = policy.rules(egress).into_iter().enumerate();
        rules.filter_map(move |(index, rule)| {
            let action = rule_matches(model, &rule, peer_ip, peer_pod, dest, protocol, port)?;
            Some(ClusterMatch {
                tier,
                policy: policy.name.clone(),
                priority: policy.spec.priority,
                direction_egress: egress,
                index: u32::try_from(index).unwrap_or(u32::MAX),
                rule_name: rule.name.map(str::to_owned),
                action,
            })
        })
    })
}

/// "Subject defines the pods to which this ClusterNetworkPolicy applies. Exactly one field must
/// be set." An invalid subject selects nothing.
fn subject_selects(model: &Model, policy: &ClusterNetworkPolicy, pod: &Pod) -> bool {
    let subject = &policy.spec.subject;
    match (&subject.namespaces, &subject.pods) {
        (Some(ns), None) => namespace_ok(model, ns, pod) == Some(true),
        (None, Some(pods)) => namespaced_pod(model, pods, pod) == Some(true),
        _ => false,
    }
}

fn namespace_ok(model: &Model, sel: &LabelSelector, pod: &Pod) -> Option<bool> {
    selector_matches(sel, &model.namespace_labels(&pod.namespace))
}

/// "select a given set of pod(s) in selected namespace(s)". `None` if a selector is invalid.
fn namespaced_pod(model: &Model, sel: &NamespacedPod, pod: &Pod) -> Option<bool> {
    let ns = namespace_ok(model, &sel.namespace_selector, pod)?;
    let labels = selector_matches(&sel.pod_selector, &pod.labels)?;
    Some(ns && labels)
}

/// What one peer says about a peer address: matched, not matched, or unreadable.
enum PeerCheck {
    Match,
    NoMatch,
    Invalid,
}

/// The action of `rule` if it matches the connection.
fn rule_matches(
    model: &Model,
    rule: &ClusterRuleView<'_>,
    peer_ip: IpAddr,
    peer_pod: Option<&Pod>,
    dest: Option<&Pod>,
    protocol: Protocol,
    port: u16,
) -> Option<ClusterAction> {
    let action = match rule.action {
        "Accept" => ClusterAction::Accept,
        "Deny" => ClusterAction::Deny,
        "Pass" => ClusterAction::Pass,
        // An action we do not know: "fail closed" as for Deny.
        _ => return Some(ClusterAction::Deny),
    };
    let peers = rule.peers.unwrap_or_default();
    let mut peer_hit = false;
    // "This field must be defined and contain at least one item": an empty list is unreadable.
    let mut invalid = peers.is_empty();
    for peer in peers {
        match peer_check(model, peer, rule.egress, peer_ip, peer_pod) {
            PeerCheck::Match => peer_hit = true,
            PeerCheck::NoMatch => {}
            PeerCheck::Invalid => invalid = true,
        }
    }
    let (port_hit, ports_invalid) = ports_match(rule.protocols, dest, protocol, port);
    invalid |= ports_invalid;
    if invalid && action != ClusterAction::Accept {
        // "For "Deny" and "Pass" rules, "fail closed" means: "treat the rule as a 'Deny all'
        // rule"."
        return Some(ClusterAction::Deny);
    }
    // "For "Accept" rules, "fail closed" means: "treat the rule as matching no traffic"" (for
    // the part that cannot be read).
    (peer_hit && port_hit).then_some(action)
}

fn peer_check(
    model: &Model,
    peer: &ClusterPolicyPeer,
    egress: bool,
    peer_ip: IpAddr,
    peer_pod: Option<&Pod>,
) -> PeerCheck {
    let set = [
        peer.namespaces.is_some(),
        peer.pods.is_some(),
        peer.nodes.is_some(),
        peer.networks.is_some(),
        peer.domain_names.is_some(),
    ];
    // "Exactly one of the fields must be set"; ingress peers have only namespaces and pods;
    // domainNames is not implemented.
    let ingress_only_ok = egress || (peer.nodes.is_none() && peer.networks.is_none());
    if set.iter().filter(|s| **s).count() != 1 || !ingress_only_ok || peer.domain_names.is_some() {
        return PeerCheck::Invalid;
    }
    let verdict = if let Some(ns) = &peer.namespaces {
        // "Note that host-networked pods are not included in this type of peer."
        match peer_pod {
            Some(pod) => namespace_ok(model, ns, pod),
            None => selector_matches(ns, &Labels::new()).map(|_| false),
        }
    } else if let Some(pods) = &peer.pods {
        match peer_pod {
            Some(pod) => namespaced_pod(model, pods, pod),
            None => {
                let ns = selector_matches(&pods.namespace_selector, &Labels::new());
                let p = selector_matches(&pods.pod_selector, &Labels::new());
                ns.and(p).map(|_| false)
            }
        }
    } else if let Some(nodes) = &peer.nodes {
        node_matches(model, nodes, peer_ip)
    } else if let Some(networks) = &peer.networks {
        networks_match(networks, peer_ip)
    } else {
        None
    };
    match verdict {
        Some(true) => PeerCheck::Match,
        Some(false) => PeerCheck::NoMatch,
        None => PeerCheck::Invalid,
    }
}

/// "It selects the nodeIPs as the peer type by matching on the IPs present in the
/// node.Status.Addresses field of the node." `None` if the selector is invalid.
fn node_matches(model: &Model, sel: &LabelSelector, ip: IpAddr) -> Option<bool> {
    let mut hit = false;
    for node in model.nodes.values() {
        if selector_matches(sel, &node.labels)? && node.addresses.contains(&ip) {
            hit = true;
        }
    }
    // Validate against an empty label set so an invalid selector is noticed without nodes.
    selector_matches(sel, &Labels::new())?;
    Some(hit)
}

/// "Networks defines a way to select peers via CIDR blocks ... cluster-internal traffic will be
/// checked against the rule as well." `None` if a CIDR is invalid.
fn networks_match(networks: &[String], ip: IpAddr) -> Option<bool> {
    if networks.is_empty() {
        return None;
    }
    let nets: Option<Vec<IpNet>> = networks.iter().map(|t| parse_cidr(t)).collect();
    Some(nets?.iter().any(|n| n.contains(&ip)))
}

/// Whether the protocols list matches, and whether any entry was unreadable. "If unspecified,
/// protocol-specific attributes will not be used to match traffic."
fn ports_match(
    protocols: Option<&[ClusterPolicyProtocol]>,
    dest: Option<&Pod>,
    protocol: Protocol,
    port: u16,
) -> (bool, bool) {
    let Some(list) = protocols.filter(|l| !l.is_empty()) else {
        return (true, false);
    };
    let (mut hit, mut invalid) = (false, false);
    for entry in list {
        match entry_matches(entry, dest, protocol, port) {
            Some(true) => hit = true,
            Some(false) => {}
            None => invalid = true,
        }
    }
    (hit, invalid)
}

/// One `protocols` entry ("Exactly one field must be set"); `None` if unreadable.
fn entry_matches(
    entry: &ClusterPolicyProtocol,
    dest: Option<&Pod>,
    protocol: Protocol,
    port: u16,
) -> Option<bool> {
    let fields = [
        entry.tcp.as_ref().map(|m| (Protocol::Tcp, m)),
        entry.udp.as_ref().map(|m| (Protocol::Udp, m)),
        entry.sctp.as_ref().map(|m| (Protocol::Sctp, m)),
    ];
    let set: Vec<(Protocol, _)> = fields.into_iter().flatten().collect();
    match (set.as_slice(), &entry.destination_named_port) {
        ([(proto, m)], None) => {
            let range = match &m.destination_port {
                None => (0, 65535),
                Some(p) => port_range(p)?,
            };
            let port = i64::from(port);
            Some(*proto == protocol && range.0 <= port && port <= range.1)
        }
        // "DestinationNamedPort selects a destination port on a pod based on the ContainerPort
        // name": the container port of that name, with its own protocol.
        ([], Some(name)) if super::valid_port_name(name) => Some(dest.is_some_and(|pod| {
            pod.container_ports.iter().any(|cp| {
                cp.name.as_deref() == Some(name.as_str())
                    && cp.protocol == protocol
                    && cp.port == port
            })
        })),
        _ => None,
    }
}

/// "You must specify either Port or Range"; a range is inclusive with start below end.
fn port_range(p: &ClusterPort) -> Option<(i64, i64)> {
    let ok = |n: i64| (1..=65535).contains(&n);
    match (p.number, &p.range) {
        (Some(n), None) if ok(n) => Some((n, n)),
        (None, Some(r)) if ok(r.start) && ok(r.end) && r.start <= r.end => Some((r.start, r.end)),
        _ => None,
    }
}
