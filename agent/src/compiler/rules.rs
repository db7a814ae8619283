//! Rules against identities: which identities a rule's peers match, the entries a rule
//! contributes, and the allow table of one endpoint direction.
use std::borrow::Cow;
use std::collections::BTreeSet;

use super::identity::IdentityState;
use super::output::{
    Action, AllowEntry, AllowTable, Direction, EntryValue, IdentityKey, IdentityTable, Peer,
    PortPrefix, RuleRef, Tier,
};
use super::parse::{NamespaceMatch, ParsedPeer, ParsedPort, ParsedRule, Peers, Ports};
use crate::model::{ContainerPort, Labels, Model, Namespace, Protocol};

/// A rule with everything that does not depend on the endpoint it applies to.
#[derive(Debug, Clone)]
pub(super) struct RuleState {
    pub rule: RuleRef,
    pub rule_id: u32,
    pub parsed: ParsedRule,
    /// Identities the peers match; tracked when peers are listed, or for egress named ports
    /// with any peer (then: every pod identity, on which the name is resolved).
    pub matched: BTreeSet<u32>,
    /// The peer column of the rule's entries.
    pub peers: Vec<Peer>,
    /// Entries that are the same for every endpoint the rule applies to.
    pub entries: Vec<AllowEntry>,
    /// Ingress named ports, resolved on each endpoint's own containerPorts.
    pub ingress_named: Vec<(Protocol, String)>,
}

impl RuleState {
    pub fn tracks_identities(&self) -> bool {
        tracks(&self.parsed, self.rule.direction)
    }

    pub fn value(&self) -> EntryValue {
        EntryValue {
            action: Action::Allow,
            tier: Tier::NetworkPolicy,
            rule_id: self.rule_id,
        }
    }
}

fn tracks(rule: &ParsedRule, direction: Direction) -> bool {
    let named = match &rule.ports {
        Ports::All => false,
        Ports::List(l) => l.iter().any(|p| matches!(p, ParsedPort::Named { .. })),
    };
    matches!(rule.peers, Peers::List(_)) || (direction == Direction::Egress && named)
}

/// Labels of a namespace without cloning when it exists.
pub(super) fn namespace_labels<'a>(model: &'a Model, namespace: &str) -> Cow<'a, Labels> {
    match model.namespaces.get(namespace) {
        Some(ns) => Cow::Borrowed(&ns.labels),
        None => Cow::Owned(Namespace::new(namespace, Labels::new()).labels),
    }
}

/// Whether one peer matches an identity.
fn peer_matches(peer: &ParsedPeer, key: &IdentityKey, model: &Model) -> bool {
    match (peer, key) {
        (
            ParsedPeer::Select { namespace, pods },
            IdentityKey::Pods {
                namespace: ns,
                labels,
                ..
            },
        ) => {
            let ns_ok = match namespace {
                NamespaceMatch::Own(own) => own == ns,
                NamespaceMatch::Selector(sel) => sel.matches(&namespace_labels(model, ns)),
            };
            ns_ok && pods.as_ref().is_none_or(|sel| sel.matches(labels))
        }
        (ParsedPeer::Select { .. }, IdentityKey::Cidr(_)) => false,
        (ParsedPeer::Nodes(sel), IdentityKey::Cidr(net)) => {
            // Node addresses are host prefixes in the trie; a node peer matches the identity of
            // a host prefix that is an address of a node whose labels match.
            net.prefix_len() == net.max_prefix_len()
                && model
                    .nodes
                    .values()
                    .any(|n| n.addresses.contains(&net.addr()) && sel.matches(&n.labels))
        }
        (ParsedPeer::Nodes(_), IdentityKey::Pods { .. }) => false,
        (ParsedPeer::Block { cidr, except }, key) => {
            // With every cidr and except in the trie, IP ∈ C iff class ⊆ C.
            let class = match key {
                IdentityKey::Pods { class, .. } => *class,
                IdentityKey::Cidr(net) => Some(*net),
            };
            class.is_some_and(|c| cidr.contains(&c) && !except.iter().any(|e| e.contains(&c)))
        }
    }
}

