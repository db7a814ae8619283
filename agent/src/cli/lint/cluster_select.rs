//! What lint needs to reason about ClusterNetworkPolicies over the model, written from the API
//! text like the rest of lint: the pods a subject selects, what a rule's peers cover (pods,
//! networks, nodes) and what its `protocols` cover. Peers and ports that cannot be read come
//! back as `None`: lint then says nothing about the rule (the compiler reports it as invalid).

use std::collections::BTreeSet;

use ipnet::IpNet;

use super::select::selector;
use crate::model::{
    ClusterNetworkPolicy, ClusterPolicyPeer, ClusterPolicyProtocol, ClusterRuleView, LabelSelector,
    Model, NamespacedPod, ObjectKey, Pod, Protocol,
};

/// A ClusterNetworkPolicy tier, when the field is one of the two the API knows.
pub fn tier(policy: &ClusterNetworkPolicy) -> Option<&'static str> {
    match policy.spec.tier.as_str() {
        "Admin" => Some("Admin"),
        "Baseline" => Some("Baseline"),
        _ => None,
    }
}

/// Pods policy applies to (hostNetwork pods are not endpoints).
fn endpoints(model: &Model) -> impl Iterator<Item = &Pod> {
    model.pods.values().filter(|p| !p.host_network)
}

fn namespace_matches(model: &Model, sel: &LabelSelector, pod: &Pod) -> bool {
    selector(sel, &model.namespace_labels(&pod.namespace)) == Some(true)
}

fn namespaced_pod(model: &Model, sel: &NamespacedPod, pod: &Pod) -> bool {
    namespace_matches(model, &sel.namespace_selector, pod)
        && selector(&sel.pod_selector, &pod.labels) == Some(true)
}

/// "Subject defines the pods to which this ClusterNetworkPolicy applies. Exactly one field must
/// be set." An unreadable subject selects nothing.
pub fn subject_pods<'a>(model: &'a Model, policy: &ClusterNetworkPolicy) -> Vec<&'a Pod> {
    let subject = &policy.spec.subject;
    endpoints(model)
        .filter(|pod| match (&subject.namespaces, &subject.pods) {
            (Some(ns), None) => namespace_matches(model, ns, pod),
            (None, Some(sel)) => namespaced_pod(model, sel, pod),
            _ => false,
        })
        .collect()
}

/// What a rule's peers cover, over the model.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerCover {
    pub pods: BTreeSet<ObjectKey>,
    pub networks: Vec<IpNet>,
    pub nodes: BTreeSet<String>,
}

impl PeerCover {
    pub fn is_empty(&self) -> bool {
        self.pods.is_empty() && self.networks.is_empty() && self.nodes.is_empty()
    }

    /// Whether everything `other` covers is covered here.
    pub fn covers(&self, other: &PeerCover) -> bool {
        other.pods.is_subset(&self.pods)
            && other.nodes.is_subset(&self.nodes)
            && other
                .networks
                .iter()
                .all(|n| self.networks.iter().any(|m| m.contains(n)))
    }

    /// Whether some peer is covered by both.
    pub fn overlaps(&self, other: &PeerCover) -> bool {
        !self.pods.is_disjoint(&other.pods)
            || !self.nodes.is_disjoint(&other.nodes)
            || self.networks.iter().any(|n| {
                other
                    .networks
                    .iter()
                    .any(|m| m.contains(n) || n.contains(m))
            })
    }
}

/// The peers of a rule, or `None` when one of them cannot be read (or is `domainNames`, which
/// Palisade does not implement).
pub fn peer_cover(model: &Model, rule: &ClusterRuleView<'_>) -> Option<PeerCover> {
    let peers = rule.peers.filter(|p| !p.is_empty())?;
    let mut cover = PeerCover::default();
    for peer in peers {
        add_peer(model, peer, rule.egress, &mut cover)?;
    }
    Some(cover)
}

fn add_peer(
    model: &Model,
    peer: &ClusterPolicyPeer,
    egress: bool,
    cover: &mut PeerCover,
) -> Option<()> {
    let set = [
        peer.namespaces.is_some(),
        peer.pods.is_some(),
        peer.nodes.is_some() && egress,
        peer.networks.is_some() && egress,
    ];
    if set.iter().filter(|s| **s).count() != 1 || peer.domain_names.is_some() {
        return None;
    }
    if let Some(ns) = &peer.namespaces {
        selector(ns, &Default::default())?;
        let pods = endpoints(model).filter(|p| namespace_matches(model, ns, p));
        cover.pods.extend(pods.map(Pod::key));
    } else if let Some(sel) = &peer.pods {
        selector(&sel.namespace_selector, &Default::default())?;
        selector(&sel.pod_selector, &Default::default())?;
        let pods = endpoints(model).filter(|p| namespaced_pod(model, sel, p));
        cover.pods.extend(pods.map(Pod::key));
    } else if let Some(nodes) = &peer.nodes {
        selector(nodes, &Default::default())?;
        let hit = model
            .nodes
            .values()
            .filter(|n| selector(nodes, &n.labels) == Some(true));
        cover.nodes.extend(hit.map(|n| n.name.clone()));
    } else if let Some(nets) = &peer.networks {
        for text in nets {
            cover
                .networks
                .push(text.trim().parse::<IpNet>().ok()?.trunc());
        }
    }
    Some(())
}

