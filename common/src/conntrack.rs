//! Connection tracking: the LRU table's key and value, and the per-protocol state machine as pure
//! functions so that they are tested on the host.

use crate::proto;

/// Name of the conntrack LRU hash.
pub const MAP_CONNTRACK: &str = "PAL_CT_V1";
/// Maximum tracked flows; a full table evicts the least recently used flow.
pub const CT_MAX_ENTRIES: u32 = 262_144;
/// Name of the fragment table (first fragment's verdict, keyed by IP id).
pub const MAP_FRAGMENTS: &str = "PAL_FRAG_V1";
pub const FRAG_MAX_ENTRIES: u32 = 16_384;

/// A flow as seen at one endpoint's hook, in the direction of the packet that opened it. Flows are
/// tracked per endpoint (`ifindex`), because each endpoint decides its own direction.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct CtKey {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub ifindex: u32,
    /// Source port, or ICMP echo id.
    pub sport: u16,
    /// Destination port, or 0 for ICMP echo.
    pub dport: u16,
    pub protocol: u8,
    pub _pad: [u8; 3],
}

impl CtKey {
    /// The key of the reply direction of the same flow at the same hook.
    #[inline(always)]
    pub const fn reversed(&self) -> Self {
        Self {
            src: self.dst,
            dst: self.src,
            ifindex: self.ifindex,
            sport: self.dport,
            dport: self.sport,
            protocol: self.protocol,
            _pad: [0; 3],
        }
    }
}

/// The flow was opened by a packet the endpoint sent (its egress).
pub const CT_FLAG_OUTBOUND: u8 = 1 << 0;
/// The egress verdict for this flow was deferred past Service translation.
pub const CT_FLAG_DEFERRED: u8 = 1 << 1;
/// The flow's opening direction was checked against the source endpoint (identified by
/// `src_slot`) at a deferred hook.
pub const CT_FLAG_SRC_CHECKED: u8 = 1 << 2;

/// Per-protocol flow state.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CtState {
    New = 0,
    /// TCP: SYN seen, waiting for SYN-ACK. UDP/ICMP: only the opening direction seen.
    Opening = 1,
    Established = 2,
    /// TCP: FIN seen from one side.
    Closing = 3,
    /// TCP RST or both FINs: the flow lingers briefly for retransmissions.
    Closed = 4,
    /// Cut by a policy change: every packet of the flow is dropped until policy allows it again.
    /// Kept (not deleted) so that a later packet cannot be picked up as a mid-stream flow.
    Revoked = 5,
}

impl CtState {
    pub const fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Opening,
            2 => Self::Established,
            3 => Self::Closing,
            4 => Self::Closed,
            5 => Self::Revoked,
            _ => Self::New,
        }
    }
}

/// Value of the conntrack table.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct CtValue {
    /// `bpf_ktime_get_ns` of the last packet.
    pub last_seen_ns: u64,
    /// Endpoint generation the flow was last checked against.
    pub generation: u32,
    /// Generation of the source endpoint when `CT_FLAG_SRC_CHECKED` is set.
    pub src_generation: u32,
    /// Rule that allowed the flow, or 0.
    pub rule_id: u32,
    /// Slot of the source endpoint for deferred checks.
    pub src_slot: u16,
    /// A [`CtState`] value.
    pub state: u8,
    /// `CT_FLAG_*`.
    pub flags: u8,
}

crate::user_pod!(CtKey, CtValue);

impl CtValue {
    /// Whether the flow timed out at `now_ns` (the programs' clock, `bpf_ktime_get_ns`): the
    /// same test the programs make when a packet looks the flow up.
    pub const fn expired(&self, protocol: u8, now_ns: u64) -> bool {
        now_ns.saturating_sub(self.last_seen_ns)
            > timeout_ns(protocol, CtState::from_u8(self.state))
    }
}

const SEC: u64 = 1_000_000_000;

/// How long a flow in `state` stays valid without packets.
pub const fn timeout_ns(protocol: u8, state: CtState) -> u64 {
    match (protocol, state) {
        (proto::TCP | proto::SCTP, CtState::Established) => 6 * 3600 * SEC,
        (proto::TCP | proto::SCTP, CtState::Opening) => 60 * SEC,
        (proto::TCP | proto::SCTP, CtState::Closing) => 120 * SEC,
        (proto::TCP | proto::SCTP, CtState::Closed) => 10 * SEC,
        (_, CtState::Revoked) => 3600 * SEC,
        (proto::UDP, CtState::Established) => 180 * SEC,
        (proto::UDP, _) => 30 * SEC,
        (_, _) => 30 * SEC,
    }
}

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// Whether a TCP packet with `flags` may open a flow (a bare SYN).
#[inline(always)]
pub const fn tcp_opens(flags: u8) -> bool {
    flags & (TCP_SYN | TCP_ACK | TCP_RST) == TCP_SYN
}