/// Whether a tracked rule matches an identity.
pub(super) fn rule_matches(rule: &ParsedRule, key: &IdentityKey, model: &Model) -> bool {
    match &rule.peers {
        Peers::Any => matches!(key, IdentityKey::Pods { .. }),
        Peers::List(list) => list.iter().any(|p| peer_matches(p, key, model)),
    }
}

/// All identities a tracked rule matches. Selector peers look only at the pod identities of
/// the namespaces they can match (each namespace's labels evaluated once); ipBlock peers only at
/// identities with a CIDR class.
pub(super) fn match_all(
    rule: &ParsedRule,
    ids: &IdentityState,
    table: &IdentityTable,
    model: &Model,
) -> BTreeSet<u32> {
    let key = |id: &u32| table.identities.get(id).map(|info| &info.key);
    let list = match &rule.peers {
        Peers::Any => return ids.by_namespace.values().flatten().copied().collect(),
        Peers::List(list) => list,
    };
    let mut matched = BTreeSet::new();
    for peer in list {
        match peer {
            ParsedPeer::Select { namespace, pods } => {
                let namespaces = ids.by_namespace.iter().filter(|(ns, _)| match namespace {
                    NamespaceMatch::Own(own) => own == *ns,
                    NamespaceMatch::Selector(sel) => sel.matches(&namespace_labels(model, ns)),
                });
                for id in namespaces.flat_map(|(_, set)| set) {
                    let labels_ok = match (pods, key(id)) {
                        (None, _) => true,
                        (Some(sel), Some(IdentityKey::Pods { labels, .. })) => sel.matches(labels),
                        (Some(_), _) => false,
                    };
                    if labels_ok {
                        matched.insert(*id);
                    }
                }
            }
            ParsedPeer::Block { .. } | ParsedPeer::Nodes(_) => {
                let hits = ids
                    .classed
                    .iter()
                    .filter(|id| key(id).is_some_and(|k| peer_matches(peer, k, model)));
                matched.extend(hits);
            }
        }
    }
    matched
}

/// "Port ranges become prefix blocks": the minimal list of aligned blocks covering start..=end.
pub fn port_blocks(start: u16, end: u16) -> Vec<PortPrefix> {
    let mut out = Vec::new();
    let (mut lo, hi) = (u32::from(start), u32::from(end));
    while lo <= hi {
        // Largest block aligned at `lo` that does not pass `hi`.
        let mut size = if lo == 0 {
            1 << 16
        } else {
            1u32 << lo.trailing_zeros().min(16)
        };
        while lo + size - 1 > hi {
            size >>= 1;
        }
        let prefix_len = 16 - u8::try_from(size.trailing_zeros()).unwrap_or(16);
        out.push(PortPrefix {
            port: u16::try_from(lo).unwrap_or(u16::MAX),
            prefix_len,
        });
        lo += size;
    }
    out
}

/// Resolves a named port on a set of container ports: "name and protocol".
pub(super) fn resolve_named<'a>(
    ports: &'a [ContainerPort],
    protocol: Protocol,
    name: &'a str,
) -> impl Iterator<Item = u16> + 'a {
    ports
        .iter()
        .filter(move |p| p.protocol == protocol && p.name.as_deref() == Some(name))
        .map(|p| p.port)
}

