//! The addressing plan: pod CIDRs, node (underlay) IPs and the Service CIDR.
//!
//! Everything lives inside namespaces the harness creates, so the ranges only need to be
//! recognisable, not globally unique. The underlay uses the benchmarking range 198.18.0.0/15
//! (RFC 2544) so that it cannot be mistaken for a real network in captures.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

/// The IP families a cluster runs with (Kubernetes `ipFamilies`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    Ipv4,
    Ipv6,
    Dual,
}

/// One IP family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IpFamily {
    Ipv4,
    Ipv6,
}

impl IpFamily {
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => IpFamily::Ipv4,
            IpAddr::V6(_) => IpFamily::Ipv6,
        }
    }
}

impl Family {
    /// The single families, IPv4 first (the order Kubernetes uses for dual-stack).
    pub fn ip_families(self) -> &'static [IpFamily] {
        match self {
            Family::Ipv4 => &[IpFamily::Ipv4],
            Family::Ipv6 => &[IpFamily::Ipv6],
            Family::Dual => &[IpFamily::Ipv4, IpFamily::Ipv6],
        }
    }

    pub fn has(self, fam: IpFamily) -> bool {
        self.ip_families().contains(&fam)
    }
}

/// The largest node count the plan supports (one /24 of 10.244.0.0/16 per node).
pub const MAX_NODES: usize = 200;

/// All pods of the cluster (kube-proxy's `--cluster-cidr`).
pub fn cluster_cidr(fam: IpFamily) -> IpNet {
    match fam {
        IpFamily::Ipv4 => v4net(Ipv4Addr::new(10, 244, 0, 0), 16),
        IpFamily::Ipv6 => v6net(Ipv6Addr::new(0xfd00, 0x10, 0x244, 0, 0, 0, 0, 0), 56),
    }
}

/// Node `idx`'s pod CIDR: 10.244.<idx>.0/24 and fd00:10:244:<idx>::/64.
pub fn pod_cidr(idx: usize, fam: IpFamily) -> IpNet {
    let i = u8::try_from(idx).expect("node index checked against MAX_NODES");
    match fam {
        IpFamily::Ipv4 => v4net(Ipv4Addr::new(10, 244, i, 0), 24),
        IpFamily::Ipv6 => v6net(
            Ipv6Addr::new(0xfd00, 0x10, 0x244, u16::from(i), 0, 0, 0, 0),
            64,
        ),
    }
}

/// Node `idx`'s address on the underlay, with the underlay's prefix length.
pub fn node_ip(idx: usize, fam: IpFamily) -> IpNet {
    let host = u8::try_from(idx + 1).expect("node index checked against MAX_NODES");
    match fam {
        IpFamily::Ipv4 => v4net(Ipv4Addr::new(198, 18, 0, host), 24),
        IpFamily::Ipv6 => v6net(
            Ipv6Addr::new(0xfd00, 0x198, 0x18, 0, 0, 0, 0, u16::from(host)),
            64,
        ),
    }
}

/// The Service CIDR (kube-apiserver `--service-cluster-ip-range`).
pub fn service_cidr(fam: IpFamily) -> IpNet {
    match fam {
        IpFamily::Ipv4 => v4net(Ipv4Addr::new(10, 96, 0, 0), 16),
        IpFamily::Ipv6 => v6net(Ipv6Addr::new(0xfd00, 0x96, 0, 0, 0, 0, 0, 0), 112),
    }
}

/// The `n`th ClusterIP handed out (10.96.0.10, 10.96.0.11, ...; the first ten are left free
/// as in a real cluster, where .1 is the API server and .10 DNS).
pub fn cluster_ip(n: u32, fam: IpFamily) -> IpAddr {
    let offset = 10 + n;
    match service_cidr(fam) {
        IpNet::V4(net) => IpAddr::V4(Ipv4Addr::from(u32::from(net.network()) + offset)),
        IpNet::V6(net) => IpAddr::V6(Ipv6Addr::from(
            u128::from(net.network()) + u128::from(offset),
        )),
    }
}

fn v4net(addr: Ipv4Addr, len: u8) -> IpNet {
    IpNet::V4(Ipv4Net::new(addr, len).expect("valid constant prefix"))
}

fn v6net(addr: Ipv6Addr, len: u8) -> IpNet {
    IpNet::V6(Ipv6Net::new(addr, len).expect("valid constant prefix"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_is_disjoint_and_inside_cluster_cidr() {
        for fam in [IpFamily::Ipv4, IpFamily::Ipv6] {
            let a = pod_cidr(0, fam);
            let b = pod_cidr(1, fam);
            assert!(!a.contains(&b.network()) && !b.contains(&a.network()));
            assert!(cluster_cidr(fam).contains(&a) && cluster_cidr(fam).contains(&b));
            assert!(!cluster_cidr(fam).contains(&node_ip(0, fam).addr()));
            assert!(service_cidr(fam).contains(&cluster_ip(0, fam)));
        }
        assert_eq!(cluster_ip(0, IpFamily::Ipv4).to_string(), "10.96.0.10");
        assert_eq!(cluster_ip(6, IpFamily::Ipv6).to_string(), "fd00:96::10");
        assert_eq!(
            pod_cidr(3, IpFamily::Ipv6).to_string(),
            "fd00:10:244:3::/64"
        );
        assert_eq!(node_ip(1, IpFamily::Ipv4).to_string(), "198.18.0.2/24");
    }
}
