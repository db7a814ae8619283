//! What the flow log needs to name things: endpoints by host ifindex (with the policies isolating
//! them), pods by IP, rules by id. Rebuilt after each sync from the compiled output and the model,
//! so a log line names the policy as it was when the verdict's rule ids were written.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv6Addr},
};

use palisade_common::verdict::Direction;

use crate::{
    compiler::{CompiledOutput, RuleRef},
    model::{Model, ObjectKey},
    sync::Attachment,
};

/// One local endpoint as the flow log names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointName {
    pub pod: ObjectKey,
    pub ingress_isolated_by: Vec<ObjectKey>,
    pub egress_isolated_by: Vec<ObjectKey>,
}

impl EndpointName {
    pub fn isolated_by(&self, dir: Direction) -> &[ObjectKey] {
        match dir {
            Direction::Ingress => &self.ingress_isolated_by,
            Direction::Egress => &self.egress_isolated_by,
        }
    }
}

/// The naming snapshot.
#[derive(Debug, Clone, Default)]
pub struct Names {
    pub node: String,
    pub rules: BTreeMap<u32, RuleRef>,
    pub endpoints: BTreeMap<u32, EndpointName>,
    pub pods: BTreeMap<IpAddr, ObjectKey>,
}

impl Names {
    pub fn new(
        node: &str,
        out: &CompiledOutput,
        model: &Model,
        attached: &BTreeMap<ObjectKey, Attachment>,
    ) -> Self {
        let endpoints = attached
            .iter()
            .map(|(key, att)| {
                let ep = out.endpoints.get(key);
                let by = |f: fn(&crate::compiler::EndpointPolicy) -> &Vec<ObjectKey>| {
                    ep.map(|e| f(e).clone()).unwrap_or_default()
                };
                let name = EndpointName {
                    pod: key.clone(),
                    ingress_isolated_by: by(|e| &e.ingress.isolated_by),
                    egress_isolated_by: by(|e| &e.egress.isolated_by),
                };
                (att.ifindex, name)
            })
            .collect();
        let pods = model
            .pods
            .values()
            .filter(|p| !p.host_network)
            .flat_map(|p| p.ips.iter().map(move |ip| (*ip, p.key())))
            .collect();
        Self {
            node: node.to_owned(),
            rules: out.rules.clone(),
            endpoints,
            pods,
        }
    }

    pub fn pod(&self, ip: IpAddr) -> Option<&ObjectKey> {
        self.pods.get(&ip)
    }
}

/// An address in the programs' 16-byte form (IPv4 as IPv4-mapped IPv6) as an `IpAddr`.
pub fn ip_of(addr: [u8; 16]) -> IpAddr {
    let v6 = Ipv6Addr::from(addr);
    v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
}

/// The IANA name of an IP protocol number (as the flow log prints it).
pub fn protocol_name(number: u8) -> String {
    match number {
        1 => "ICMP".to_owned(),
        6 => "TCP".to_owned(),
        17 => "UDP".to_owned(),
        58 => "ICMPv6".to_owned(),
        132 => "SCTP".to_owned(),
        n => n.to_string(),
    }
}
