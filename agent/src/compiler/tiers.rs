//! Flattening the tiers into one table, so that the dataplane's lookup stays two LPM lookups
//! however many rules, policies and tiers there are.
//!
//! For an endpoint direction under some ClusterNetworkPolicy, the final verdict of every
//! (peer identity, protocol, port) is computed here, tiers and priorities applied: "Admin tier,
//! NetworkPolicy tier, Baseline tier", first match wins in each ClusterNetworkPolicy tier, Pass
//! goes on to the next tier, a NetworkPolicy that isolates the direction decides, and what no
//! tier decides is allowed. The table then holds `Allow`/`Deny` entries naming the deciding rule.
//!
//! The dataplane looks up the exact identity first and falls back to ANY only when the identity
//! has no entry at all. So an identity whose verdicts differ anywhere from ANY's gets entries that
//! cover its whole key space (an all-protocols entry plus per-protocol corrections), which fully
//! shadow ANY; an identity whose verdicts equal ANY's everywhere gets none.
use std::collections::BTreeMap;

use super::cluster::ClusterAction;
use super::cluster_state::TierRule;
use super::output::{Action, AllowEntry, AllowTable, EntryValue, Peer, PortPrefix, Tier};
use super::rules::{port_blocks, resolve_named, RuleState};
use crate::model::{ContainerPort, Protocol};

/// "Isolated, and no rule allows it": the value that stands for NetworkPolicy's implicit deny
/// where an entry is needed (rule id 0 = no rule).
const NO_MATCH: EntryValue = EntryValue {
    action: Action::Deny,
    tier: Tier::NetworkPolicy,
    rule_id: 0,
};

/// "If a given connection wasn't allowed or denied by any of the tiers, the default kubernetes
/// policy is applied, which says that all pods can communicate with each other."
const DEFAULT_ALLOW: EntryValue = EntryValue {
    action: Action::Allow,
    tier: Tier::Default,
    rule_id: 0,
};

/// What a ranked rule is.
#[derive(Clone, Copy)]
enum Kind {
    Admin(ClusterAction),
    NetworkPolicy,
    Baseline(ClusterAction),
}

/// One key span of one rule: protocol (`None` = all) and port block (`None` = all).
#[derive(Clone, Copy)]
struct Span {
    rank: usize,
    protocol: Option<Protocol>,
    ports: Option<PortPrefix>,
}

impl Span {
    fn covers(&self, protocol: Option<Protocol>, port: u16) -> bool {
        match (self.protocol, protocol) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(a), Some(b)) => a == b && self.ports.is_none_or(|b| b.contains(port)),
        }
    }
}

/// The inputs of one endpoint direction's table.
pub(super) struct Tiers<'a> {
    pub admin: &'a [TierRule<'a>],
    /// The NetworkPolicy rules when NetworkPolicy isolates the direction, in `RuleRef` order.
    pub network_policy: Option<&'a [&'a RuleState]>,
    pub baseline: &'a [TierRule<'a>],
}

/// A run of ports with one verdict: first port, last port, value.
type Run = (u16, u16, EntryValue);

/// Verdicts of one peer class: for protocols other than TCP/UDP/SCTP, and per protocol as runs
/// covering 0-65535.
#[derive(PartialEq, Eq)]
struct ClassVerdicts {
    other: EntryValue,
    protocols: Vec<(Protocol, Vec<Run>)>,
}

/// Builds the flattened table of one endpoint direction.
pub(super) fn build_tiered(tiers: &Tiers<'_>, endpoint_ports: &[ContainerPort]) -> AllowTable {
    let mut ranked: Vec<(&RuleState, Kind)> = Vec::new();
    ranked.extend(tiers.admin.iter().map(|(r, a)| (*r, Kind::Admin(*a))));
    for rule in tiers.network_policy.unwrap_or_default() {
        ranked.push((rule, Kind::NetworkPolicy));
    }
    ranked.extend(tiers.baseline.iter().map(|(r, a)| (*r, Kind::Baseline(*a))));
    let mut by_peer: BTreeMap<Peer, Vec<Span>> = BTreeMap::new();
    for (rank, (rule, _)) in ranked.iter().enumerate() {
        for entry in rule_entries(rule, endpoint_ports) {
            let span = Span {
                rank,
                protocol: entry.protocol,
                ports: entry.ports,
            };
            by_peer.entry(entry.peer).or_default().push(span);
        }
    }
    let eval = Evaluator {
        ranked: &ranked,
        isolated: tiers.network_policy.is_some(),
    };
    let any_spans = by_peer.remove(&Peer::Any).unwrap_or_default();
    let any = eval.class(&any_spans);
    let mut entries = Vec::new();
    emit(Peer::Any, &any, false, &mut entries);
    for (peer, spans) in by_peer {
        let mut all = spans;
        all.extend_from_slice(&any_spans);
        let verdicts = eval.class(&all);
        if verdicts != any {
            emit(peer, &verdicts, true, &mut entries);
        }
    }
    AllowTable {
        entries: entries.into_iter().collect(),
    }
}

/// A rule's entries for this endpoint: its own, plus ingress named ports resolved on the
/// endpoint's container ports (as for NetworkPolicy tables).
fn rule_entries(rule: &RuleState, endpoint_ports: &[ContainerPort]) -> Vec<AllowEntry> {
    let mut out = rule.entries.clone();
    for (protocol, name) in &rule.ingress_named {
        for port in resolve_named(endpoint_ports, *protocol, name) {
            out.extend(rule.peers.iter().map(|peer| AllowEntry {
                peer: *peer,
                protocol: Some(*protocol),
                ports: Some(PortPrefix::single(port)),
            }));
        }
    }
    out
}

