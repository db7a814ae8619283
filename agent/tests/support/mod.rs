//! Shared fixtures of the agent's privileged tests.
#![allow(dead_code, reason = "each test binary uses a different subset")]

pub mod nodes;

use std::net::IpAddr;

use ipnet::IpNet;
use palisade::dataplane::{Dataplane, Hook, PortBlock, PrivateBpffs};
use palisade_common::{
    craft::Addr,
    endpoint::{Config, Endpoint, CFG_ALLOW_HOST},
    policy::{Action, PolicyValue},
    verdict::DropReason,
};

/// How the agent attaches on the running kernel: `tcx` from Linux 6.6 on, legacy `clsact`
/// before (`cargo xtask vm-test` runs these tests on 6.1).
pub fn expected_attach() -> &'static str {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut v = release
        .trim()
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    if (v.next().unwrap_or(0), v.next().unwrap_or(0)) >= (6, 6) {
        "tcx"
    } else {
        "clsact"
    }
}

pub const OK: u32 = 0;
pub const SHOT: u32 = 2;

/// A dataplane loaded into a private bpffs (fresh maps), dropped with it.
pub struct Fixture {
    pub dp: Dataplane,
    _fs: PrivateBpffs,
}

impl Fixture {
    pub fn new(label: &str) -> Self {
        let fs = PrivateBpffs::new(label).expect("mount private bpffs");
        let mut dp = Dataplane::load(fs.path()).expect("load dataplane");
        dp.set_config(Config {
            flags: CFG_ALLOW_HOST,
            allow_events_per_sec: 0,
        })
        .expect("config");
        Self { dp, _fs: fs }
    }

    /// A fixture around a dataplane the caller loaded (for custom map sizes).
    pub fn from_parts(dp: Dataplane, fs: PrivateBpffs) -> Self {
        let mut f = Self { dp, _fs: fs };
        f.dp.set_config(Config {
            flags: CFG_ALLOW_HOST,
            allow_events_per_sec: 0,
        })
        .expect("config");
        f
    }

    /// Registers the endpoint that `BPF_PROG_TEST_RUN` packets belong to (loopback, ifindex 1).
    pub fn endpoint(&mut self, flags: u32, generation: u32) -> Endpoint {
        let ep = Endpoint {
            slot: 1,
            ingress_table: 10,
            egress_table: 11,
            flags,
            generation,
            identity: 300,
            identity6: 300,
            _pad: 0,
        };
        self.dp.set_endpoint(1, &ep).expect("endpoint");
        ep
    }

    pub fn identity(&mut self, net: &str, id: u32) {
        self.dp
            .set_identity(net.parse::<IpNet>().expect("net"), id)
            .expect("identity");
    }

    pub fn allow(
        &mut self,
        table: u32,
        identity: u32,
        proto: Option<u8>,
        ports: Option<PortBlock>,
        rule: u32,
    ) {
        let key = palisade::dataplane::policy_key(table, identity, proto, ports);
        let value = PolicyValue {
            rule_id: rule,
            action: Action::Allow as u8,
            tier: 0,
            _pad: [0; 2],
        };
        self.dp.set_policy(&key, value).expect("policy");
    }

    pub fn run(&mut self, hook: Hook, frame: &[u8]) -> u32 {
        self.dp
            .test_run(hook, frame, 0, 1)
            .expect("test run")
            .action
    }

    pub fn count(&mut self, reason: DropReason) -> u64 {
        self.dp
            .counters()
            .expect("counters")
            .into_iter()
            .find(|(r, _)| *r == reason)
            .map_or(0, |(_, n)| n)
    }
}

pub fn v4(s: &str) -> Addr {
    match s.parse::<IpAddr>().expect("ip") {
        IpAddr::V4(a) => Addr::V4(a.octets()),
        IpAddr::V6(a) => Addr::V6(a.octets()),
    }
}

pub fn is_root() -> bool {
    // SAFETY: no preconditions.
    unsafe { libc::geteuid() == 0 }
}
