//! Service behaviour beyond plain connectivity: load balancing, endpoint changes, hairpin
//! masquerade, chained CNI plugins and the node-side view the agent gets. Needs root.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;

use common::TIMEOUT;
use palisade_tests::{require_root, CniMode, Family, IpFamily, ProbeSpec, Proto, TestCluster};

fn answers(
    cl: &TestCluster,
    from: &palisade_tests::Pod,
    to: SocketAddr,
    n: usize,
) -> Vec<Option<String>> {
    let spec = ProbeSpec {
        from,
        to,
        proto: Proto::Tcp,
        timeout: TIMEOUT,
    };
    let specs = vec![spec; n];
    let out = cl.probe_many(&specs).unwrap();
    out.into_iter()
        .map(|o| o.reply.map(|r| r.split(' ').next().unwrap().to_owned()))
        .collect()
}

#[test]
#[ignore = "privileged: needs root (cargo xtask test runs it)"]
fn endpoints_balance_and_follow_pod_removal() {
    require_root!();
    let cl = common::cluster(Family::Ipv4, CniMode::Bridge);
    let a = cl.add_pod(0, "x", "a", &common::ports()).unwrap();
    let b = cl.add_pod(1, "x", "b", &common::ports()).unwrap();
    let c = cl.add_pod(0, "y", "c", &common::ports()).unwrap();
    let svc = cl
        .add_service("x", "ab", &[(8080, Proto::Tcp, 80)], &[&a, &b])
        .unwrap();
    let to = SocketAddr::new(svc.cluster_ip(IpFamily::Ipv4).unwrap(), 8080);
    let seen: BTreeSet<_> = answers(&cl, &c, to, 24).into_iter().collect();
    let both: BTreeSet<_> = [Some("x/a".to_owned()), Some("x/b".to_owned())].into();
    assert_eq!(
        seen, both,
        "statistic mode should spread over both endpoints"
    );
    cl.remove_pod("x", "b").unwrap();
    assert_eq!(cl.service("x", "ab").unwrap().backends.len(), 1);
    assert!(answers(&cl, &c, to, 6)
        .iter()
        .all(|r| r.as_deref() == Some("x/a")));
    cl.set_service_backends("x", "ab", &[]).unwrap();
    assert!(
        answers(&cl, &c, to, 1)[0].is_none(),
        "no endpoints, no answer"
    );
    // A deleted pod's name can be reused, as the conformance runner's create_pod does.
    let b2 = cl.add_pod(0, "x", "b", &common::ports()).unwrap();
    cl.set_service_backends("x", "ab", &[&b2]).unwrap();
    assert_eq!(answers(&cl, &c, to, 1)[0].as_deref(), Some("x/b"));
    cl.remove_service("x", "ab").unwrap();
    assert!(answers(&cl, &c, to, 1)[0].is_none());
}

fn masquerade_packets(cl: &TestCluster, fam: &str) -> u64 {
    let bin = if fam == "4" { "iptables" } else { "ip6tables" };
    let out = cl
        .node_command(0, bin)
        .unwrap()
        .args([
            "-w",
            "-t",
            "nat",
            "-L",
            "KUBE-POSTROUTING",
            "-v",
            "-x",
            "-n",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("MASQUERADE"))
        .expect("masquerade rule");
    line.split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
#[ignore = "privileged: needs root (cargo xtask test runs it)"]
fn hairpin_is_masqueraded_in_both_modes() {
    require_root!();
    for mode in [CniMode::Bridge, CniMode::Ptp] {
        let cl = common::cluster(Family::Dual, mode);
        let a = cl.add_pod(0, "x", "a", &common::ports()).unwrap();
        let svc = cl
            .add_service("x", "s-x-a", &[(80, Proto::Tcp, 80)], &[&a])
            .unwrap();
        for (fam, f) in [(IpFamily::Ipv4, "4"), (IpFamily::Ipv6, "6")] {
            let to = SocketAddr::new(svc.cluster_ip(fam).unwrap(), 80);
            assert_eq!(
                answers(&cl, &a, to, 1)[0].as_deref(),
                Some("x/a"),
                "{mode:?} {fam:?}"
            );
            assert!(
                masquerade_packets(&cl, f) >= 1,
                "{mode:?} {fam:?}: hairpin not masqueraded"
            );
        }
    }
}

#[test]
#[ignore = "privileged: needs root (cargo xtask test runs it)"]
fn node_view_matches_pods() {
    require_root!();
    let cl = common::cluster(Family::Ipv4, CniMode::Ptp);
    let a = cl.add_pod(1, "x", "a", &common::ports()).unwrap();
    let (veth, idx) = (a.host_veth().to_owned(), a.host_ifindex());
    let found = cl
        .run_in_node(1, move || {
            let name = std::ffi::CString::new(veth).unwrap();
            // SAFETY: valid C string.
            unsafe { libc::if_nametoindex(name.as_ptr()) }
        })
        .unwrap();
    assert_eq!(found, idx);
    assert!(cl.node(1).uplink_ifindex().unwrap() > 0);
    assert!(cl.node(1).netns_path().exists());
    assert!(cl.node(1).pod_cidrs()[0].contains(&a.ips()[0]));
    let routes = cl
        .node_command(0, "ip")
        .unwrap()
        .args(["route"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&routes.stdout).contains("10.244.1.0/24 via 198.18.0.2"));
}

#[test]
#[ignore = "privileged: needs root (cargo xtask test runs it)"]
fn chained_plugin_gets_prev_result() {
    require_root!();
    let cl = TestCluster::builder()
        .cni(CniMode::Bridge)
        .chain_plugin(serde_json::json!({ "type": "tuning", "mtu": 1400 }))
        .probe_bin(env!("CARGO_BIN_EXE_probe"))
        .build()
        .unwrap();
    let a = cl.add_pod(0, "x", "a", &common::ports()).unwrap();
    let out = std::process::Command::new("ip")
        .args(["-n", a.netns_name(), "link", "show", "eth0"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("mtu 1400"));
    assert!(a.cni_result()["ips"]
        .as_array()
        .is_some_and(|ips| !ips.is_empty()));
}
