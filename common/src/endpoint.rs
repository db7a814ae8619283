//! Endpoints: local pods whose host veth carries Palisade's programs, keyed by that veth's ifindex.
//! Writing an endpoint's record is the atomic flip from one policy to the next: a hash-map update
//! replaces the whole value at once, so a packet sees either the old tables or the new ones.

/// Name of the endpoint hash map (host ifindex → [`Endpoint`]).
pub const MAP_ENDPOINTS: &str = "PAL_EP_V1";
/// Name of the slot map (endpoint slot → host ifindex), used to find the source endpoint of a
/// packet whose egress verdict was deferred past Service translation.
pub const MAP_SLOTS: &str = "PAL_SLOT_V1";
/// Name of the config array (one [`Config`]).
pub const MAP_CONFIG: &str = "PAL_CFG_V1";
/// Maximum local endpoints per node; slots are below this.
pub const ENDPOINTS_MAX: u32 = 4096;

/// The ingress direction of this endpoint is isolated.
pub const EP_INGRESS_ISOLATED: u32 = 1 << 0;
/// The egress direction of this endpoint is isolated.
pub const EP_EGRESS_ISOLATED: u32 = 1 << 1;
/// Drop everything but ARP/ND: the agent could not write this endpoint's policy completely.
pub const EP_FAIL_CLOSED: u32 = 1 << 2;
/// Audit mode for traffic the pod receives: a policy deny passes and is reported as
/// `Decision::Audited` (never for malformed packets or fail-closed endpoints).
pub const EP_AUDIT_INGRESS: u32 = 1 << 3;
/// Audit mode for traffic the pod sends (see [`EP_AUDIT_INGRESS`]).
pub const EP_AUDIT_EGRESS: u32 = 1 << 4;

/// Per-endpoint record.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Endpoint {
    /// Small id carried in the skb mark for deferred verdicts.
    pub slot: u32,
    /// Policy table id for traffic the pod receives.
    pub ingress_table: u32,
    /// Policy table id for traffic the pod sends.
    pub egress_table: u32,
    /// `EP_*` flags.
    pub flags: u32,
    /// Bumped whenever the endpoint's policy changes; conntrack entries remember the generation
    /// they were checked against and are re-checked on mismatch.
    pub generation: u32,
    /// The identity of the pod's IPv4 address (for deferred Service verdicts and events).
    pub identity: u32,
    /// The identity of its IPv6 address: it differs from the IPv4 one when an ipBlock names only
    /// one of the two addresses.
    pub identity6: u32,
    pub _pad: u32,
}

impl Endpoint {
    /// The pod's identity in the address family of a packet.
    #[inline(always)]
    pub const fn identity_for(&self, ipv6: bool) -> u32 {
        if ipv6 {
            self.identity6
        } else {
            self.identity
        }
    }
}

/// Allow traffic between pods and their own node's addresses (kubelet probes).
pub const CFG_ALLOW_HOST: u32 = 1 << 0;
/// Emit events for allowed new flows, at most `allow_events_per_sec` per CPU per second.
pub const CFG_ALLOW_EVENTS: u32 = 1 << 1;

/// Node-wide settings, element 0 of [`MAP_CONFIG`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Config {
    /// `CFG_*` flags.
    pub flags: u32,
    /// Rate limit of allow events (per CPU, per second) when `CFG_ALLOW_EVENTS` is set.
    pub allow_events_per_sec: u32,
}

/// Bits of the skb mark Palisade owns. kube-proxy owns 0x4000 and 0x8000; every write is masked.
pub const MARK_MASK: u32 = 0x0fff_0000 | MARK_DEFERRED;
/// Set on a packet whose egress verdict is deferred until the translated destination is known.
pub const MARK_DEFERRED: u32 = 0x1000_0000;
/// Shift of the source endpoint slot inside the mark.
pub const MARK_SLOT_SHIFT: u32 = 16;

/// Name of the Service frontend set (ClusterIP, port, protocol) that makes an egress verdict
/// deferred.
pub const MAP_SERVICES: &str = "PAL_SVC_V1";
/// Maximum Service frontends.
pub const SERVICES_MAX: u32 = 65_536;

/// Key of the Service frontend set.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    pub addr: [u8; 16],
    pub port: [u8; 2],
    pub protocol: u8,
    pub _pad: u8,
}

crate::user_pod!(Endpoint, Config, ServiceKey);
