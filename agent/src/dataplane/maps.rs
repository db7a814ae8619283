//! Typed accessors for the maps. Keys and values are the `palisade_common` types; prefix lengths
//! and byte orders are handled here and nowhere else.

use std::net::IpAddr;

use aya::maps::{lpm_trie::Key, Array, HashMap, LpmTrie, MapData, PerCpuArray, RingBuf};
use ipnet::IpNet;
use palisade_common::{
    conntrack::{CtKey, CtValue, MAP_CONNTRACK},
    endpoint::{Config, Endpoint, ServiceKey, MAP_CONFIG, MAP_ENDPOINTS, MAP_SERVICES, MAP_SLOTS},
    event::{VerdictEvent, MAP_COUNTERS, MAP_EVENTS},
    identity::{IdentityKey, IdentityValue, MAP_IDENTITY},
    policy::{PolicyKey, PolicyValue, MAP_POLICY, PREFIX_ALL_PORTS, PREFIX_ALL_PROTOCOLS},
    verdict::DropReason,
};

use super::{Dataplane, DataplaneError};

/// A block of ports: `port` with its low `16 - prefix_len` bits free.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortBlock {
    pub port: u16,
    pub prefix_len: u8,
}

/// The 16-byte key form of an address (IPv4 as IPv4-mapped IPv6).
pub fn addr16(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => palisade_common::v4_mapped(v4.octets()),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// The identity trie key of a prefix.
pub fn identity_key(net: IpNet) -> Key<IdentityKey> {
    let (addr, len) = match net.trunc() {
        IpNet::V4(n) => (
            addr16(IpAddr::V4(n.network())),
            96 + u32::from(n.prefix_len()),
        ),
        IpNet::V6(n) => (addr16(IpAddr::V6(n.network())), u32::from(n.prefix_len())),
    };
    Key::new(len, IdentityKey { addr })
}

/// An identity trie key for a full address in key form (for reading Service keys back).
pub fn identity_key_raw(addr: [u8; 16]) -> Key<IdentityKey> {
    Key::new(128, IdentityKey { addr })
}

/// The policy trie key of an entry: all protocols (`protocol` None), all ports of a protocol
/// (`ports` None) or a port block.
pub fn policy_key(
    table: u32,
    identity: u32,
    protocol: Option<u8>,
    ports: Option<PortBlock>,
) -> Key<PolicyKey> {
    match (protocol, ports) {
        (None, _) => Key::new(PREFIX_ALL_PROTOCOLS, PolicyKey::new(table, identity, 0, 0)),
        (Some(p), None) => Key::new(PREFIX_ALL_PORTS, PolicyKey::new(table, identity, p, 0)),
        (Some(p), Some(b)) => Key::new(
            PREFIX_ALL_PORTS + u32::from(b.prefix_len),
            PolicyKey::new(table, identity, p, b.port),
        ),
    }
}

/// The policy-trie value of a compiled entry: the final action and the tier and rule that
/// decided (`ebpf/src/lookup.rs` reads them back).
pub fn policy_value(value: &crate::compiler::EntryValue) -> PolicyValue {
    let action = match value.action {
        crate::compiler::Action::Allow => palisade_common::policy::Action::Allow,
        crate::compiler::Action::Deny => palisade_common::policy::Action::Deny,
    };
    PolicyValue {
        rule_id: value.rule_id,
        action: action as u8,
        tier: value.tier as u8,
        _pad: [0; 2],
    }
}

macro_rules! map_mut {
    ($self:ident, $name:expr, $ty:ty) => {{
        let name: &'static str = $name;
        let map = $self
            .ebpf
            .map_mut(name)
            .ok_or(DataplaneError::MissingMap(name))?;
        <$ty>::try_from(map).map_err(|source| DataplaneError::Map { name, source })?
    }};
}

fn merr(name: &'static str) -> impl Fn(aya::maps::MapError) -> DataplaneError {
    move |source| DataplaneError::Map { name, source }
}

impl Dataplane {
    /// Writes an endpoint's record: the atomic flip to its current policy tables.
    pub fn set_endpoint(&mut self, ifindex: u32, ep: &Endpoint) -> Result<(), DataplaneError> {
        let mut m = map_mut!(self, MAP_ENDPOINTS, HashMap<&mut MapData, u32, Endpoint>);
        m.insert(ifindex, ep, 0).map_err(merr(MAP_ENDPOINTS))?;
        let mut s = map_mut!(self, MAP_SLOTS, HashMap<&mut MapData, u32, u32>);
        s.insert(ep.slot, ifindex, 0).map_err(merr(MAP_SLOTS))
    }

    pub fn endpoint(&mut self, ifindex: u32) -> Result<Option<Endpoint>, DataplaneError> {
        let m = map_mut!(self, MAP_ENDPOINTS, HashMap<&mut MapData, u32, Endpoint>);
        match m.get(&ifindex, 0) {
            Ok(v) => Ok(Some(v)),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(merr(MAP_ENDPOINTS)(e)),
        }
    }

    pub fn remove_endpoint(&mut self, ifindex: u32, slot: u32) -> Result<(), DataplaneError> {
        let mut m = map_mut!(self, MAP_ENDPOINTS, HashMap<&mut MapData, u32, Endpoint>);
        ignore_missing(m.remove(&ifindex)).map_err(merr(MAP_ENDPOINTS))?;
        let mut s = map_mut!(self, MAP_SLOTS, HashMap<&mut MapData, u32, u32>);
        ignore_missing(s.remove(&slot)).map_err(merr(MAP_SLOTS))
    }

    /// Deletes the tracked flows of interfaces whose endpoints are gone: nothing looks them up
    /// any more (an entry is only removed when a lookup finds it expired), so they would sit in
    /// the table until LRU pressure evicts them. One walk of the table; returns how many went.
    pub fn forget_flows(
        &mut self,
        ifindexes: &std::collections::BTreeSet<u32>,
    ) -> Result<u64, DataplaneError> {
        let mut m = map_mut!(self, MAP_CONNTRACK, HashMap<&mut MapData, CtKey, CtValue>);
        let stale: Vec<CtKey> = m
            .keys()
            .filter_map(Result::ok)
            .filter(|k| ifindexes.contains(&k.ifindex))
            .collect();
        let mut removed = 0;
        for key in &stale {
            ignore_missing(m.remove(key)).map_err(merr(MAP_CONNTRACK))?;
            removed += 1;
        }
        Ok(removed)
    }

    /// Deletes flows whose timeout has passed at `now_ns` (the programs' clock). The programs
    /// drop an expired entry only when a packet of its flow looks it up, so the flows of
    /// connections that ended would stay until LRU pressure evicts them. Each candidate is read
    /// again just before it goes: a packet may have refreshed it meanwhile (if one slips in
    /// between, its next packet is a mid-stream pickup, checked against policy again).
    /// Walks at most `limit` entries; returns (entries left, entries removed).
    pub fn expire_flows(
        &mut self,
        now_ns: u64,
        limit: usize,
    ) -> Result<(u64, u64), DataplaneError> {
        let mut m = map_mut!(self, MAP_CONNTRACK, HashMap<&mut MapData, CtKey, CtValue>);
        let mut walked = 0u64;
        let mut candidates = Vec::new();
        for (key, value) in m.iter().take(limit).filter_map(Result::ok) {
            walked += 1;
            if value.expired(key.protocol, now_ns) {
                candidates.push(key);
            }
        }
        let mut removed = 0u64;
        for key in &candidates {
            let still = matches!(m.get(key, 0), Ok(v) if v.expired(key.protocol, now_ns));
            if still {
                ignore_missing(m.remove(key)).map_err(merr(MAP_CONNTRACK))?;
                removed += 1;
            }
        }
        Ok((walked - removed, removed))
    }

    pub fn set_identity(&mut self, net: IpNet, identity: u32) -> Result<(), DataplaneError> {
        let mut m = map_mut!(self, MAP_IDENTITY, LpmTrie<&mut MapData, IdentityKey, IdentityValue>);
        m.insert(&identity_key(net), IdentityValue { identity, _pad: 0 }, 0)
            .map_err(merr(MAP_IDENTITY))
    }

    pub fn remove_identity(&mut self, net: IpNet) -> Result<(), DataplaneError> {
        let mut m = map_mut!(self, MAP_IDENTITY, LpmTrie<&mut MapData, IdentityKey, IdentityValue>);
        ignore_missing(m.remove(&identity_key(net))).map_err(merr(MAP_IDENTITY))
    }

    pub fn set_policy(
        &mut self,
        key: &Key<PolicyKey>,
        value: PolicyValue,
    ) -> Result<(), DataplaneError> {
        let mut m = map_mut!(self, MAP_POLICY, LpmTrie<&mut MapData, PolicyKey, PolicyValue>);
        m.insert(key, value, 0).map_err(merr(MAP_POLICY))
    }

    pub fn remove_policy(&mut self, key: &Key<PolicyKey>) -> Result<(), DataplaneError> {
        let mut m = map_mut!(self, MAP_POLICY, LpmTrie<&mut MapData, PolicyKey, PolicyValue>);
        ignore_missing(m.remove(key)).map_err(merr(MAP_POLICY))
    }

    pub fn set_config(&mut self, cfg: Config) -> Result<(), DataplaneError> {
        let mut m = map_mut!(self, MAP_CONFIG, Array<&mut MapData, Config>);
        m.set(0, cfg, 0).map_err(merr(MAP_CONFIG))
    }

    pub fn add_service(
        &mut self,
        ip: IpAddr,
        port: u16,
        protocol: u8,
    ) -> Result<(), DataplaneError> {
        let mut m = map_mut!(self, MAP_SERVICES, HashMap<&mut MapData, ServiceKey, u32>);
        m.insert(service_key(ip, port, protocol), 1, 0)
            .map_err(merr(MAP_SERVICES))
    }

    pub fn remove_service(
        &mut self,
        ip: IpAddr,
        port: u16,
        protocol: u8,
    ) -> Result<(), DataplaneError> {
        let mut m = map_mut!(self, MAP_SERVICES, HashMap<&mut MapData, ServiceKey, u32>);
        ignore_missing(m.remove(&service_key(ip, port, protocol))).map_err(merr(MAP_SERVICES))
    }

    /// Takes every verdict event waiting in the ring buffer.
    pub fn drain_events(&mut self) -> Result<Vec<VerdictEvent>, DataplaneError> {
        let mut ring = map_mut!(self, MAP_EVENTS, RingBuf<&mut MapData>);
        let mut out = Vec::new();
        while let Some(item) = ring.next() {
            if item.len() >= size_of::<VerdictEvent>() {
                // SAFETY: the programs write whole `VerdictEvent`s (repr(C), no invalid bit
                // patterns); read_unaligned copes with the ring buffer's 8-byte alignment.
                out.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<VerdictEvent>()) });
            }
        }
        Ok(out)
    }

    /// Packets counted per drop reason (index 0: passed), summed over CPUs.
    pub fn counters(&mut self) -> Result<Vec<(DropReason, u64)>, DataplaneError> {
        let m = map_mut!(self, MAP_COUNTERS, PerCpuArray<&mut MapData, u64>);
        // A counters map adopted from an older agent may have fewer reasons than this one.
        let size = m.len();
        DropReason::ALL
            .iter()
            .filter(|r| (**r as u32) < size)
            .map(|r| {
                let per_cpu = m.get(&(*r as u32), 0).map_err(merr(MAP_COUNTERS))?;
                Ok((*r, per_cpu.iter().sum()))
            })
            .collect()
    }
}