/// Fills in the endpoint-independent part of a rule from its `matched` set. Returns the egress
/// named ports that resolved on no identity (`(protocol, name, field)`).
pub(super) fn compute_entries(
    rule: &mut RuleState,
    table: &IdentityTable,
) -> Vec<(Protocol, String, String)> {
    let direction = rule.rule.direction;
    rule.peers = match &rule.parsed.peers {
        Peers::Any => vec![Peer::Any],
        Peers::List(_) => rule.matched.iter().map(|id| Peer::Identity(*id)).collect(),
    };
    rule.entries.clear();
    rule.ingress_named.clear();
    let mut unresolved = Vec::new();
    let specs: Vec<Option<ParsedPort>> = match &rule.parsed.ports {
        Ports::All => vec![None],
        Ports::List(list) => list.iter().cloned().map(Some).collect(),
    };
    for spec in &specs {
        let (protocol, blocks): (Option<Protocol>, Vec<Option<PortPrefix>>) = match spec {
            None => (None, vec![None]),
            Some(ParsedPort::Protocol(p)) => (Some(*p), vec![None]),
            Some(ParsedPort::Range {
                protocol,
                start,
                end,
            }) => (
                Some(*protocol),
                port_blocks(*start, *end).into_iter().map(Some).collect(),
            ),
            Some(ParsedPort::Named {
                protocol,
                name,
                field,
            }) => {
                if direction == Direction::Ingress {
                    rule.ingress_named.push((*protocol, name.clone()));
                } else if !egress_named(rule, *protocol, name, table) {
                    unresolved.push((*protocol, name.clone(), field.clone()));
                }
                continue;
            }
        };
        for peer in &rule.peers {
            for ports in &blocks {
                rule.entries.push(AllowEntry {
                    peer: *peer,
                    protocol,
                    ports: *ports,
                });
            }
        }
    }
    unresolved
}

/// "a named port resolves on the destination pod's containerPorts ... per destination pod, also
/// in egress rules": one entry per matched pod identity that has the port. Returns whether any
/// identity resolved it.
fn egress_named(
    rule: &mut RuleState,
    protocol: Protocol,
    name: &str,
    table: &IdentityTable,
) -> bool {
    let mut any = false;
    for id in &rule.matched {
        let Some(IdentityKey::Pods { ports, .. }) = table.identities.get(id).map(|i| &i.key) else {
            continue;
        };
        for port in resolve_named(ports, protocol, name) {
            any = true;
            rule.entries.push(AllowEntry {
                peer: Peer::Identity(*id),
                protocol: Some(protocol),
                ports: Some(PortPrefix::single(port)),
            });
        }
    }
    any
}

/// The allow table of one endpoint direction: the union of the rules of every policy that
/// isolates it ("Isolated directions allow only the union of matching rules"). Rules are given in
/// [`RuleRef`] order, so a key shared by several rules names the smallest.
pub(super) fn build_table(rules: &[&RuleState], endpoint_ports: &[ContainerPort]) -> AllowTable {
    // Collect, sort (stable: rule order breaks ties), keep the first of each key, then bulk-build
    // the map: much cheaper than one BTreeMap insert per entry for large tables.
    let mut all: Vec<(AllowEntry, EntryValue)> = Vec::new();
    for rule in rules {
        let value = rule.value();
        all.extend(rule.entries.iter().map(|e| (*e, value)));
        for (protocol, name) in &rule.ingress_named {
            for port in resolve_named(endpoint_ports, *protocol, name) {
                all.extend(rule.peers.iter().map(|peer| {
                    let entry = AllowEntry {
                        peer: *peer,
                        protocol: Some(*protocol),
                        ports: Some(PortPrefix::single(port)),
                    };
                    (entry, value)
                }));
            }
        }
    }
    all.sort_by_key(|(entry, _)| *entry);
    all.dedup_by_key(|(entry, _)| *entry);
    AllowTable {
        entries: all.into_iter().collect(),
    }
}

/// Whether any rule needs the endpoint's own ports (ingress named ports).
pub(super) fn needs_endpoint_ports(rules: &[&RuleState]) -> bool {
    rules.iter().any(|r| !r.ingress_named.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn covered(blocks: &[PortPrefix]) -> Vec<u16> {
        blocks
            .iter()
            .flat_map(|b| {
                let (lo, hi) = b.range();
                lo..=hi
            })
            .collect()
    }

    #[test]
    fn port_blocks_cover_exactly() {
        for (s, e) in [
            (1, 1),
            (80, 81),
            (1, 65535),
            (1000, 2000),
            (32768, 65535),
            (3, 17),
        ] {
            let blocks = port_blocks(s, e);
            assert_eq!(covered(&blocks), (s..=e).collect::<Vec<_>>(), "{s}-{e}");
        }
        assert_eq!(port_blocks(80, 80), vec![PortPrefix::single(80)]);
        assert_eq!(port_blocks(0, 65535).len(), 1);
        assert_eq!(port_blocks(1, 65535).len(), 16);
    }
}
