//! The verdict logic of each hook: parse, track, look up, report.

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    programs::TcContext,
};
use palisade_common::{
    conntrack::{
        tcp_opens, CtKey, CtState, CtValue, CT_FLAG_DEFERRED, CT_FLAG_OUTBOUND, CT_FLAG_SRC_CHECKED,
    },
    endpoint::{
        Endpoint, ServiceKey, EP_AUDIT_EGRESS, EP_AUDIT_INGRESS, EP_EGRESS_ISOLATED,
        EP_FAIL_CLOSED, EP_INGRESS_ISOLATED, MARK_DEFERRED, MARK_MASK, MARK_SLOT_SHIFT,
    },
    packet::{parse_into, Fragment, Icmp, Parsed, L3},
    proto,
    verdict::{Decision, Direction, DropReason},
};

use crate::{
    conntrack as ct,
    context::{self, Skb},
    events,
    lookup::{self, Check},
    maps::{Scratch, ENDPOINTS, FRAGMENTS, SCRATCH, SERVICES, SLOTS},
};

const fn pass(decision: Decision) -> Check {
    Check {
        decision,
        reason: DropReason::None,
        rule_id: 0,
        peer_identity: 0,
    }
}

const fn drop(reason: DropReason) -> Check {
    Check {
        decision: Decision::Dropped,
        reason,
        rule_id: 0,
        peer_identity: 0,
    }
}

const fn opposite(dir: Direction) -> Direction {
    match dir {
        Direction::Ingress => Direction::Egress,
        Direction::Egress => Direction::Ingress,
    }
}

const fn isolated(ep: &Endpoint, dir: Direction) -> bool {
    let flag = match dir {
        Direction::Ingress => EP_INGRESS_ISOLATED,
        Direction::Egress => EP_EGRESS_ISOLATED,
    };
    ep.flags & (flag | EP_FAIL_CLOSED) != 0
}

/// Audit mode: a policy deny of `dir` at an endpoint that audits `dir` passes as `Audited`,
/// keeping the reason enforcement would have applied. Malformed packets, unrelated ICMP errors,
/// unknown fragments and fail-closed endpoints are never audited.
#[inline(always)]
fn audited(ep: &Endpoint, dir: Direction, c: Check) -> Check {
    let flag = match dir {
        Direction::Ingress => EP_AUDIT_INGRESS,
        Direction::Egress => EP_AUDIT_EGRESS,
    };
    let policy = matches!(
        c.reason,
        DropReason::IngressPolicyDenied
            | DropReason::EgressPolicyDenied
            | DropReason::Revoked
            | DropReason::ProtocolDenied
            | DropReason::AdminPolicyDenied
            | DropReason::BaselinePolicyDenied
    );
    if c.allowed() || !policy || ep.flags & flag == 0 || ep.flags & EP_FAIL_CLOSED != 0 {
        return c;
    }
    Check {
        decision: Decision::Audited,
        ..c
    }
}

/// The other side of the flow as seen from the endpoint, for a packet travelling in `dir`.
#[inline(always)]
fn peer_addr(p: &Parsed, dir: Direction) -> &[u8; 16] {
    match dir {
        Direction::Ingress => &p.tuple.src,
        Direction::Egress => &p.tuple.dst,
    }
}

/// Counts the verdict, reports drops, and turns the verdict into a TC action.
#[inline(always)]
fn finish(ifindex: u32, dir: Direction, p: Option<&Parsed>, check: &Check) -> i32 {
    if matches!(check.decision, Decision::Audited) {
        // Passed, but reported (always, like a drop) and counted under the would-be reason.
        events::count(DropReason::None);
        events::count_audited(check.reason);
        if let Some(p) = p {
            events::report(ifindex, dir, &p.tuple, check);
        }
        return TC_ACT_OK;
    }
    events::count(check.reason);
    if check.allowed() {
        // Allow events only for new flows (tracked packets would flood the log).
        let new_flow = matches!(
            check.decision,
            Decision::AllowedByRule | Decision::AllowedNotIsolated | Decision::AllowedHost
        );
        if let (true, Some(p)) = (new_flow, p) {
            if events::allow_event_permitted() {
                events::report(ifindex, dir, &p.tuple, check);
            }
        }
        return TC_ACT_OK;
    }
    if let Some(p) = p {
        events::report(ifindex, dir, &p.tuple, check);
    }
    TC_ACT_SHOT
}

