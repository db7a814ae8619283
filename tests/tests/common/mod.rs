//! Shared by the privileged integration tests.
#![allow(
    dead_code,
    reason = "each test binary uses a different subset; `expect` would be unfulfilled in some"
)]

use std::net::SocketAddr;
use std::time::Duration;

use palisade_tests::{CniMode, Family, IpFamily, Pod, Port, ProbeSpec, Proto, TestCluster};

/// Denied probes wait this long; allowed ones answer in about a millisecond.
pub const TIMEOUT: Duration = Duration::from_millis(1500);

pub fn ports() -> Vec<Port> {
    vec![
        Port::tcp(80).named("serve-80-tcp"),
        Port::udp(81).named("serve-81-udp"),
    ]
}

pub fn cluster(family: Family, mode: CniMode) -> TestCluster {
    TestCluster::builder()
        .family(family)
        .nodes(2)
        .cni(mode)
        .probe_bin(env!("CARGO_BIN_EXE_probe"))
        .build()
        .expect("cluster builds")
}

/// What to probe and what must answer.
pub struct Case<'a> {
    pub label: String,
    pub from: &'a Pod,
    pub to: SocketAddr,
    pub proto: Proto,
    /// `Some(key)`: allowed and answered by pod `key`; `None`: must fail.
    pub answered_by: Option<String>,
}

/// Runs all cases at once and asserts each outcome, listing every mismatch.
pub fn check(cluster: &TestCluster, cases: &[Case<'_>]) {
    let specs: Vec<ProbeSpec<'_>> = cases
        .iter()
        .map(|c| ProbeSpec {
            from: c.from,
            to: c.to,
            proto: c.proto,
            timeout: TIMEOUT,
        })
        .collect();
    let outcomes = cluster.probe_many(&specs).expect("probes run");
    let mut bad = Vec::new();
    for (c, o) in cases.iter().zip(&outcomes) {
        let ok = match &c.answered_by {
            Some(key) => {
                o.allowed
                    && o.reply
                        .as_deref()
                        .is_some_and(|r| r.starts_with(&format!("{key} ")))
            }
            None => !o.allowed,
        };
        if o.elapsed_ms > 300.0 {
            eprintln!("slow probe {}: {o:?}", c.label);
        }
        if !ok {
            bad.push(format!(
                "{}: expected {:?}, got {o:?}",
                c.label, c.answered_by
            ));
        }
    }
    assert!(
        bad.is_empty(),
        "{} of {} probes wrong:\n{}",
        bad.len(),
        cases.len(),
        bad.join("\n")
    );
}

/// Pod→pod and pod→ClusterIP, same node, cross node and hairpin, TCP and UDP, per family.
pub fn connectivity(family: Family, mode: CniMode) {
    let cl = cluster(family, mode);
    let a = cl.add_pod(0, "x", "a", &ports()).unwrap();
    let b = cl.add_pod(0, "x", "b", &ports()).unwrap();
    let c = cl.add_pod(1, "y", "c", &ports()).unwrap();
    let svc = |p: &Pod| {
        cl.add_service(
            p.namespace(),
            &format!("s-{}", p.name()),
            &[(80, Proto::Tcp, 80), (81, Proto::Udp, 81)],
            &[p],
        )
        .unwrap()
    };
    let (sa, sb, sc) = (svc(&a), svc(&b), svc(&c));
    let mut cases = Vec::new();
    for &fam in family.ip_families() {
        let targets = [
            ("same-node pod", b.ip(fam).unwrap(), &b),
            ("cross-node pod", c.ip(fam).unwrap(), &c),
            ("same-node svc", sb.cluster_ip(fam).unwrap(), &b),
            ("cross-node svc", sc.cluster_ip(fam).unwrap(), &c),
            ("hairpin svc", sa.cluster_ip(fam).unwrap(), &a),
        ];
        for (what, ip, dst) in targets {
            for (proto, port) in [(Proto::Tcp, 80), (Proto::Udp, 81)] {
                let label = format!("{fam:?} {what} {proto:?}");
                cases.push(Case {
                    label,
                    from: &a,
                    to: SocketAddr::new(ip, port),
                    proto,
                    answered_by: Some(dst.key()),
                });
            }
        }
        // From the other node back, and a closed port that must not answer.
        let to = SocketAddr::new(sa.cluster_ip(fam).unwrap(), 80);
        cases.push(Case {
            label: format!("{fam:?} c->svc a"),
            from: &c,
            to,
            proto: Proto::Tcp,
            answered_by: Some(a.key()),
        });
        let to = SocketAddr::new(b.ip(fam).unwrap(), 82);
        cases.push(Case {
            label: format!("{fam:?} closed port"),
            from: &a,
            to,
            proto: Proto::Tcp,
            answered_by: None,
        });
    }
    check(&cl, &cases);
    assert_eq!(a.ips().len(), family.ip_families().len());
    assert!(a.host_ifindex() > 0 && a.host_veth().starts_with("veth"));
    let _ = IpFamily::Ipv4;
}