fn service_key(ip: IpAddr, port: u16, protocol: u8) -> ServiceKey {
    ServiceKey {
        addr: addr16(ip),
        port: port.to_be_bytes(),
        protocol,
        _pad: 0,
    }
}

fn ignore_missing(r: Result<(), aya::maps::MapError>) -> Result<(), aya::maps::MapError> {
    match r {
        Err(aya::maps::MapError::KeyNotFound) => Ok(()),
        Err(aya::maps::MapError::SyscallError(e))
            if e.io_error.raw_os_error() == Some(libc::ENOENT) =>
        {
            Ok(())
        }
        other => other,
    }
}

/// What the pinned maps held when this agent started (written by an earlier agent).
#[derive(Default)]
pub struct Existing {
    pub endpoints: Vec<(u32, Endpoint)>,
    pub policy_keys: Vec<Key<PolicyKey>>,
    pub identities: Vec<(IpNet, u32)>,
    pub services: Vec<ServiceKey>,
}

impl std::fmt::Debug for Existing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Existing")
            .field("endpoints", &self.endpoints.len())
            .field("policy_keys", &self.policy_keys.len())
            .field("identities", &self.identities.len())
            .field("services", &self.services.len())
            .finish()
    }
}

/// The prefix an identity trie key stands for.
pub fn identity_net(key: &Key<IdentityKey>) -> Option<IpNet> {
    let addr = key.data().addr;
    let len = key.prefix_len();
    if addr[..12] == palisade_common::v4_mapped([0; 4])[..12] && len >= 96 {
        let v4 = std::net::Ipv4Addr::new(addr[12], addr[13], addr[14], addr[15]);
        IpNet::new(IpAddr::V4(v4), u8::try_from(len - 96).ok()?).ok()
    } else {
        IpNet::new(
            IpAddr::V6(std::net::Ipv6Addr::from(addr)),
            u8::try_from(len).ok()?,
        )
        .ok()
    }
}

