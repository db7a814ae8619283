//! Verdict events (ring buffer) and per-CPU counters per drop reason.

use aya_ebpf::helpers::bpf_ktime_get_ns;
use palisade_common::{
    event::VerdictEvent,
    packet::Tuple,
    verdict::{Direction, DropReason},
};

use crate::{
    lookup::Check,
    maps::{ALLOW_RATE, AUDITED, CONFIG, COUNTERS, EVENTS},
};

#[inline(always)]
pub fn count(reason: DropReason) {
    if let Some(c) = COUNTERS.get_ptr_mut(reason as u32) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *c += 1 };
    }
}

/// Counts a packet that passed in audit mode under the reason enforcement would have dropped it.
#[inline(always)]
pub fn count_audited(reason: DropReason) {
    if let Some(c) = AUDITED.get_ptr_mut(reason as u32) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *c += 1 };
    }
}

/// Reports a verdict. A full ring buffer loses the event (user space counts the gap through the
/// counters), never the verdict.
#[inline(always)]
pub fn report(ifindex: u32, dir: Direction, t: &Tuple, check: &Check) {
    if let Some(mut slot) = EVENTS.reserve::<VerdictEvent>(0) {
        let ev = VerdictEvent {
            // SAFETY: helper without preconditions.
            timestamp_ns: unsafe { bpf_ktime_get_ns() },
            src: t.src,
            dst: t.dst,
            ifindex,
            rule_id: check.rule_id,
            reason: check.reason as u32,
            peer_identity: check.peer_identity,
            sport: t.sport,
            dport: t.dport,
            protocol: t.protocol,
            direction: dir as u8,
            decision: check.decision as u8,
            _pad: 0,
        };
        slot.write(ev);
        slot.submit(0);
    }
}

/// Whether an allow event may be sent now: allow events are off unless configured, and then at
/// most `allow_events_per_sec` per CPU per second.
#[inline(always)]
pub fn allow_event_permitted() -> bool {
    let Some(cfg) = CONFIG.get(0) else {
        return false;
    };
    if cfg.flags & palisade_common::endpoint::CFG_ALLOW_EVENTS == 0 {
        return false;
    }
    let Some(w) = ALLOW_RATE.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: per-CPU slot, no concurrent writer on this CPU.
    unsafe {
        let now = bpf_ktime_get_ns();
        if now.saturating_sub((*w).start_ns) >= 1_000_000_000 {
            (*w).start_ns = now;
            (*w).count = 0;
        }
        if (*w).count >= cfg.allow_events_per_sec {
            return false;
        }
        (*w).count += 1;
    }
    true
}
