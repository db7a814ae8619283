//! What the compiler produces: the content of the dataplane's maps, in plain deterministic types.
//!
//! Per packet the dataplane (1) looks the peer IP up in the node-wide [`IdentityTable`] (an LPM
//! trie) to get an identity, then (2) looks `{policy_id, identity, proto, port}` up in the
//! endpoint's [`AllowTable`] (an LPM trie whose prefix covers identity, identity+protocol or
//! identity+protocol+port prefix), then (3) the same with identity = [`IDENTITY_ANY`].
//! [`super::verdict`] does exactly that over these types.
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::CompileOptions;
use crate::model::{ContainerPort, Labels, ObjectKey, Protocol};

/// Wildcard identity, used only in allow-table keys: "any peer".
pub const IDENTITY_ANY: u32 = 0;
/// An address that matches no prefix of the identity table.
pub const IDENTITY_WORLD: u32 = 1;
/// The node's own addresses; allowed by the dataplane itself when node traffic is allowed.
pub const IDENTITY_HOST: u32 = 2;
/// Identities the compiler allocates start here.
pub const FIRST_ALLOCATED_IDENTITY: u32 = 256;

/// Traffic direction, seen from the endpoint: Ingress = to the pod, Egress = from the pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Direction {
    Ingress,
    Egress,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ingress => "ingress",
            Self::Egress => "egress",
        })
    }
}

/// What an entry does: the final verdict for its keys, all tiers already applied (Pass never
/// reaches a table: the compiler resolves it to the next tier's verdict).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Action {
    Allow,
    Deny,
}

/// The tier whose rule decided an entry. The discriminants are the BPF value's `tier` byte
/// (`palisade_common::policy::TIER_*`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
pub enum Tier {
    /// A NetworkPolicy rule allowed it, or (`Deny`, rule id 0) NetworkPolicy isolates the
    /// direction and no rule allowed it.
    #[default]
    NetworkPolicy = 0,
    /// A ClusterNetworkPolicy Admin tier rule.
    Admin = 1,
    /// A ClusterNetworkPolicy Baseline tier rule.
    Baseline = 2,
    /// No tier decided: "all pods can communicate with each other" (`Allow`, rule id 0). Written
    /// where a ClusterNetworkPolicy makes a direction need a lookup that NetworkPolicy does not
    /// isolate.
    Default = 3,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NetworkPolicy => "NetworkPolicy",
            Self::Admin => "Admin",
            Self::Baseline => "Baseline",
            Self::Default => "Default",
        }
    }
}

/// One rule of one policy: `spec.<direction>[index]` of `policy`. For a ClusterNetworkPolicy
/// (`tier` Admin or Baseline) `policy` has an empty namespace and `rule_name` is the rule's
/// optional `name`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RuleRef {
    pub policy: ObjectKey,
    pub direction: Direction,
    pub index: u32,
    #[serde(default, skip_serializing_if = "is_network_policy")]
    pub tier: Tier,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule_name: Option<String>,
}

fn is_network_policy(tier: &Tier) -> bool {
    *tier == Tier::NetworkPolicy
}

impl RuleRef {
    /// A NetworkPolicy rule.
    pub fn network_policy(policy: ObjectKey, direction: Direction, index: u32) -> Self {
        Self {
            policy,
            direction,
            index,
            tier: Tier::NetworkPolicy,
            rule_name: None,
        }
    }

    /// Whether the rule belongs to a ClusterNetworkPolicy.
    pub fn is_cluster(&self) -> bool {
        matches!(self.tier, Tier::Admin | Tier::Baseline)
    }

    /// The policy as `kind/name` for logs: `ClusterNetworkPolicy/<name>` or
    /// `NetworkPolicy/<ns>/<name>`.
    pub fn policy_label(&self) -> String {
        if self.is_cluster() {
            format!("ClusterNetworkPolicy/{}", self.policy.name)
        } else {
            format!("NetworkPolicy/{}", self.policy)
        }
    }
}

impl fmt::Display for RuleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.is_cluster() {
            return write!(f, "{} {}[{}]", self.policy, self.direction, self.index);
        }
        let tier = self.tier.as_str();
        write!(
            f,
            "ClusterNetworkPolicy {} ({tier}) {}[{}]",
            self.policy.name, self.direction, self.index
        )?;
        match &self.rule_name {
            Some(name) => write!(f, " {name:?}"),
            None => Ok(()),
        }
    }
}

