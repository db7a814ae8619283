//! Policy tables: one LPM trie holds every endpoint's allow structures, keyed by
//! `{policy table id, peer identity, protocol, port prefix}`. Endpoints with identical allow sets
//! share a table id. See `docs/dataplane.md`.

/// Name of the policy LPM trie.
pub const MAP_POLICY: &str = "PAL_POLICY_V1";
/// Bound on policy entries across all tables on the node.
pub const POLICY_MAX_ENTRIES: u32 = 1_048_576;

/// Bits of the key covered by `table` and `identity`: a prefix this long matches all protocols
/// and ports.
pub const PREFIX_ALL_PROTOCOLS: u32 = 64;
/// A prefix this long matches one protocol, all ports.
pub const PREFIX_ALL_PORTS: u32 = 72;
/// A full key: one protocol and one port.
pub const PREFIX_FULL: u32 = 88;

/// Key data of the policy trie. Multi-byte fields are big-endian so that the trie's bitwise prefix
/// order is the numeric order (a port range is a set of prefix blocks).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyKey {
    pub table: [u8; 4],
    pub identity: [u8; 4],
    pub protocol: u8,
    pub port: [u8; 2],
    pub _pad: u8,
}

impl PolicyKey {
    #[inline(always)]
    pub const fn new(table: u32, identity: u32, protocol: u8, port: u16) -> Self {
        Self {
            table: table.to_be_bytes(),
            identity: identity.to_be_bytes(),
            protocol,
            port: port.to_be_bytes(),
            _pad: 0,
        }
    }
}

/// What a matching entry does. Entries hold final verdicts (the compiler flattens the
/// ClusterNetworkPolicy tiers), so only `Allow` and `Deny` are written; `Pass` stays reserved.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    Allow = 1,
    Deny = 2,
    Pass = 3,
}

/// `PolicyValue::tier`: a NetworkPolicy rule allowed (`Allow`), or NetworkPolicy isolates the
/// direction and no rule allowed (`Deny`, rule id 0).
pub const TIER_NETWORK_POLICY: u8 = 0;
/// A ClusterNetworkPolicy Admin tier rule decided.
pub const TIER_ADMIN: u8 = 1;
/// A ClusterNetworkPolicy Baseline tier rule decided.
pub const TIER_BASELINE: u8 = 2;
/// No tier decided: allowed as if not isolated (`Allow`, rule id 0). Written where a
/// ClusterNetworkPolicy makes a direction need a lookup that NetworkPolicy does not isolate.
pub const TIER_DEFAULT: u8 = 3;

/// Value of the policy trie.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PolicyValue {
    /// Compact id of the rule that matched (resolved to policy name and rule index in user space).
    pub rule_id: u32,
    /// An [`Action`] value.
    pub action: u8,
    /// Which tier decided: one of the `TIER_*` values.
    pub tier: u8,
    pub _pad: [u8; 2],
}

crate::user_pod!(PolicyKey, PolicyValue);
