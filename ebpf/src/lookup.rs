//! Policy lookup: peer IP → identity (one LPM lookup), then `{table, identity, proto, port}` in the
//! policy trie, exact identity first, then the any-peer wildcard. Cost is independent of the
//! number of rules, pods, CIDRs and ClusterNetworkPolicy tiers: the compiler writes final
//! Allow/Deny verdicts (with the deciding tier and rule), so the first entry found decides.

use aya_ebpf::maps::lpm_trie::Key;
use palisade_common::{
    endpoint::{Endpoint, CFG_ALLOW_HOST, EP_EGRESS_ISOLATED, EP_INGRESS_ISOLATED},
    identity::{IdentityKey, IDENTITY_ANY, IDENTITY_HOST, IDENTITY_WORLD},
    policy::{
        Action, PolicyKey, PolicyValue, PREFIX_FULL, TIER_ADMIN, TIER_BASELINE, TIER_DEFAULT,
    },
    verdict::{Decision, Direction, DropReason},
};

use crate::maps::{CONFIG, IDENTITIES, POLICY};

/// The outcome of checking one direction of one endpoint.
#[derive(Clone, Copy)]
pub struct Check {
    pub decision: Decision,
    pub reason: DropReason,
    pub rule_id: u32,
    pub peer_identity: u32,
}

impl Check {
    #[inline(always)]
    pub const fn allowed(&self) -> bool {
        !matches!(self.decision, Decision::Dropped)
    }
}

#[inline(always)]
pub fn identity_of(addr: &[u8; 16]) -> u32 {
    let key = Key::new(128, IdentityKey { addr: *addr });
    IDENTITIES.get(&key).map_or(IDENTITY_WORLD, |v| v.identity)
}

#[inline(always)]
fn allow_host() -> bool {
    CONFIG.get(0).is_some_and(|c| c.flags & CFG_ALLOW_HOST != 0)
}

#[inline(always)]
fn find(table: u32, identity: u32, protocol: u8, port: u16) -> Option<PolicyValue> {
    let exact = Key::new(PREFIX_FULL, PolicyKey::new(table, identity, protocol, port));
    if let Some(v) = POLICY.get(&exact) {
        return Some(*v);
    }
    let any = Key::new(
        PREFIX_FULL,
        PolicyKey::new(table, IDENTITY_ANY, protocol, port),
    );
    POLICY.get(&any).copied()
}

/// Checks `ep`'s `dir` against a peer of `peer_identity` on `protocol`/`port` (the destination
/// port, which for ingress is the pod's own port and for egress the peer's).
#[inline(always)]
pub fn check(ep: &Endpoint, dir: Direction, peer_identity: u32, protocol: u8, port: u16) -> Check {
    let (flag, table, reason) = match dir {
        Direction::Ingress => (
            EP_INGRESS_ISOLATED,
            ep.ingress_table,
            DropReason::IngressPolicyDenied,
        ),
        Direction::Egress => (
            EP_EGRESS_ISOLATED,
            ep.egress_table,
            DropReason::EgressPolicyDenied,
        ),
    };
    let mut out = Check {
        decision: Decision::Dropped,
        reason,
        rule_id: 0,
        peer_identity,
    };
    if ep.flags & flag == 0 {
        out.decision = Decision::AllowedNotIsolated;
        out.reason = DropReason::None;
    } else if peer_identity == IDENTITY_HOST && allow_host() {
        out.decision = Decision::AllowedHost;
        out.reason = DropReason::None;
    } else if let Some(v) = find(table, peer_identity, protocol, port) {
        // Entries hold final verdicts (tiers flattened by the compiler); the tier says who
        // decided, for the decision and the drop reason.
        if v.action == Action::Allow as u8 {
            if v.tier == TIER_DEFAULT {
                out.decision = Decision::AllowedNotIsolated;
            } else {
                out.decision = Decision::AllowedByRule;
                out.rule_id = v.rule_id;
            }
            out.reason = DropReason::None;
        } else if v.tier == TIER_ADMIN {
            out.reason = DropReason::AdminPolicyDenied;
            out.rule_id = v.rule_id;
        } else if v.tier == TIER_BASELINE {
            out.reason = DropReason::BaselinePolicyDenied;
            out.rule_id = v.rule_id;
        }
    }
    out
}
