//! Read-only views of the maps for observability: audited-packet counters, occupancy and
//! capacity, and single lookups done the way the programs do them (for live `explain`, which
//! checks that the maps agree with the model).

use std::net::IpAddr;

use aya::maps::{lpm_trie::Key, Array, HashMap, LpmTrie, MapData, MapInfo, PerCpuArray};
use palisade_common::{
    conntrack::{CtKey, CtValue, MAP_CONNTRACK},
    endpoint::{Config, Endpoint, MAP_CONFIG, MAP_ENDPOINTS, MAP_SERVICES},
    event::MAP_AUDITED,
    identity::{IdentityKey, IdentityValue, MAP_IDENTITY},
    policy::{PolicyKey, PolicyValue, MAP_POLICY, PREFIX_FULL},
    verdict::DropReason,
};

use super::{attach::Hook, maps::addr16, Dataplane, DataplaneError};

/// A map whose occupancy and capacity are reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MapKind {
    Endpoints,
    Identities,
    Policy,
    Conntrack,
    Services,
}

impl MapKind {
    pub const ALL: [MapKind; 5] = [
        MapKind::Endpoints,
        MapKind::Identities,
        MapKind::Policy,
        MapKind::Conntrack,
        MapKind::Services,
    ];

    /// A stable lower-case name for metrics and status.
    pub const fn label(self) -> &'static str {
        match self {
            MapKind::Endpoints => "endpoints",
            MapKind::Identities => "identities",
            MapKind::Policy => "policy",
            MapKind::Conntrack => "conntrack",
            MapKind::Services => "services",
        }
    }

    const fn map_name(self) -> &'static str {
        match self {
            MapKind::Endpoints => MAP_ENDPOINTS,
            MapKind::Identities => MAP_IDENTITY,
            MapKind::Policy => MAP_POLICY,
            MapKind::Conntrack => MAP_CONNTRACK,
            MapKind::Services => MAP_SERVICES,
        }
    }
}

fn merr(name: &'static str) -> impl Fn(aya::maps::MapError) -> DataplaneError {
    move |source| DataplaneError::Map { name, source }
}

fn found<T>(
    r: Result<T, aya::maps::MapError>,
    name: &'static str,
) -> Result<Option<T>, DataplaneError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(aya::maps::MapError::KeyNotFound) => Ok(None),
        Err(aya::maps::MapError::SyscallError(e))
            if e.io_error.raw_os_error() == Some(libc::ENOENT) =>
        {
            Ok(None)
        }
        Err(e) => Err(merr(name)(e)),
    }
}

impl Dataplane {
    fn map_ref(&self, name: &'static str) -> Result<&aya::maps::Map, DataplaneError> {
        self.ebpf.map(name).ok_or(DataplaneError::MissingMap(name))
    }

    /// Packets passed in audit mode per would-be drop reason, summed over CPUs.
    pub fn audited_counters(&self) -> Result<Vec<(DropReason, u64)>, DataplaneError> {
        let m: PerCpuArray<&MapData, u64> = self
            .map_ref(MAP_AUDITED)?
            .try_into()
            .map_err(merr(MAP_AUDITED))?;
        // A counters map adopted from an older agent may have fewer reasons than this one.
        let size = m.len();
        DropReason::ALL
            .iter()
            .filter(|r| (**r as u32) < size)
            .map(|r| {
                let per_cpu = m.get(&(*r as u32), 0).map_err(merr(MAP_AUDITED))?;
                Ok((*r, per_cpu.iter().sum()))
            })
            .collect()
    }

    /// The `max_entries` the kernel gave a map (adopted maps keep the size they were made with).
    pub fn capacity(&self, kind: MapKind) -> Option<u32> {
        let path = self.root.join("maps").join(kind.map_name());
        MapInfo::from_pin(path).ok().map(|i| i.max_entries())
    }

    /// Entries in the conntrack table, counted by walking its keys (one syscall per entry: call
    /// it seldom). Stops counting at `limit`.
    pub fn conntrack_entries(&self, limit: usize) -> Result<u64, DataplaneError> {
        let m: HashMap<&MapData, CtKey, CtValue> = self
            .map_ref(MAP_CONNTRACK)?
            .try_into()
            .map_err(merr(MAP_CONNTRACK))?;
        Ok(m.keys().take(limit).filter(Result::is_ok).count() as u64)
    }

    /// The endpoint record of a host interface, as the programs read it.
    pub fn endpoint_record(&self, ifindex: u32) -> Result<Option<Endpoint>, DataplaneError> {
        let m: HashMap<&MapData, u32, Endpoint> = self
            .map_ref(MAP_ENDPOINTS)?
            .try_into()
            .map_err(merr(MAP_ENDPOINTS))?;
        found(m.get(&ifindex, 0), MAP_ENDPOINTS)
    }

    /// The identity the programs give `ip` (longest prefix match), `None` = WORLD.
    pub fn identity_of(&self, ip: IpAddr) -> Result<Option<u32>, DataplaneError> {
        let m: LpmTrie<&MapData, IdentityKey, IdentityValue> = self
            .map_ref(MAP_IDENTITY)?
            .try_into()
            .map_err(merr(MAP_IDENTITY))?;
        let key = Key::new(128, IdentityKey { addr: addr16(ip) });
        Ok(found(m.get(&key, 0), MAP_IDENTITY)?.map(|v| v.identity))
    }

    /// The policy entry the programs find for `{table, identity, protocol, port}` (longest
    /// prefix match; one lookup, the caller tries the exact identity and then ANY).
    pub fn policy_entry(
        &self,
        table: u32,
        identity: u32,
        protocol: u8,
        port: u16,
    ) -> Result<Option<PolicyValue>, DataplaneError> {
        let m: LpmTrie<&MapData, PolicyKey, PolicyValue> = self
            .map_ref(MAP_POLICY)?
            .try_into()
            .map_err(merr(MAP_POLICY))?;
        let key = Key::new(PREFIX_FULL, PolicyKey::new(table, identity, protocol, port));
        found(m.get(&key, 0), MAP_POLICY)
    }

    /// How the programs sit on an endpoint's interface: `tcx` (a pinned link) or `clsact`.
    pub fn attach_mode_of(&self, ifindex: u32) -> &'static str {
        if self.link_path(ifindex, Hook::FromPod).exists() {
            "tcx"
        } else {
            "clsact"
        }
    }

    /// The node-wide settings the programs read.
    pub fn config(&self) -> Result<Config, DataplaneError> {
        let m: Array<&MapData, Config> = self
            .map_ref(MAP_CONFIG)?
            .try_into()
            .map_err(merr(MAP_CONFIG))?;
        m.get(&0, 0).map_err(merr(MAP_CONFIG))
    }
}