/// The peer part of an allow key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Peer {
    /// Any peer (identity [`IDENTITY_ANY`] in the map).
    Any,
    Identity(u32),
}

impl Peer {
    /// The identity number the dataplane key carries.
    pub fn identity(self) -> u32 {
        match self {
            Self::Any => IDENTITY_ANY,
            Self::Identity(id) => id,
        }
    }
}

/// A block of ports: `port` with the low `16 - prefix_len` bits free. Port ranges (`endPort`)
/// become the minimal list of such blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PortPrefix {
    pub port: u16,
    pub prefix_len: u8,
}

impl PortPrefix {
    /// A single port.
    pub fn single(port: u16) -> Self {
        Self {
            port,
            prefix_len: 16,
        }
    }

    pub fn contains(self, port: u16) -> bool {
        let shift = 16 - u32::from(self.prefix_len.min(16));
        (u32::from(port) >> shift) == (u32::from(self.port) >> shift)
    }

    /// First and last port of the block.
    pub fn range(self) -> (u16, u16) {
        let size = 1u32 << (16 - u32::from(self.prefix_len.min(16)));
        let last = u32::from(self.port) + size - 1;
        (self.port, u16::try_from(last).unwrap_or(u16::MAX))
    }
}

/// The key of an allow entry (the LPM key minus the policy id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AllowEntry {
    pub peer: Peer,
    /// `None` = all protocols (and then `ports` is `None` too).
    pub protocol: Option<Protocol>,
    /// `None` = all ports of `protocol`.
    pub ports: Option<PortPrefix>,
}

/// The value of an allow entry: what to do and which rule decided (for events and explain).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EntryValue {
    pub action: Action,
    pub tier: Tier,
    /// Index into [`CompiledOutput::rules`]. When several rules produce the same key, the value
    /// names the smallest [`RuleRef`], so that the table does not depend on allocation order.
    pub rule_id: u32,
}

/// The allow set of one endpoint direction: the content of one `policy_id` in the policy map.
/// Endpoints with identical content share one table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllowTable {
    pub entries: BTreeMap<AllowEntry, EntryValue>,
}

/// The content hash of an [`AllowTable`] (FNV-1a over its canonical encoding); the syncer maps it
/// to a `policy_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TableId(pub u64);

impl fmt::Display for TableId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl AllowTable {
    /// FNV-1a over a fixed-width encoding of every entry, in key order.
    pub fn content_hash(&self) -> TableId {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        let mut feed = |bytes: &[u8]| {
            for b in bytes {
                hash ^= u64::from(*b);
                hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
            }
        };
        for (key, value) in &self.entries {
            feed(&key.peer.identity().to_le_bytes());
            feed(&[u8::from(matches!(key.peer, Peer::Any))]);
            feed(&[key.protocol.map_or(0, Protocol::number)]);
            let ports = key.ports.map_or((0, 0), |p| (p.port, p.prefix_len));
            feed(&ports.0.to_le_bytes());
            feed(&[ports.1, value.action as u8, value.tier as u8]);
            feed(&value.rule_id.to_le_bytes());
        }
        TableId(hash)
    }
}

/// One direction of one endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectionPolicy {
    /// Whether some NetworkPolicy selects the pod for this direction.
    pub isolated: bool,
    /// The NetworkPolicies that isolate it (for explain).
    pub isolated_by: Vec<ObjectKey>,
    /// The ClusterNetworkPolicies whose subject selects the pod and that have rules for this
    /// direction, in evaluation order (Admin by priority, then Baseline by priority).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cluster_policies: Vec<String>,
    /// The table when a lookup is needed: isolated by NetworkPolicy (possibly empty: deny all)
    /// or under some ClusterNetworkPolicy. `None` = allow all without a lookup.
    pub table: Option<TableId>,
}

impl DirectionPolicy {
    pub fn open() -> Self {
        Self {
            isolated: false,
            isolated_by: Vec::new(),
            cluster_policies: Vec::new(),
            table: None,
        }
    }

    /// Whether packets of this direction are looked up in a table (the dataplane's
    /// `EP_*_ISOLATED` flag): NetworkPolicy isolates it or a ClusterNetworkPolicy applies.
    pub fn needs_lookup(&self) -> bool {
        self.isolated || self.table.is_some()
    }
}

