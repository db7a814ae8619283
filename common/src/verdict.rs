//! Verdicts and drop reasons. `DropReason` values are part of the wire format of events and the
//! index of the per-CPU counters: never renumber, only append.

/// Why a packet was dropped. Stable numbering: append new reasons, never reuse a number.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DropReason {
    /// Not a drop: the packet passed.
    None = 0,
    /// The pod's ingress is isolated and no rule allows the peer and port.
    IngressPolicyDenied = 1,
    /// The pod's egress is isolated and no rule allows the peer and port.
    EgressPolicyDenied = 2,
    /// The packet could not be parsed in a direction that is isolated.
    Unparseable = 3,
    /// A non-first IP fragment whose first fragment was not seen or not allowed.
    FragmentUnknown = 4,
    /// An ICMP error that relates to no tracked, allowed flow.
    IcmpUnrelated = 5,
    /// The endpoint is marked fail-closed (its policy could not be fully written, e.g. a full map).
    EndpointFailClosed = 6,
    /// An established flow that the current policy no longer allows (revoked on policy change).
    Revoked = 7,
    /// An IP protocol that policy cannot allow in an isolated direction (not TCP/UDP/SCTP/ICMP).
    ProtocolDenied = 8,
    /// A ClusterNetworkPolicy Admin tier Deny rule matched (rule id in the event).
    AdminPolicyDenied = 9,
    /// A ClusterNetworkPolicy Baseline tier Deny rule matched (rule id in the event).
    BaselinePolicyDenied = 10,
}

impl DropReason {
    /// Number of reasons, the size of the counters array.
    pub const COUNT: u32 = 11;

    /// Every reason in numeric order (for counters and docs).
    pub const ALL: [DropReason; Self::COUNT as usize] = [
        Self::None,
        Self::IngressPolicyDenied,
        Self::EgressPolicyDenied,
        Self::Unparseable,
        Self::FragmentUnknown,
        Self::IcmpUnrelated,
        Self::EndpointFailClosed,
        Self::Revoked,
        Self::ProtocolDenied,
        Self::AdminPolicyDenied,
        Self::BaselinePolicyDenied,
    ];

    /// Parses a raw value from an event or counter index.
    pub const fn from_u32(v: u32) -> Option<Self> {
        if v < Self::COUNT {
            Some(Self::ALL[v as usize])
        } else {
            None
        }
    }

    /// A stable snake_case name for logs and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::IngressPolicyDenied => "ingress_policy_denied",
            Self::EgressPolicyDenied => "egress_policy_denied",
            Self::Unparseable => "unparseable",
            Self::FragmentUnknown => "fragment_unknown",
            Self::IcmpUnrelated => "icmp_unrelated",
            Self::EndpointFailClosed => "endpoint_fail_closed",
            Self::Revoked => "revoked",
            Self::ProtocolDenied => "protocol_denied",
            Self::AdminPolicyDenied => "admin_policy_denied",
            Self::BaselinePolicyDenied => "baseline_policy_denied",
        }
    }
}

/// Direction relative to the pod: `Ingress` is traffic the pod receives (seen at tc egress of the
/// host veth), `Egress` is traffic the pod sends (seen at tc ingress of the host veth).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    Ingress = 0,
    Egress = 1,
}

/// What decided a packet, carried in events.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Decision {
    /// Dropped; see the drop reason.
    Dropped = 0,
    /// Allowed by a policy rule (rule id in the event).
    AllowedByRule = 1,
    /// Allowed because the direction is not isolated.
    AllowedNotIsolated = 2,
    /// Allowed as part of a tracked flow (reply or later packet).
    AllowedTracked = 3,
    /// Allowed because the peer is the pod's own node.
    AllowedHost = 4,
    /// Allowed by protocol rules (ARP, neighbour discovery, related ICMP errors).
    AllowedProtocol = 5,
    /// Passed on to be decided where the Service-translated destination is visible.
    Deferred = 6,
    /// Policy denied it, but the endpoint is in audit mode: passed, reported, counted as audited
    /// (the event's drop reason says what enforcement would have done).
    Audited = 7,
}