/// One readable `protocols` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortSpec {
    /// A protocol and an inclusive port range (all ports: 1..=65535).
    Range(Protocol, u16, u16),
    /// `destinationNamedPort`.
    Named(String),
}

impl PortSpec {
    fn covers(&self, other: &PortSpec) -> bool {
        match (self, other) {
            (Self::Range(p, lo, hi), Self::Range(q, a, b)) => p == q && lo <= a && b <= hi,
            (Self::Named(a), Self::Named(b)) => a == b,
            _ => false,
        }
    }

    /// Whether both may match one packet (a named port against a number: maybe, so yes).
    fn overlaps(&self, other: &PortSpec) -> bool {
        match (self, other) {
            (Self::Range(p, lo, hi), Self::Range(q, a, b)) => p == q && lo <= b && a <= hi,
            (Self::Named(a), Self::Named(b)) => a == b,
            _ => true,
        }
    }
}

/// A rule's `protocols`: `Some(None)` = every port and protocol, `None` = unreadable.
pub fn port_specs(protocols: Option<&[ClusterPolicyProtocol]>) -> Option<Option<Vec<PortSpec>>> {
    let Some(list) = protocols.filter(|l| !l.is_empty()) else {
        return Some(None);
    };
    list.iter()
        .map(port_spec)
        .collect::<Option<Vec<_>>>()
        .map(Some)
}

fn port_spec(entry: &ClusterPolicyProtocol) -> Option<PortSpec> {
    let fields = [
        entry.tcp.as_ref().map(|m| (Protocol::Tcp, m)),
        entry.udp.as_ref().map(|m| (Protocol::Udp, m)),
        entry.sctp.as_ref().map(|m| (Protocol::Sctp, m)),
    ];
    let set: Vec<_> = fields.into_iter().flatten().collect();
    match (set.as_slice(), &entry.destination_named_port) {
        ([(proto, m)], None) => {
            let port = |n: i64| u16::try_from(n).ok().filter(|p| *p > 0);
            let (lo, hi) = match &m.destination_port {
                None => (1, 65535),
                Some(p) => match (p.number, &p.range) {
                    (Some(n), None) => (port(n)?, port(n)?),
                    (None, Some(r)) if r.start <= r.end => (port(r.start)?, port(r.end)?),
                    _ => return None,
                },
            };
            Some(PortSpec::Range(*proto, lo, hi))
        }
        ([], Some(name)) => Some(PortSpec::Named(name.clone())),
        _ => None,
    }
}

/// Whether the ports `wide` cover every port `narrow` matches.
pub fn ports_cover(wide: &Option<Vec<PortSpec>>, narrow: &Option<Vec<PortSpec>>) -> bool {
    match (wide, narrow) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(w), Some(n)) => n.iter().all(|x| w.iter().any(|y| y.covers(x))),
    }
}

/// Whether some packet may match both.
pub fn ports_overlap(a: &Option<Vec<PortSpec>>, b: &Option<Vec<PortSpec>>) -> bool {
    match (a, b) {
        (None, _) | (_, None) => true,
        (Some(a), Some(b)) => a.iter().any(|x| b.iter().any(|y| x.overlaps(y))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn ranges_cover_and_overlap() {
        let all = None;
        let web = Some(vec![PortSpec::Range(Protocol::Tcp, 80, 80)]);
        let wide = Some(vec![PortSpec::Range(Protocol::Tcp, 1, 1024)]);
        let udp = Some(vec![PortSpec::Range(Protocol::Udp, 1, 65535)]);
        let named = Some(vec![PortSpec::Named("http".into())]);
        assert!(ports_cover(&all, &web) && ports_cover(&wide, &web));
        assert!(!ports_cover(&web, &wide) && !ports_cover(&web, &all));
        assert!(!ports_cover(&udp, &web) && !ports_overlap(&udp, &web));
        assert!(ports_overlap(&wide, &web) && ports_overlap(&named, &web));
        assert!(
            !ports_cover(&wide, &named),
            "a name may resolve outside the range"
        );
    }

    #[test]
    fn peer_covers_by_pods_nodes_and_networks() {
        let key = |n: &str| ObjectKey::new("x", n);
        let big = PeerCover {
            pods: [key("a"), key("b")].into(),
            networks: vec![net("10.0.0.0/8")],
            nodes: ["n1".to_owned()].into(),
        };
        let small = PeerCover {
            pods: [key("a")].into(),
            networks: vec![net("10.1.0.0/16")],
            nodes: BTreeSet::new(),
        };
        assert!(big.covers(&small) && !small.covers(&big));
        assert!(small.overlaps(&big));
        let other = PeerCover {
            networks: vec![net("192.0.2.0/24")],
            ..PeerCover::default()
        };
        assert!(!other.overlaps(&small) && !big.covers(&other));
    }
}