#[inline(always)]
fn scratch() -> Option<&'static mut Scratch> {
    // SAFETY: per-CPU slot; a TC program runs to completion on one CPU without preemption.
    SCRATCH.get_ptr_mut(0).map(|s| unsafe { &mut *s })
}

/// The hook on a pod's host veth.
#[inline(always)]
pub fn endpoint(ctx: &TcContext, dir: Direction) -> i32 {
    let ifindex = context::ifindex(ctx);
    // SAFETY: the value is copied out at once.
    let Some(ep) = (unsafe { ENDPOINTS.get(ifindex) }).copied() else {
        // The programs are only attached to managed veths, after their record is written and
        // until after it is removed: no record means it could not be written (a full table).
        return no_record(ctx, ifindex, dir);
    };
    let Some(s) = scratch() else {
        return TC_ACT_SHOT;
    };
    if parse_into(&Skb(ctx), &mut s.p).is_err() {
        let check = if isolated(&ep, dir) {
            drop(DropReason::Unparseable)
        } else {
            pass(Decision::AllowedNotIsolated)
        };
        return finish(ifindex, dir, None, &check);
    }
    let check = match s.p.l3 {
        L3::Arp => pass(Decision::AllowedProtocol),
        L3::Other if isolated(&ep, dir) => drop(DropReason::Unparseable),
        L3::Other => pass(Decision::AllowedNotIsolated),
        L3::Ipv4 | L3::Ipv6 => {
            if dir == Direction::Ingress && context::mark(ctx) & MARK_DEFERRED != 0 {
                return deferred_at_destination(ctx, ifindex, &ep, s);
            }
            ip(ctx, ifindex, &ep, dir, s)
        }
    };
    finish(ifindex, dir, Some(&s.p), &check)
}

/// A managed veth without an endpoint record fails closed (ARP and neighbour discovery aside).
#[inline(always)]
fn no_record(ctx: &TcContext, ifindex: u32, dir: Direction) -> i32 {
    let Some(s) = scratch() else {
        return TC_ACT_SHOT;
    };
    let check = match parse_into(&Skb(ctx), &mut s.p) {
        Ok(()) if s.p.l3 == L3::Arp || s.p.icmp == Icmp::NeighbourDiscovery => {
            pass(Decision::AllowedProtocol)
        }
        _ => drop(DropReason::EndpointFailClosed),
    };
    finish(ifindex, dir, None, &check)
}

#[inline(always)]
fn ip(ctx: &TcContext, ifindex: u32, ep: &Endpoint, dir: Direction, s: &mut Scratch) -> Check {
    if s.p.icmp == Icmp::NeighbourDiscovery {
        return pass(Decision::AllowedProtocol);
    }
    if ep.flags & EP_FAIL_CLOSED != 0 {
        return drop(DropReason::EndpointFailClosed);
    }
    if let Fragment::Later { id } = s.p.fragment {
        fragment_key(ifindex, &s.p, id, &mut s.fwd);
        return later_fragment(&s.fwd, ep, dir);
    }
    if s.p.icmp == Icmp::Error {
        return icmp_error(ifindex, ep, dir, s);
    }
    let check = tracked_or_new(ctx, ifindex, ep, dir, s);
    if let (Fragment::First { id }, true) = (s.p.fragment, check.allowed()) {
        fragment_key(ifindex, &s.p, id, &mut s.fwd);
        #[expect(
            clippy::needless_borrows_for_generic_args,
            reason = "the key lives in per-CPU scratch memory; by value it would be copied onto the BPF stack"
        )]
        let _ = FRAGMENTS.insert(&s.fwd, 1, 0);
    }
    check
}

/// The fragment table key: the flow's addresses and protocol with the IP id in the port fields.
#[inline(always)]
fn fragment_key(ifindex: u32, p: &Parsed, id: u32, key: &mut CtKey) {
    key.src = p.tuple.src;
    key.dst = p.tuple.dst;
    key.ifindex = ifindex;
    key.sport = id as u16;
    key.dport = (id >> 16) as u16;
    key.protocol = p.tuple.protocol;
    key._pad = [0; 3];
}

