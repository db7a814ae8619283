//! ClusterIP Services the way kube-proxy's iptables mode programs them.
//!
//! Per node namespace and IP family: `nat` PREROUTING and OUTPUT jump to KUBE-SERVICES, which
//! matches ClusterIP:port and jumps to a per-port KUBE-SVC chain; that picks an endpoint with
//! `statistic --mode random` (probability 1/n, 1/(n-1), ..., last unconditional) and jumps to
//! a KUBE-SEP chain that DNATs to podIP:targetPort. An endpoint reaching itself through its
//! Service (hairpin) is marked 0x4000 by KUBE-MARK-MASQ and masqueraded in KUBE-POSTROUTING.
//! Every sync rewrites all KUBE-SVC/SEP chains in one `iptables-restore --noflush`, which is
//! atomic, and deletes the chains the previous sync had but this one does not (as kube-proxy).
//! SCTP ports are matched with `-p sctp -m sctp --dport` (the kernel needs `xt_sctp` and
//! SCTP conntrack/NAT, as kube-proxy's SCTP Services do).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::IpAddr;

use crate::addr::IpFamily;
use crate::exec::{self, ExecError};
use crate::netns::{self, NetnsError};
use crate::probe::Proto;

/// kube-proxy's masquerade mark bit.
pub const MASQ_MARK: u32 = 0x4000;

/// One `ports` entry of a Service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServicePort {
    pub port: u16,
    pub proto: Proto,
    pub target_port: u16,
}

/// One endpoint: the pod (`ns/name`) and its IPs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend {
    pub pod: String,
    pub ips: Vec<IpAddr>,
}

/// A ClusterIP Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    pub namespace: String,
    pub name: String,
    /// One per cluster IP family, IPv4 first.
    pub cluster_ips: Vec<IpAddr>,
    pub ports: Vec<ServicePort>,
    pub backends: Vec<Backend>,
    /// Unique within the cluster; names the chains.
    pub id: u32,
}

impl Service {
    /// The ClusterIP of one family, if the Service has that family.
    pub fn cluster_ip(&self, fam: IpFamily) -> Option<IpAddr> {
        self.cluster_ips
            .iter()
            .copied()
            .find(|ip| IpFamily::of(*ip) == fam)
    }
}

/// Programming the rules failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("cannot enter node namespace: {0}")]
    Netns(#[from] NetnsError),
    #[error("programming Service rules: {source}\nrules were:\n{rules}")]
    Restore {
        rules: String,
        #[source]
        source: ExecError,
    },
}

fn restore_bin(fam: IpFamily) -> &'static str {
    match fam {
        IpFamily::Ipv4 => "iptables-restore",
        IpFamily::Ipv6 => "ip6tables-restore",
    }
}

/// Feeds `rules` to (ip6)iptables-restore --noflush inside `node_ns`.
pub fn apply(node_ns: &str, fam: IpFamily, rules: &str) -> Result<(), ServiceError> {
    let mut cmd = netns::command_in(node_ns, restore_bin(fam))?;
    cmd.args(["-w", "5", "--noflush"]);
    exec::run_with_input(&mut cmd, rules.as_bytes())
        .map(drop)
        .map_err(|source| ServiceError::Restore {
            rules: rules.to_owned(),
            source,
        })
}