impl Dataplane {
    /// Reads everything the maps hold (for adoption after a restart).
    pub fn existing(&mut self) -> Result<Existing, DataplaneError> {
        let mut out = Existing::default();
        {
            let m = map_mut!(self, MAP_ENDPOINTS, HashMap<&mut MapData, u32, Endpoint>);
            out.endpoints = m.iter().filter_map(Result::ok).collect();
        }
        {
            let m = map_mut!(self, MAP_POLICY, LpmTrie<&mut MapData, PolicyKey, PolicyValue>);
            out.policy_keys = m.keys().filter_map(Result::ok).collect();
        }
        {
            let m = map_mut!(self, MAP_IDENTITY, LpmTrie<&mut MapData, IdentityKey, IdentityValue>);
            out.identities = m
                .iter()
                .filter_map(Result::ok)
                .filter_map(|(k, v)| Some((identity_net(&k)?, v.identity)))
                .collect();
        }
        {
            let m = map_mut!(self, MAP_SERVICES, HashMap<&mut MapData, ServiceKey, u32>);
            out.services = m.keys().filter_map(Result::ok).collect();
        }
        Ok(out)
    }

    /// Removes a Service frontend by its raw key (adoption cleanup).
    pub fn remove_service_key(&mut self, key: &ServiceKey) -> Result<(), DataplaneError> {
        let mut m = map_mut!(self, MAP_SERVICES, HashMap<&mut MapData, ServiceKey, u32>);
        ignore_missing(m.remove(key)).map_err(merr(MAP_SERVICES))
    }
}