#[inline(always)]
fn later_fragment(key: &CtKey, ep: &Endpoint, dir: Direction) -> Check {
    if FRAGMENTS.get_ptr(key).is_some() {
        pass(Decision::AllowedTracked)
    } else if isolated(ep, dir) {
        drop(DropReason::FragmentUnknown)
    } else {
        pass(Decision::AllowedNotIsolated)
    }
}

/// An ICMP error passes when the packet it quotes belongs to a flow tracked at this endpoint.
#[inline(always)]
fn icmp_error(ifindex: u32, ep: &Endpoint, dir: Direction, s: &mut Scratch) -> Check {
    let inner = &s.p.inner;
    let q = &mut s.fwd;
    q.src = inner.src;
    q.dst = inner.dst;
    q.ifindex = ifindex;
    q.sport = inner.sport;
    q.dport = inner.dport;
    q.protocol = inner.protocol;
    q._pad = [0; 3];
    s.rev = q.reversed();
    if ct::get(&s.fwd).is_some() || ct::get(&s.rev).is_some() {
        pass(Decision::AllowedProtocol)
    } else if isolated(ep, dir) {
        drop(DropReason::IcmpUnrelated)
    } else {
        pass(Decision::AllowedNotIsolated)
    }
}

#[inline(always)]
fn tracked_or_new(
    ctx: &TcContext,
    ifindex: u32,
    ep: &Endpoint,
    dir: Direction,
    s: &mut Scratch,
) -> Check {
    ct::keys(&s.p, ifindex, &mut s.fwd, &mut s.rev);
    let p = &s.p;
    let mut out = pass(Decision::AllowedTracked);
    if let Some(v) = ct::get(&s.fwd) {
        // SAFETY: pointer from a map lookup.
        if unsafe { (*v).flags } & CT_FLAG_DEFERRED != 0 {
            defer(ctx, ep);
        } else if let Some(c) = recheck(v, ep, dir, dir, p, p.tuple.dport) {
            if !c.allowed() {
                return c;
            }
            out = c;
        }
        ct::touch(v, p.tuple.protocol, p.tcp_flags, false);
        return out;
    }
    if let Some(v) = ct::get(&s.rev) {
        // SAFETY: pointer from a map lookup.
        if unsafe { (*v).flags } & CT_FLAG_DEFERRED == 0 {
            if let Some(c) = recheck(v, ep, dir, opposite(dir), p, p.tuple.sport) {
                if !c.allowed() {
                    return c;
                }
                out = c;
            }
        }
        ct::touch(v, p.tuple.protocol, p.tcp_flags, true);
        return out;
    }
    new_flow(ctx, ep, dir, s)
}

/// Keeps a flow's verdict current. On a policy change (generation mismatch) it checks the flow's
/// opening direction again: a flow the new policy denies becomes a `Revoked` tombstone (every
/// packet dropped, nothing picked up mid-stream), one it allows again comes back. Returns the drop
/// to apply, or the audit verdict to report when audit mode lets a denied flow go on. `dir` is
/// this packet's direction; the peer is the other side of the flow whichever way the packet
/// travels.
#[inline(always)]
fn recheck(
    v: *mut CtValue,
    ep: &Endpoint,
    dir: Direction,
    open_dir: Direction,
    p: &Parsed,
    port: u16,
) -> Option<Check> {
    // SAFETY: pointer from a map lookup; racing writers only ever store whole fields.
    let (generation, state) = unsafe { ((*v).generation, CtState::from_u8((*v).state)) };
    let revoked = matches!(state, CtState::Revoked);
    if generation == ep.generation {
        return revoked.then_some(drop(DropReason::Revoked));
    }
    let peer = lookup::identity_of(peer_addr(p, dir));
    let c = audited(
        ep,
        open_dir,
        lookup::check(ep, open_dir, peer, p.tuple.protocol, port),
    );
    // SAFETY: as above.
    unsafe {
        (*v).generation = ep.generation;
        (*v).rule_id = c.rule_id;
        if !c.allowed() {
            (*v).state = CtState::Revoked as u8;
            (*v).last_seen_ns = ct::now();
        } else if revoked {
            (*v).state = CtState::Established as u8;
        }
    }
    if matches!(c.decision, Decision::Audited) {
        return Some(c);
    }
    (!c.allowed()).then_some(Check {
        peer_identity: peer,
        ..drop(DropReason::Revoked)
    })
}