struct Evaluator<'a> {
    ranked: &'a [(&'a RuleState, Kind)],
    isolated: bool,
}

impl Evaluator<'_> {
    /// The verdicts of a peer class whose matching spans are `spans`.
    fn class(&self, spans: &[Span]) -> ClassVerdicts {
        let other = self.decide(spans, None, 0);
        let protocols = Protocol::ALL
            .iter()
            .map(|p| (*p, self.runs(spans, *p)))
            .collect();
        ClassVerdicts { other, protocols }
    }

    /// Runs of equal verdicts over 0-65535 for one protocol: the ports are cut where a port
    /// block of this protocol starts or ends, and each piece is decided once.
    fn runs(&self, spans: &[Span], protocol: Protocol) -> Vec<Run> {
        let mut cuts: Vec<u32> = vec![0, 1 << 16];
        for span in spans.iter().filter(|s| s.protocol == Some(protocol)) {
            if let Some(block) = span.ports {
                let (lo, hi) = block.range();
                cuts.push(u32::from(lo));
                cuts.push(u32::from(hi) + 1);
            }
        }
        cuts.sort_unstable();
        cuts.dedup();
        let mut runs: Vec<Run> = Vec::new();
        for pair in cuts.windows(2) {
            let lo = u16::try_from(pair[0]).unwrap_or(u16::MAX);
            let hi = u16::try_from(pair[1] - 1).unwrap_or(u16::MAX);
            let value = self.decide(spans, Some(protocol), lo);
            match runs.last_mut() {
                Some(last) if last.2 == value => last.1 = hi,
                _ => runs.push((lo, hi, value)),
            }
        }
        runs
    }

    /// The verdict at one point (`protocol` `None` = a protocol other than TCP/UDP/SCTP).
    fn decide(&self, spans: &[Span], protocol: Option<Protocol>, port: u16) -> EntryValue {
        let (mut admin, mut np, mut baseline) = (None::<usize>, None::<usize>, None::<usize>);
        for span in spans.iter().filter(|s| s.covers(protocol, port)) {
            let slot = match self.ranked[span.rank].1 {
                Kind::Admin(_) => &mut admin,
                Kind::NetworkPolicy => &mut np,
                Kind::Baseline(_) => &mut baseline,
            };
            *slot = Some(slot.map_or(span.rank, |r| r.min(span.rank)));
        }
        let value = |rank: usize, action, tier| EntryValue {
            action,
            tier,
            rule_id: self.ranked[rank].0.rule_id,
        };
        // "If Admin tier has made a final decision (Accept or Deny) on a connection, then no
        // further evaluation is done."
        if let Some(rank) = admin {
            match self.ranked[rank].1 {
                Kind::Admin(ClusterAction::Accept) => {
                    return value(rank, Action::Allow, Tier::Admin)
                }
                Kind::Admin(ClusterAction::Deny) => return value(rank, Action::Deny, Tier::Admin),
                _ => {}
            }
        }
        // "v1.NetworkPolicy always makes a final decision for selected pods."
        if self.isolated {
            return np.map_or(NO_MATCH, |rank| {
                value(rank, Action::Allow, Tier::NetworkPolicy)
            });
        }
        match baseline.map(|rank| (rank, self.ranked[rank].1)) {
            Some((rank, Kind::Baseline(ClusterAction::Accept))) => {
                value(rank, Action::Allow, Tier::Baseline)
            }
            Some((rank, Kind::Baseline(ClusterAction::Deny))) => {
                value(rank, Action::Deny, Tier::Baseline)
            }
            _ => DEFAULT_ALLOW,
        }
    }
}

/// Writes the entries of one class. `shadow`: the class is an exact identity, whose entries must
/// cover its whole key space so that the ANY entries never answer for it.
fn emit(
    peer: Peer,
    verdicts: &ClassVerdicts,
    shadow: bool,
    out: &mut Vec<(AllowEntry, EntryValue)>,
) {
    let entry = |protocol, ports| AllowEntry {
        peer,
        protocol,
        ports,
    };
    // For ANY, "no entry" already means NetworkPolicy's implicit deny.
    if shadow || verdicts.other != NO_MATCH {
        out.push((entry(None, None), verdicts.other));
    }
    for (protocol, runs) in &verdicts.protocols {
        // The value covering most ports becomes the protocol's entry; the rest are blocks.
        let base = majority(runs);
        if base != verdicts.other {
            out.push((entry(Some(*protocol), None), base));
        }
        for (lo, hi, value) in runs.iter().filter(|r| r.2 != base) {
            for block in port_blocks(*lo, *hi) {
                out.push((entry(Some(*protocol), Some(block)), *value));
            }
        }
    }
}

fn majority(runs: &[Run]) -> EntryValue {
    let mut size: BTreeMap<EntryValue, u32> = BTreeMap::new();
    for (lo, hi, value) in runs {
        *size.entry(*value).or_default() += u32::from(*hi) - u32::from(*lo) + 1;
    }
    size.into_iter()
        .max_by_key(|(v, n)| (*n, std::cmp::Reverse(*v)))
        .map_or(NO_MATCH, |(v, _)| v)
}
