//! The packet lookup over compiled output, done exactly as the dataplane does it: identity of
//! the peer IP by longest prefix match, then the endpoint's allow table with that identity and
//! then with ANY. `matrix`, `explain` and the property tests use this, so they check the compiled
//! structures and not the model.
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::output::{
    Action, AllowEntry, CompiledOutput, Direction, EndpointPolicy, EntryValue, Peer, RuleRef, Tier,
    IDENTITY_ANY, IDENTITY_HOST, IDENTITY_WORLD,
};
use crate::model::{ObjectKey, Protocol};

/// How one side (the client's egress or the server's ingress) decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum SideDecision {
    /// The address is not a local endpoint: nothing to enforce on this side.
    NotEndpoint,
    /// The peer is the endpoint's own node, allowed by default.
    NodeTraffic,
    /// No policy isolates this direction and no ClusterNetworkPolicy rule decided: allow.
    NotIsolated,
    /// A rule allowed it: a NetworkPolicy rule, or a ClusterNetworkPolicy Accept rule
    /// (`rule.tier` says which).
    Allowed {
        peer_identity: u32,
        rule_id: u32,
        rule: Option<RuleRef>,
        entry: AllowEntry,
    },
    /// Isolated by NetworkPolicy, and no rule allowed it.
    Denied { peer_identity: u32 },
    /// A ClusterNetworkPolicy Deny rule (Admin or Baseline tier) denied it.
    DeniedByRule {
        peer_identity: u32,
        rule_id: u32,
        rule: Option<RuleRef>,
        entry: AllowEntry,
    },
}

impl SideDecision {
    pub fn allows(&self) -> bool {
        !matches!(self, Self::Denied { .. } | Self::DeniedByRule { .. })
    }

    /// The rule that decided, if one did (an allowing NetworkPolicy rule, or a
    /// ClusterNetworkPolicy rule).
    pub fn rule(&self) -> Option<&RuleRef> {
        match self {
            Self::Allowed { rule, .. } | Self::DeniedByRule { rule, .. } => rule.as_ref(),
            _ => None,
        }
    }

    /// The tier that decided: `Tier::Default` when nothing did (not isolated).
    pub fn tier(&self) -> Option<Tier> {
        match self {
            Self::NotIsolated => Some(Tier::Default),
            Self::Denied { .. } => Some(Tier::NetworkPolicy),
            Self::Allowed { rule, .. } | Self::DeniedByRule { rule, .. } => {
                Some(rule.as_ref().map_or(Tier::NetworkPolicy, |r| r.tier))
            }
            Self::NotEndpoint | Self::NodeTraffic => None,
        }
    }
}

/// The decision for one connection attempt: "A connection needs the client's egress and the
/// server's ingress to allow it."
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub allowed: bool,
    pub client: Option<ObjectKey>,
    pub server: Option<ObjectKey>,
    pub egress: SideDecision,
    pub ingress: SideDecision,
}

/// The identity of `ip` as seen by an endpoint on `node`: HOST for that node's own addresses,
/// else the longest prefix of the identity trie, else WORLD.
pub fn lookup_identity(out: &CompiledOutput, ip: IpAddr, node: Option<&str>) -> u32 {
    let host = node.and_then(|n| out.identities.host.get(n));
    if host.is_some_and(|set| set.contains(&ip)) {
        return IDENTITY_HOST;
    }
    let max = if ip.is_ipv4() { 32 } else { 128 };
    (0..=max)
        .rev()
        .find_map(|len| {
            let net = IpNet::new(ip, len).ok()?.trunc();
            out.identities.prefixes.get(&net).copied()
        })
        .unwrap_or(IDENTITY_WORLD)
}

/// Looks a connection `from → to` (protocol, destination port) up in the compiled output.
pub fn verdict(
    out: &CompiledOutput,
    from: IpAddr,
    to: IpAddr,
    protocol: Protocol,
    port: u16,
) -> Verdict {
    let client = out
        .endpoint_ips
        .get(&from)
        .and_then(|k| out.endpoints.get(k));
    let server = out.endpoint_ips.get(&to).and_then(|k| out.endpoints.get(k));
    let egress = side(out, client, Direction::Egress, to, protocol, port);
    let ingress = side(out, server, Direction::Ingress, from, protocol, port);
    Verdict {
        allowed: egress.allows() && ingress.allows(),
        client: client.map(|e| e.pod.clone()),
        server: server.map(|e| e.pod.clone()),
        egress,
        ingress,
    }
}

fn side(
    out: &CompiledOutput,
    endpoint: Option<&EndpointPolicy>,
    direction: Direction,
    peer: IpAddr,
    protocol: Protocol,
    port: u16,
) -> SideDecision {
    let Some(endpoint) = endpoint else {
        return SideDecision::NotEndpoint;
    };
    let peer_identity = lookup_identity(out, peer, endpoint.node.as_deref());
    if peer_identity == IDENTITY_HOST {
        return SideDecision::NodeTraffic;
    }
    let state = endpoint.direction(direction);
    if !state.needs_lookup() {
        return SideDecision::NotIsolated;
    }
    let table = state.table.and_then(|id| out.tables.get(&id));
    // The dataplane's two LPM lookups: the peer's identity, then ANY.
    for identity in [peer_identity, IDENTITY_ANY] {
        let Some(table) = table else {
            break;
        };
        let peer = if identity == IDENTITY_ANY {
            Peer::Any
        } else {
            Peer::Identity(identity)
        };
        let start = AllowEntry {
            peer,
            protocol: None,
            ports: None,
        };
        // Longest match: a port block beats a whole protocol beats everything.
        let best = table
            .entries
            .range(start..)
            .take_while(|(k, _)| k.peer == peer)
            .filter(|(k, _)| k.protocol.is_none_or(|p| p == protocol))
            .filter(|(k, _)| k.ports.is_none_or(|b| b.contains(port)))
            .max_by_key(|(k, _)| (k.protocol.is_some(), k.ports.map(|b| b.prefix_len)));
        if let Some((entry, value)) = best {
            return decision(out, peer_identity, *entry, *value);
        }
    }
    SideDecision::Denied { peer_identity }
}

/// What an entry's value means, as the dataplane reads it.
fn decision(
    out: &CompiledOutput,
    peer_identity: u32,
    entry: AllowEntry,
    value: EntryValue,
) -> SideDecision {
    let rule = out.rules.get(&value.rule_id).cloned();
    let rule_id = value.rule_id;
    match (value.action, value.tier) {
        (Action::Allow, Tier::Default) => SideDecision::NotIsolated,
        (Action::Allow, _) => SideDecision::Allowed {
            peer_identity,
            rule_id,
            rule,
            entry,
        },
        (Action::Deny, Tier::NetworkPolicy | Tier::Default) => {
            SideDecision::Denied { peer_identity }
        }
        (Action::Deny, Tier::Admin | Tier::Baseline) => SideDecision::DeniedByRule {
            peer_identity,
            rule_id,
            rule,
            entry,
        },
    }
}