#[inline(always)]
fn new_flow(ctx: &TcContext, ep: &Endpoint, dir: Direction, s: &mut Scratch) -> Check {
    let p = &s.p;
    let t = &p.tuple;
    let outbound = if dir == Direction::Egress {
        CT_FLAG_OUTBOUND
    } else {
        0
    };
    if dir == Direction::Egress && is_service(p) {
        let v = ct::fresh(
            CtState::Opening,
            outbound | CT_FLAG_DEFERRED,
            ep.generation,
            0,
        );
        ct::create(&s.fwd, &v);
        defer(ctx, ep);
        return pass(Decision::Deferred);
    }
    let peer = lookup::identity_of(peer_addr(p, dir));
    let mut c = lookup::check(ep, dir, peer, t.protocol, t.dport);
    if c.allowed() {
        ct::create(
            &s.fwd,
            &ct::fresh(CtState::New, outbound, ep.generation, c.rule_id),
        );
        return c;
    }
    let unmatched = matches!(
        c.reason,
        DropReason::IngressPolicyDenied | DropReason::EgressPolicyDenied
    );
    if unmatched
        && !matches!(
            t.protocol,
            proto::TCP | proto::UDP | proto::SCTP | proto::ICMP | proto::ICMPV6
        )
    {
        // Only a rule without ports (all protocols) could have allowed it. (A ClusterNetworkPolicy
        // Deny keeps its own reason.)
        c.reason = DropReason::ProtocolDenied;
    }
    // A mid-stream packet of a flow older than the programs: allowed if it is a reply of a flow
    // whose opening direction policy allows.
    let midstream = match t.protocol {
        proto::TCP => !tcp_opens(p.tcp_flags),
        proto::SCTP => p.tcp_flags == 0,
        _ => false,
    };
    if midstream {
        let back = lookup::check(ep, opposite(dir), peer, t.protocol, t.sport);
        if back.allowed() {
            let flags = if dir == Direction::Egress {
                0
            } else {
                CT_FLAG_OUTBOUND
            };
            let v = ct::fresh(CtState::Established, flags, ep.generation, back.rule_id);
            ct::create(&s.rev, &v);
            return pass(Decision::AllowedTracked);
        }
    }
    // Audit mode: the denied flow goes on, tracked (one event per flow, not per packet).
    let c = audited(ep, dir, c);
    if c.allowed() {
        ct::create(&s.fwd, &ct::fresh(CtState::New, outbound, ep.generation, 0));
    }
    c
}

#[inline(always)]
fn is_service(p: &Parsed) -> bool {
    let key = ServiceKey {
        addr: p.tuple.dst,
        port: p.tuple.dport.to_be_bytes(),
        protocol: p.tuple.protocol,
        _pad: 0,
    };
    SERVICES.get_ptr(key).is_some()
}

/// Marks a packet so that the hook that sees its translated destination decides its egress.
#[inline(always)]
fn defer(ctx: &TcContext, ep: &Endpoint) {
    let bits = MARK_DEFERRED | ((ep.slot << MARK_SLOT_SHIFT) & 0x0fff_0000);
    context::set_mark_masked(ctx, MARK_MASK, bits);
}

/// The source endpoint of a deferred packet, from the slot in its mark; clears Palisade's mark
/// bits so the packet leaves no trace.
#[inline(always)]
fn take_source_endpoint(ctx: &TcContext) -> Option<(u32, Endpoint)> {
    let slot = (context::mark(ctx) & 0x0fff_0000) >> MARK_SLOT_SHIFT;
    context::set_mark_masked(ctx, MARK_MASK, 0);
    // SAFETY: values are copied out at once.
    let src_ifindex = unsafe { *SLOTS.get_ptr(slot)? };
    // SAFETY: as above.
    let ep = (unsafe { ENDPOINTS.get(src_ifindex) }).copied()?;
    Some((src_ifindex, ep))
}

