//! The programs' own connection tracking: a per-endpoint view of each flow in an LRU hash, with
//! per-protocol states and timeouts (see `palisade_common::conntrack`).

use aya_ebpf::helpers::bpf_ktime_get_ns;
use palisade_common::{
    conntrack::{datagram_next, tcp_next, timeout_ns, CtKey, CtState, CtValue},
    packet::{Icmp, Parsed},
    proto,
};

use crate::maps::CONNTRACK;

/// Writes the forward key of a packet at `ifindex` and the key its reply direction would have.
#[inline(always)]
pub fn keys(p: &Parsed, ifindex: u32, fwd: &mut CtKey, rev: &mut CtKey) {
    let t = &p.tuple;
    fwd.src = t.src;
    fwd.dst = t.dst;
    fwd.ifindex = ifindex;
    fwd.sport = t.sport;
    fwd.dport = t.dport;
    fwd.protocol = t.protocol;
    fwd._pad = [0; 3];
    rev.src = t.dst;
    rev.dst = t.src;
    rev.ifindex = ifindex;
    rev.protocol = t.protocol;
    rev._pad = [0; 3];
    if matches!(p.icmp, Icmp::EchoRequest | Icmp::EchoReply) {
        // An echo reply carries the request's identifier in the same field: only addresses swap.
        rev.sport = t.sport;
        rev.dport = t.dport;
    } else {
        rev.sport = t.dport;
        rev.dport = t.sport;
    }
}

#[inline(always)]
pub fn now() -> u64 {
    // SAFETY: helper without preconditions.
    unsafe { bpf_ktime_get_ns() }
}

/// A live (not timed out) entry for `key`. A timed-out entry is removed and reported as missing.
#[inline(always)]
pub fn get(key: &CtKey) -> Option<*mut CtValue> {
    let v = CONNTRACK.get_ptr_mut(key)?;
    // SAFETY: the pointer comes from a successful map lookup.
    let (last, state) = unsafe { ((*v).last_seen_ns, CtState::from_u8((*v).state)) };
    if now().saturating_sub(last) > timeout_ns(key.protocol, state) {
        let _ = CONNTRACK.remove(key);
        return None;
    }
    Some(v)
}

/// Advances the state after a packet; `reply` is true against the opening direction.
#[inline(always)]
pub fn touch(v: *mut CtValue, protocol: u8, tcp_flags: u8, reply: bool) {
    // SAFETY: `v` comes from `get`; concurrent updates race benignly (last writer wins).
    unsafe {
        let state = CtState::from_u8((*v).state);
        let next = if protocol == proto::TCP {
            tcp_next(state, tcp_flags, reply)
        } else {
            datagram_next(state, reply)
        };
        (*v).state = next as u8;
        (*v).last_seen_ns = now();
    }
}

/// Starts tracking a flow. A full LRU table evicts its oldest flow to make room; if the insert
/// still fails the flow is simply untracked and each later packet is checked again (never
/// allowed without a check).
#[inline(always)]
pub fn create(key: &CtKey, value: &CtValue) {
    let _ = CONNTRACK.insert(key, value, 0);
}

#[inline(always)]
pub fn remove(key: &CtKey) {
    let _ = CONNTRACK.remove(key);
}

/// A new entry's value.
#[inline(always)]
pub fn fresh(state: CtState, flags: u8, generation: u32, rule_id: u32) -> CtValue {
    CtValue {
        last_seen_ns: now(),
        generation,
        src_generation: 0,
        rule_id,
        src_slot: 0,
        state: state as u8,
        flags,
    }
}