/// A local endpoint: a pod with an IP that is not hostNetwork.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointPolicy {
    pub pod: ObjectKey,
    pub ips: Vec<IpAddr>,
    pub node: Option<String>,
    pub ingress: DirectionPolicy,
    pub egress: DirectionPolicy,
}

impl EndpointPolicy {
    pub fn direction(&self, direction: Direction) -> &DirectionPolicy {
        match direction {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }
}

/// What an identity stands for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum IdentityKey {
    /// Pods that are indistinguishable to every rule: same namespace, labels, container ports,
    /// and CIDR class (the longest ipBlock prefix that contains their IP, if any).
    Pods {
        namespace: String,
        labels: Labels,
        ports: Vec<ContainerPort>,
        class: Option<IpNet>,
    },
    /// Non-pod addresses whose longest ipBlock prefix is this one.
    Cidr(IpNet),
}

/// One allocated identity, for explain and flow logs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityInfo {
    pub key: IdentityKey,
    /// The pods that have this identity (empty for CIDR identities).
    pub members: BTreeSet<ObjectKey>,
}

/// The node-wide address → identity map.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityTable {
    /// The LPM trie: pod IPs as host prefixes, every ipBlock prefix, in any family.
    pub prefixes: BTreeMap<IpNet, u32>,
    /// Every allocated identity (>= [`FIRST_ALLOCATED_IDENTITY`]).
    pub identities: BTreeMap<u32, IdentityInfo>,
    /// Per node, its addresses, which map to [`IDENTITY_HOST`] for the endpoints on that node.
    /// Only the local node when compiling for one node; empty when node traffic is not allowed.
    pub host: BTreeMap<String, BTreeSet<IpAddr>>,
}

/// How bad a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Severity {
    /// Part of the policy was dropped (and fails closed).
    Error,
    /// Valid, but probably not what was meant (a named port that resolves nowhere).
    Warning,
}

/// One problem in one policy field. Compilation never aborts on these.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PolicyProblem {
    pub policy: ObjectKey,
    /// JSON-path-like field, e.g. `spec.ingress[0].from[1].ipBlock.except[0]`.
    pub field: String,
    pub severity: Severity,
    pub message: String,
}

impl fmt::Display for PolicyProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        // ClusterNetworkPolicies are cluster-scoped: their key has an empty namespace.
        if self.policy.namespace.is_empty() {
            return write!(
                f,
                "{level}: ClusterNetworkPolicy {} field {}: {}",
                self.policy.name, self.field, self.message
            );
        }
        write!(
            f,
            "{level}: NetworkPolicy {} field {}: {}",
            self.policy, self.field, self.message
        )
    }
}

/// The whole compiled state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompiledOutput {
    pub options: CompileOptions,
    pub identities: IdentityTable,
    /// `rule_id` → rule, for entry values and flow logs.
    pub rules: BTreeMap<u32, RuleRef>,
    /// Shared allow tables by content hash.
    pub tables: BTreeMap<TableId, AllowTable>,
    pub endpoints: BTreeMap<ObjectKey, EndpointPolicy>,
    /// Endpoint IP → endpoint, for the local side of a lookup.
    pub endpoint_ips: BTreeMap<IpAddr, ObjectKey>,
    pub problems: Vec<PolicyProblem>,
}

/// What one incremental step changed, for the syncer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delta {
    /// Endpoints added or whose state changed.
    pub endpoints_changed: BTreeSet<ObjectKey>,
    pub endpoints_removed: BTreeSet<ObjectKey>,
    pub tables_added: BTreeSet<TableId>,
    pub tables_removed: BTreeSet<TableId>,
    /// Identity-trie prefixes added, changed or removed (look them up in the new output).
    pub prefixes_changed: BTreeSet<IpNet>,
    /// Whether the host address map changed.
    pub host_changed: bool,
}

impl Delta {
    pub fn is_empty(&self) -> bool {
        self.endpoints_changed.is_empty()
            && self.endpoints_removed.is_empty()
            && self.tables_added.is_empty()
            && self.tables_removed.is_empty()
            && self.prefixes_changed.is_empty()
            && !self.host_changed
    }
}
