//! Verdict events sent through the ring buffer to the agent's flow log.

/// Name of the events ring buffer.
pub const MAP_EVENTS: &str = "PAL_EVENTS_V1";
/// Ring buffer size in bytes (a power of two, a multiple of the page size).
pub const EVENTS_BYTES: u32 = 1 << 20;
/// Name of the per-CPU counters array, indexed by `DropReason` (index 0 counts passed packets).
pub const MAP_COUNTERS: &str = "PAL_COUNTERS_V1";
/// Name of the per-CPU array of packets passed in audit mode, indexed by the `DropReason` that
/// enforcement would have applied.
pub const MAP_AUDITED: &str = "PAL_AUDIT_V1";

/// One verdict, as the programs report it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct VerdictEvent {
    pub timestamp_ns: u64,
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// Host veth ifindex of the endpoint the verdict is about.
    pub ifindex: u32,
    /// Rule id that decided, or 0.
    pub rule_id: u32,
    /// A `DropReason` value (0 when allowed).
    pub reason: u32,
    /// Peer identity.
    pub peer_identity: u32,
    pub sport: u16,
    pub dport: u16,
    pub protocol: u8,
    /// A `Direction` value.
    pub direction: u8,
    /// A `Decision` value.
    pub decision: u8,
    pub _pad: u8,
}

crate::user_pod!(VerdictEvent);