/// At the destination pod's veth: the packet left its source pod addressed to a Service and was
/// translated since. Decide the source's egress and this pod's ingress on the translated tuple.
/// The ingress peer is the source endpoint itself, not the packet's source address, which
/// kube-proxy masquerades for hairpin traffic.
#[inline(always)]
fn deferred_at_destination(ctx: &TcContext, ifindex: u32, ep: &Endpoint, s: &mut Scratch) -> i32 {
    let dir = Direction::Ingress;
    let Some((src_ifindex, src)) = take_source_endpoint(ctx) else {
        return finish(
            ifindex,
            dir,
            Some(&s.p),
            &drop(DropReason::EgressPolicyDenied),
        );
    };
    ct::keys(&s.p, ifindex, &mut s.fwd, &mut s.rev);
    let p = &s.p;
    let t = &p.tuple;
    if let Some(v) = ct::get(&s.fwd) {
        // SAFETY: pointer from a map lookup.
        let (gen, src_gen) = unsafe { ((*v).generation, (*v).src_generation) };
        if gen == ep.generation && src_gen == src.generation {
            ct::touch(v, t.protocol, p.tcp_flags, false);
            return finish(ifindex, dir, Some(p), &pass(Decision::AllowedTracked));
        }
    }
    let v6 = p.l3 == L3::Ipv6;
    let out = audited(
        &src,
        Direction::Egress,
        lookup::check(
            &src,
            Direction::Egress,
            ep.identity_for(v6),
            t.protocol,
            t.dport,
        ),
    );
    if !out.allowed() {
        ct::remove(&s.fwd);
        return finish(src_ifindex, Direction::Egress, Some(p), &out);
    }
    if matches!(out.decision, Decision::Audited) {
        events::count_audited(out.reason);
        events::report(src_ifindex, Direction::Egress, t, &out);
    }
    let inb = audited(
        ep,
        dir,
        lookup::check(ep, dir, src.identity_for(v6), t.protocol, t.dport),
    );
    if inb.allowed() {
        track_src_checked(&s.fwd, &src, ep.generation, inb.rule_id);
    } else {
        ct::remove(&s.fwd);
    }
    finish(ifindex, dir, Some(p), &inb)
}

/// Tracks a flow whose source endpoint's egress was checked at a deferred hook; the entry remembers
/// the source's generation so that a policy change of the source re-checks it.
#[inline(always)]
fn track_src_checked(key: &CtKey, src: &Endpoint, generation: u32, rule_id: u32) {
    let mut v = ct::fresh(CtState::New, CT_FLAG_SRC_CHECKED, generation, rule_id);
    v.src_generation = src.generation;
    v.src_slot = src.slot as u16;
    ct::create(key, &v);
}

/// The node uplink's tc egress: completes deferred egress verdicts for traffic leaving the node.
#[inline(always)]
pub fn uplink(ctx: &TcContext) -> i32 {
    if context::mark(ctx) & MARK_DEFERRED == 0 {
        return TC_ACT_OK;
    }
    let ifindex = context::ifindex(ctx);
    let Some(s) = scratch() else {
        return TC_ACT_SHOT;
    };
    let dir = Direction::Egress;
    let found = take_source_endpoint(ctx);
    if parse_into(&Skb(ctx), &mut s.p).is_err() {
        return finish(ifindex, dir, None, &drop(DropReason::Unparseable));
    }
    let Some((src_ifindex, src)) = found else {
        return finish(
            ifindex,
            dir,
            Some(&s.p),
            &drop(DropReason::EgressPolicyDenied),
        );
    };
    ct::keys(&s.p, ifindex, &mut s.fwd, &mut s.rev);
    let p = &s.p;
    let t = &p.tuple;
    if let Some(v) = ct::get(&s.fwd) {
        // SAFETY: pointer from a map lookup.
        if unsafe { (*v).src_generation } == src.generation {
            ct::touch(v, t.protocol, p.tcp_flags, false);
            return TC_ACT_OK;
        }
    }
    let peer = lookup::identity_of(&t.dst);
    let out = audited(
        &src,
        dir,
        lookup::check(&src, dir, peer, t.protocol, t.dport),
    );
    if out.allowed() {
        track_src_checked(&s.fwd, &src, 0, out.rule_id);
    } else {
        ct::remove(&s.fwd);
    }
    finish(src_ifindex, dir, Some(p), &out)
}