/// The next state of a TCP flow after a packet with `flags`; `reply` is true when the packet
/// travels against the opening direction.
#[inline(always)]
pub const fn tcp_next(state: CtState, flags: u8, reply: bool) -> CtState {
    if matches!(state, CtState::Revoked) {
        return CtState::Revoked;
    }
    if flags & TCP_RST != 0 {
        return CtState::Closed;
    }
    match state {
        CtState::New | CtState::Opening => {
            if reply && flags & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK {
                CtState::Established
            } else if flags & TCP_FIN != 0 {
                CtState::Closing
            } else if !reply && flags & TCP_SYN == 0 && flags & TCP_ACK != 0 {
                // A mid-stream ACK picked up (a flow older than the programs).
                CtState::Established
            } else {
                CtState::Opening
            }
        }
        CtState::Established => {
            if flags & TCP_FIN != 0 {
                CtState::Closing
            } else {
                CtState::Established
            }
        }
        CtState::Closing => {
            if flags & TCP_FIN != 0 {
                CtState::Closed
            } else {
                CtState::Closing
            }
        }
        CtState::Closed => {
            if !reply && tcp_opens(flags) {
                CtState::Opening
            } else {
                CtState::Closed
            }
        }
        CtState::Revoked => CtState::Revoked,
    }
}

/// The next state of a UDP, SCTP or ICMP echo flow: a reply makes it established.
#[inline(always)]
pub const fn datagram_next(state: CtState, reply: bool) -> CtState {
    match (state, reply) {
        (CtState::Revoked, _) => CtState::Revoked,
        (CtState::Established, _) | (_, true) => CtState::Established,
        _ => CtState::Opening,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_handshake_establishes() {
        let s = tcp_next(CtState::New, TCP_SYN, false);
        assert_eq!(s, CtState::Opening);
        let s = tcp_next(s, TCP_SYN | TCP_ACK, true);
        assert_eq!(s, CtState::Established);
        let s = tcp_next(s, TCP_ACK, false);
        assert_eq!(s, CtState::Established);
    }

    #[test]
    fn tcp_fin_fin_closes_and_rst_closes() {
        let s = tcp_next(CtState::Established, TCP_FIN | TCP_ACK, false);
        assert_eq!(s, CtState::Closing);
        assert_eq!(tcp_next(s, TCP_FIN | TCP_ACK, true), CtState::Closed);
        assert_eq!(
            tcp_next(CtState::Established, TCP_RST, true),
            CtState::Closed
        );
    }

    #[test]
    fn only_bare_syn_opens() {
        assert!(tcp_opens(TCP_SYN));
        assert!(!tcp_opens(TCP_SYN | TCP_ACK));
        assert!(!tcp_opens(TCP_ACK));
        assert!(!tcp_opens(TCP_SYN | TCP_RST));
    }

    #[test]
    fn closed_flow_reopens_on_new_syn() {
        assert_eq!(tcp_next(CtState::Closed, TCP_SYN, false), CtState::Opening);
        assert_eq!(tcp_next(CtState::Closed, TCP_ACK, false), CtState::Closed);
    }

    #[test]
    fn revoked_stays_revoked() {
        assert_eq!(tcp_next(CtState::Revoked, TCP_SYN, false), CtState::Revoked);
        assert_eq!(tcp_next(CtState::Revoked, TCP_RST, true), CtState::Revoked);
        assert_eq!(datagram_next(CtState::Revoked, true), CtState::Revoked);
    }

    #[test]
    fn datagram_reply_establishes() {
        assert_eq!(datagram_next(CtState::New, false), CtState::Opening);
        assert_eq!(datagram_next(CtState::Opening, true), CtState::Established);
        assert_eq!(
            datagram_next(CtState::Established, false),
            CtState::Established
        );
    }

    #[test]
    fn expiry_follows_the_state_timeout() {
        let v = CtValue {
            last_seen_ns: 5 * SEC,
            state: CtState::Closed as u8,
            ..CtValue::default()
        };
        assert!(!v.expired(proto::TCP, 15 * SEC));
        assert!(v.expired(proto::TCP, 15 * SEC + 1));
        // A clock behind the entry (another CPU wrote it just now) is not expiry.
        assert!(!v.expired(proto::TCP, SEC));
        let established = CtValue {
            state: CtState::Established as u8,
            ..v
        };
        assert!(!established.expired(proto::TCP, 3600 * SEC));
    }

    #[test]
    fn timeouts_are_ordered() {
        assert!(
            timeout_ns(proto::TCP, CtState::Established) > timeout_ns(proto::TCP, CtState::Opening)
        );
        assert!(
            timeout_ns(proto::UDP, CtState::Established) > timeout_ns(proto::UDP, CtState::Opening)
        );
    }
}
