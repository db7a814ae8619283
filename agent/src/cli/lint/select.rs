//! The matching helpers lint needs, written from the spec (DESIGN.md, "Semantics") over the model:
//! which pods a policy selects, which pods a peer matches, whether a rule allows a given pod on a
//! port. They work without pod IPs (a manifest directory often has none) except for ipBlocks.

use ipnet::IpNet;

use crate::model::{
    IntOrString, LabelSelector, Labels, Model, NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort,
    Pod, Protocol,
};

/// `None` when the selector is invalid (the compiler reports those).
pub fn selector(sel: &LabelSelector, labels: &Labels) -> Option<bool> {
    let mut ok = sel
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    for req in sel.match_expressions.iter().flatten() {
        let values = req.values.clone().unwrap_or_default();
        let have = labels.get(&req.key);
        ok &= match req.operator.as_str() {
            "In" if !values.is_empty() => have.is_some_and(|v| values.contains(v)),
            "NotIn" if !values.is_empty() => have.is_none_or(|v| !values.contains(v)),
            "Exists" if values.is_empty() => have.is_some(),
            "DoesNotExist" if values.is_empty() => have.is_none(),
            _ => return None,
        };
    }
    Some(ok)
}

/// The direction of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    Ingress,
    Egress,
}

impl Dir {
    pub fn name(self) -> &'static str {
        match self {
            Dir::Ingress => "ingress",
            Dir::Egress => "egress",
        }
    }

    /// The peer list's field name (`from` / `to`).
    pub fn peers_field(self) -> &'static str {
        match self {
            Dir::Ingress => "from",
            Dir::Egress => "to",
        }
    }
}

/// "Effective policyTypes (explicit list; else Ingress, plus Egress when egress has rules)".
pub fn has_type(policy: &NetworkPolicy, dir: Dir) -> bool {
    let spec = &policy.spec;
    match &spec.policy_types {
        Some(types) if !types.is_empty() => {
            let want = match dir {
                Dir::Ingress => "Ingress",
                Dir::Egress => "Egress",
            };
            types.iter().any(|t| t == want)
        }
        _ => match dir {
            Dir::Ingress => true,
            Dir::Egress => spec.egress.as_ref().is_some_and(|e| !e.is_empty()),
        },
    }
}

/// Whether `policy` selects `pod` (same namespace, podSelector matches; an invalid selector
/// selects the whole namespace, as the compiler fails closed).
pub fn selects(policy: &NetworkPolicy, pod: &Pod) -> bool {
    pod.namespace == policy.namespace
        && selector(&policy.spec.pod_selector, &pod.labels).unwrap_or(true)
}

/// One rule's peers and ports, whichever the direction.
#[derive(Debug, Clone, Copy)]
pub struct Rule<'a> {
    pub index: usize,
    pub peers: Option<&'a Vec<NetworkPolicyPeer>>,
    pub ports: Option<&'a Vec<NetworkPolicyPort>>,
}

/// The rules of one direction of a policy.
pub fn rules(policy: &NetworkPolicy, dir: Dir) -> Vec<Rule<'_>> {
    match dir {
        Dir::Ingress => policy
            .spec
            .ingress
            .iter()
            .flatten()
            .enumerate()
            .map(|(index, r)| Rule {
                index,
                peers: r.from.as_ref(),
                ports: r.ports.as_ref(),
            })
            .collect(),
        Dir::Egress => policy
            .spec
            .egress
            .iter()
            .flatten()
            .enumerate()
            .map(|(index, r)| Rule {
                index,
                peers: r.to.as_ref(),
                ports: r.ports.as_ref(),
            })
            .collect(),
    }
}

/// Whether a selector peer (no ipBlock) matches `pod`; ipBlock peers match by the pod's IPs.
pub fn peer_matches(
    model: &Model,
    policy: &NetworkPolicy,
    peer: &NetworkPolicyPeer,
    pod: &Pod,
) -> bool {
    if pod.host_network {
        return false;
    }
    if let Some(block) = &peer.ip_block {
        return ip_block(block).is_some_and(|(cidr, except)| {
            pod.ips
                .iter()
                .any(|ip| cidr.contains(ip) && !except.iter().any(|e| e.contains(ip)))
        });
    }
    if peer.pod_selector.is_none() && peer.namespace_selector.is_none() {
        return false;
    }
    let ns_ok = match &peer.namespace_selector {
        None => pod.namespace == policy.namespace,
        Some(sel) => selector(sel, &model.namespace_labels(&pod.namespace)) == Some(true),
    };
    let pod_ok = peer
        .pod_selector
        .as_ref()
        .is_none_or(|sel| selector(sel, &pod.labels) == Some(true));
    ns_ok && pod_ok
}

/// An ipBlock's CIDR and excepts, `None` if any of them does not parse.
pub fn ip_block(block: &crate::model::IpBlock) -> Option<(IpNet, Vec<IpNet>)> {
    let cidr = block.cidr.trim().parse::<IpNet>().ok()?.trunc();
    let except = block
        .except
        .iter()
        .flatten()
        .map(|e| e.trim().parse::<IpNet>().ok().map(|n| n.trunc()))
        .collect::<Option<Vec<_>>>()?;
    Some((cidr, except))
}

/// Whether `rule` of `policy` lets `peer` through on `protocol`/`port`; `dest` is the pod whose
/// containerPorts named ports resolve on.
pub fn rule_allows(
    model: &Model,
    policy: &NetworkPolicy,
    rule: &Rule<'_>,
    peer: &Pod,
    dest: &Pod,
    (protocol, port): (Protocol, u16),
) -> bool {
    let peers_ok = match rule.peers {
        None => true,
        Some(list) if list.is_empty() => true,
        Some(list) => list.iter().any(|p| peer_matches(model, policy, p, peer)),
    };
    let ports_ok = match rule.ports {
        None => true,
        Some(list) if list.is_empty() => true,
        Some(list) => list.iter().any(|p| port_matches(p, protocol, port, dest)),
    };
    peers_ok && ports_ok
}

fn port_matches(entry: &NetworkPolicyPort, protocol: Protocol, port: u16, dest: &Pod) -> bool {
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
    match (&entry.port, entry.end_port) {
        (None, _) => true,
        (Some(IntOrString::Int(n)), end) => {
            let end = end.unwrap_or(*n);
            (*n..=end).contains(&i64::from(port))
        }
        (Some(IntOrString::String(name)), _) => dest.container_ports.iter().any(|cp| {
            cp.name.as_deref() == Some(name.as_str()) && cp.protocol == protocol && cp.port == port
        }),
    }
}

/// Whether `pod` is isolated for `dir` and, if so, whether some rule of a policy isolating it
/// lets `peer` through (`dest` resolves named ports). `None` = not isolated.
pub fn side_allows(
    model: &Model,
    pod: &Pod,
    dir: Dir,
    peer: &Pod,
    dest: &Pod,
    target: (Protocol, u16),
) -> Option<bool> {
    let policies: Vec<&NetworkPolicy> = model
        .policies
        .values()
        .filter(|p| selects(p, pod) && has_type(p, dir))
        .collect();
    if policies.is_empty() {
        return None;
    }
    Some(policies.iter().any(|p| {
        rules(p, dir)
            .iter()
            .any(|r| rule_allows(model, p, r, peer, dest, target))
    }))
}