/// The fixed part, installed once per node and family: base chains and the hooks into them.
pub fn bootstrap_rules() -> String {
    format!(
        "*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-POSTROUTING - [0:0]\n:KUBE-MARK-MASQ - [0:0]\n\
         -A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
         -A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
         -A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING\n\
         -A KUBE-MARK-MASQ -j MARK --or-mark {MASQ_MARK:#x}\n\
         -A KUBE-POSTROUTING -m mark ! --mark {MASQ_MARK:#x}/{MASQ_MARK:#x} -j RETURN\n\
         -A KUBE-POSTROUTING -j MARK --xor-mark {MASQ_MARK:#x}\n\
         -A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE\n\
         COMMIT\n"
    )
}

/// The chains and rules of every Service for one family. Returns the rules and the set of
/// per-service chains they define; `previous` is that set from the last sync (deleted if gone).
pub fn render(
    fam: IpFamily,
    services: &[&Service],
    previous: &BTreeSet<String>,
) -> (String, BTreeSet<String>) {
    let mut chains = BTreeSet::new();
    let mut rules = String::new();
    for svc in services {
        let Some(cip) = svc.cluster_ip(fam) else {
            continue;
        };
        for (pi, port) in svc.ports.iter().enumerate() {
            render_port(svc, pi, *port, cip, fam, &mut chains, &mut rules);
        }
    }
    let mut out = String::from("*nat\n:KUBE-SERVICES - [0:0]\n");
    // Stale chains are declared (flushed) too: nf_tables refuses to delete a chain that still
    // has rules, even ones removed earlier in the same transaction.
    for chain in chains.union(previous) {
        let _ = writeln!(out, ":{chain} - [0:0]");
    }
    out.push_str(&rules);
    for gone in previous.difference(&chains) {
        let _ = writeln!(out, "-X {gone}");
    }
    out.push_str("COMMIT\n");
    (out, chains)
}

fn render_port(
    svc: &Service,
    pi: usize,
    port: ServicePort,
    cip: IpAddr,
    fam: IpFamily,
    chains: &mut BTreeSet<String>,
    rules: &mut String,
) {
    let p = port.proto.as_str();
    let host = host_prefix(cip);
    let comment = format!("{}/{}:{}-{p}", svc.namespace, svc.name, port.port);
    let endpoints: Vec<IpAddr> = svc
        .backends
        .iter()
        .filter_map(|b| b.ips.iter().copied().find(|ip| IpFamily::of(*ip) == fam))
        .collect();
    if endpoints.is_empty() {
        // kube-proxy REJECTs in the filter table; without a DNAT the probe simply fails.
        return;
    }
    let svc_chain = format!("KUBE-SVC-S{}P{pi}", svc.id);
    chains.insert(svc_chain.clone());
    let _ = writeln!(
        rules,
        "-A KUBE-SERVICES -d {host} -p {p} -m comment --comment \"{comment} cluster IP\" -m {p} --dport {} -j {svc_chain}",
        port.port
    );
    let n = endpoints.len();
    for (ei, ep) in endpoints.iter().enumerate() {
        let sep = format!("KUBE-SEP-S{}P{pi}E{ei}", svc.id);
        chains.insert(sep.clone());
        let pick = if ei + 1 < n {
            format!(
                "-m statistic --mode random --probability {:.11} ",
                1.0 / (n - ei) as f64
            )
        } else {
            String::new()
        };
        let _ = writeln!(
            rules,
            "-A {svc_chain} -m comment --comment \"{comment}\" {pick}-j {sep}"
        );
        let _ = writeln!(rules, "-A {sep} -s {} -j KUBE-MARK-MASQ", host_prefix(*ep));
        let _ = writeln!(
            rules,
            "-A {sep} -p {p} -m {p} -j DNAT --to-destination {}",
            std::net::SocketAddr::new(*ep, port.target_port)
        );
    }
}

fn host_prefix(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(_) => format!("{ip}/32"),
        IpAddr::V6(_) => format!("{ip}/128"),
    }
}

/// Deletes UDP conntrack entries to a ClusterIP, as kube-proxy does when a UDP Service's
/// endpoints change (otherwise datagrams keep going to a deleted backend). Best effort.
pub fn flush_udp_conntrack(node_ns: &str, cluster_ip: IpAddr) {
    let Ok(mut cmd) = netns::command_in(node_ns, "conntrack") else {
        return;
    };
    let ip = cluster_ip.to_string();
    cmd.args(["-D", "-p", "udp", "--orig-dst", &ip]);
    // Exit status 1 with "0 flow entries" is the common, harmless case.
    let _ = exec::run(&mut cmd);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(backends: &[&str]) -> Service {
        Service {
            namespace: "x".into(),
            name: "s-x-a".into(),
            cluster_ips: vec!["10.96.0.10".parse().unwrap(), "fd00:96::a".parse().unwrap()],
            ports: vec![ServicePort {
                port: 80,
                proto: Proto::Tcp,
                target_port: 8080,
            }],
            backends: backends
                .iter()
                .map(|ip| Backend {
                    pod: "x/a".into(),
                    ips: vec![ip.parse().unwrap()],
                })
                .collect(),
            id: 7,
        }
    }

    #[test]
    fn renders_statistic_chain_and_dnat() {
        let s = svc(&["10.244.0.2", "10.244.1.2"]);
        let (rules, chains) = render(IpFamily::Ipv4, &[&s], &BTreeSet::new());
        assert_eq!(chains.len(), 3);
        assert!(rules.contains("-d 10.96.0.10/32 -p tcp"), "{rules}");
        assert!(
            rules.contains("--probability 0.50000000000 -j KUBE-SEP-S7P0E0"),
            "{rules}"
        );
        assert!(rules.contains(
            "-A KUBE-SVC-S7P0 -m comment --comment \"x/s-x-a:80-tcp\" -j KUBE-SEP-S7P0E1"
        ));
        assert!(rules.contains("-A KUBE-SEP-S7P0E1 -s 10.244.1.2/32 -j KUBE-MARK-MASQ"));
        assert!(rules.contains("DNAT --to-destination 10.244.1.2:8080"));
    }

    #[test]
    fn ipv6_uses_brackets_and_stale_chains_are_deleted() {
        let s = svc(&["fd00:10:244::2"]);
        let prev: BTreeSet<String> = ["KUBE-SVC-S1P0".to_owned()].into();
        let (rules, _) = render(IpFamily::Ipv6, &[&s], &prev);
        assert!(
            rules.contains("--to-destination [fd00:10:244::2]:8080"),
            "{rules}"
        );
        assert!(rules.contains("-d fd00:96::a/128"));
        assert!(rules.contains("-X KUBE-SVC-S1P0\n"));
        let (v4, chains) = render(IpFamily::Ipv4, &[&s], &BTreeSet::new());
        assert!(chains.is_empty() && !v4.contains("DNAT"));
    }

    #[test]
    fn sctp_ports_use_the_sctp_match() {
        let mut s = svc(&["10.244.0.2"]);
        s.ports[0].proto = Proto::Sctp;
        let (rules, _) = render(IpFamily::Ipv4, &[&s], &BTreeSet::new());
        assert!(
            rules.contains("-d 10.96.0.10/32 -p sctp -m comment --comment \"x/s-x-a:80-sctp cluster IP\" -m sctp --dport 80"),
            "{rules}"
        );
        assert!(rules.contains("-p sctp -m sctp -j DNAT --to-destination 10.244.0.2:8080"));
    }
}
