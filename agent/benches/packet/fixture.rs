//! One benchmark configuration: a dataplane loaded into a private bpffs with `rules` policy
//! entries in the endpoint's ingress table and `peers` dual-stack peer addresses in the identity
//! trie, plus the frames of each measured path.

use std::{net::IpAddr, path::PathBuf};

use anyhow::Context as _;
use ipnet::IpNet;
use palisade::dataplane::{policy_key, Dataplane, PortBlock, PrivateBpffs};
use palisade_common::{
    conntrack::{TCP_ACK, TCP_SYN},
    craft::{Addr, Frame},
    endpoint::{Config, Endpoint, CFG_ALLOW_HOST, EP_EGRESS_ISOLATED, EP_INGRESS_ISOLATED},
    identity::IDENTITY_FIRST_DYNAMIC,
    policy::{Action, PolicyValue},
    proto,
};
use serde::Serialize;

use crate::maps::{map_memory, MapMemory};

/// The endpoint's ingress policy table.
const INGRESS_TABLE: u32 = 10;
/// A port that no rule allows (the denied path misses both the exact and the any-peer entry).
pub const DENIED_PORT: u16 = 65_000;

/// IP family of the measured packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    pub const BOTH: [Family; 2] = [Family::Ipv4, Family::Ipv6];

    pub fn name(self) -> &'static str {
        match self {
            Family::Ipv4 => "ipv4",
            Family::Ipv6 => "ipv6",
        }
    }

    /// The benchmark pod's own address.
    fn pod(self) -> IpAddr {
        match self {
            Family::Ipv4 => IpAddr::from([10, 244, 0, 10]),
            Family::Ipv6 => IpAddr::from([0xfd00, 0x10, 0x244, 0, 0, 0, 0, 0x0a]),
        }
    }

    /// Peer number `j` (up to 2^24 of them).
    fn peer(self, j: u32) -> IpAddr {
        let [_, a, b, c] = j.to_be_bytes();
        match self {
            Family::Ipv4 => IpAddr::from([10, 100 + a, b, c]),
            Family::Ipv6 => IpAddr::from([
                0xfd00,
                0xaa,
                0,
                0,
                0,
                u16::from(a),
                u16::from(b),
                u16::from(c),
            ]),
        }
    }
}

fn addr(ip: IpAddr) -> Addr {
    match ip {
        IpAddr::V4(a) => Addr::V4(a.octets()),
        IpAddr::V6(a) => Addr::V6(a.octets()),
    }
}

/// The loaded dataplane of one configuration.
pub struct Fixture {
    pub dp: Dataplane,
    pub rules: u32,
    pub peers: u32,
    /// The measured flow: peer index and the allowed destination port.
    pub peer: u32,
    pub port: u16,
    maps_dir: PathBuf,
    _fs: PrivateBpffs,
}

impl Fixture {
    /// Loads a fresh dataplane and fills its maps.
    pub fn new(rules: u32, peers: u32) -> anyhow::Result<Self> {
        let fs = PrivateBpffs::new("bench").context("mounting a private bpffs")?;
        let mut dp = Dataplane::load(fs.path()).context("loading the dataplane")?;
        dp.set_config(Config {
            // As the agent runs by default: host traffic allowed, no allow events.
            flags: CFG_ALLOW_HOST,
            ..Config::default()
        })?;
        // BPF_PROG_TEST_RUN gives the skb the loopback device: the endpoint is ifindex 1.
        dp.set_endpoint(
            1,
            &Endpoint {
                slot: 1,
                ingress_table: INGRESS_TABLE,
                egress_table: INGRESS_TABLE + 1,
                flags: EP_INGRESS_ISOLATED | EP_EGRESS_ISOLATED,
                generation: 1,
                identity: IDENTITY_FIRST_DYNAMIC - 1,
                ..Endpoint::default()
            },
        )?;
        for j in 0..peers {
            for fam in Family::BOTH {
                let ip = fam.peer(j);
                dp.set_identity(IpNet::from(ip), IDENTITY_FIRST_DYNAMIC + j)?;
            }
        }
        // Rule i: identity of peer (i mod peers), TCP port 1 + i / peers. Every entry is distinct.
        for i in 0..rules {
            let key = policy_key(
                INGRESS_TABLE,
                IDENTITY_FIRST_DYNAMIC + i % peers,
                Some(proto::TCP),
                Some(PortBlock {
                    port: rule_port(i, peers),
                    prefix_len: 16,
                }),
            );
            let value = PolicyValue {
                rule_id: i + 1,
                action: Action::Allow as u8,
                tier: 0,
                _pad: [0; 2],
            };
            dp.set_policy(&key, value)?;
        }
        let target = rules / 2;
        let maps_dir = dp.pin_root().join("maps");
        Ok(Self {
            dp,
            rules,
            peers,
            peer: target % peers,
            port: rule_port(target, peers),
            maps_dir,
            _fs: fs,
        })
    }

    /// A packet from the peer to the pod (what the pod receives: the `ToPod` hook).
    pub fn inbound(&self, fam: Family, sport: u16, dport: u16, flags: u8) -> Vec<u8> {
        Frame::tcp(
            addr(fam.peer(self.peer)),
            addr(fam.pod()),
            sport,
            dport,
            flags,
        )
        .build()
    }

    /// The pod's reply to [`Self::inbound`] (what the pod sends: the `FromPod` hook).
    pub fn reply(&self, fam: Family, sport: u16) -> Vec<u8> {
        Frame::tcp(
            addr(fam.pod()),
            addr(fam.peer(self.peer)),
            self.port,
            sport,
            TCP_ACK,
        )
        .build()
    }

    pub fn syn(&self, fam: Family, sport: u16) -> Vec<u8> {
        self.inbound(fam, sport, self.port, TCP_SYN)
    }

    pub fn ack(&self, fam: Family, sport: u16) -> Vec<u8> {
        self.inbound(fam, sport, self.port, TCP_ACK)
    }

    pub fn denied(&self, fam: Family, sport: u16) -> Vec<u8> {
        self.inbound(fam, sport, DENIED_PORT, TCP_SYN)
    }

    /// Consumes every pending verdict event, as the agent's flow log would; returns how many.
    pub fn drain_events(&mut self) -> anyhow::Result<u64> {
        Ok(self.dp.drain_events()?.len() as u64)
    }

    /// Every pinned map with its kernel-accounted memory.
    pub fn map_memory(&self) -> anyhow::Result<Vec<MapMemory>> {
        map_memory(&self.maps_dir)
    }
}

/// The destination port of rule `i`.
fn rule_port(i: u32, peers: u32) -> u16 {
    u16::try_from(1 + i / peers.max(1)).unwrap_or(u16::MAX - 1)
}
