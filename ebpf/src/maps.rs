//! Every map the programs use, beside the common key and value types they hold. Names are the
//! versioned constants from `palisade_common`; the agent pins them under a versioned bpffs path.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
};
use palisade_common::{
    conntrack::{CtKey, CtValue, CT_MAX_ENTRIES, FRAG_MAX_ENTRIES},
    endpoint::{Config, Endpoint, ServiceKey, ENDPOINTS_MAX, SERVICES_MAX},
    event::EVENTS_BYTES,
    identity::{IdentityKey, IdentityValue, IDENTITY_MAX_ENTRIES},
    policy::{PolicyKey, PolicyValue, POLICY_MAX_ENTRIES},
    verdict::DropReason,
};

#[map(name = "PAL_EP_V1")]
pub static ENDPOINTS: HashMap<u32, Endpoint> = HashMap::with_max_entries(ENDPOINTS_MAX, 0);

#[map(name = "PAL_SLOT_V1")]
pub static SLOTS: HashMap<u32, u32> = HashMap::with_max_entries(ENDPOINTS_MAX, 0);

#[map(name = "PAL_CFG_V1")]
pub static CONFIG: Array<Config> = Array::with_max_entries(1, 0);

#[map(name = "PAL_IDENT_V1")]
pub static IDENTITIES: LpmTrie<IdentityKey, IdentityValue> =
    LpmTrie::with_max_entries(IDENTITY_MAX_ENTRIES, 0);

#[map(name = "PAL_POLICY_V1")]
pub static POLICY: LpmTrie<PolicyKey, PolicyValue> =
    LpmTrie::with_max_entries(POLICY_MAX_ENTRIES, 0);

#[map(name = "PAL_SVC_V1")]
pub static SERVICES: HashMap<ServiceKey, u32> = HashMap::with_max_entries(SERVICES_MAX, 0);

#[map(name = "PAL_CT_V1")]
pub static CONNTRACK: LruHashMap<CtKey, CtValue> = LruHashMap::with_max_entries(CT_MAX_ENTRIES, 0);

/// Fragment table: the first fragment's flow key (ports zeroed, `sport` = low half of the IP id,
/// `dport` = high half) → 1 when that first fragment was allowed.
#[map(name = "PAL_FRAG_V1")]
pub static FRAGMENTS: LruHashMap<CtKey, u32> = LruHashMap::with_max_entries(FRAG_MAX_ENTRIES, 0);

#[map(name = "PAL_EVENTS_V1")]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0);

#[map(name = "PAL_COUNTERS_V1")]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(DropReason::COUNT, 0);

/// Packets passed in audit mode, by the drop reason enforcement would have applied.
#[map(name = "PAL_AUDIT_V1")]
pub static AUDITED: PerCpuArray<u64> = PerCpuArray::with_max_entries(DropReason::COUNT, 0);

/// Per-CPU working memory for one packet: the parse result and flow keys are too large for the
/// 512-byte BPF stack once every step is inlined.
pub struct Scratch {
    pub p: palisade_common::packet::Parsed,
    pub fwd: CtKey,
    pub rev: CtKey,
}

#[map(name = "PAL_SCRATCH_V1")]
pub static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU rate limiter of allow events: the current one-second window and its count.
#[repr(C)]
pub struct RateWindow {
    pub start_ns: u64,
    pub count: u32,
    pub _pad: u32,
}

#[map(name = "PAL_RATE_V1")]
pub static ALLOW_RATE: PerCpuArray<RateWindow> = PerCpuArray::with_max_entries(1, 0);
