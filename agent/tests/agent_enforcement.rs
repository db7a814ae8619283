//! The real agent on a test node: pods made by the reference CNI plugins, the agent in the node's
//! namespace on the manifest-directory source, real TCP and UDP probes, directly and through
//! kube-proxy-style ClusterIPs. Privileged (root): run through `cargo xtask test`.

mod support;

use palisade_tests::{CniMode, Family, IpFamily, Proto};
use serde_json::json;
use support::nodes::{check, setup};

fn ingress_scenario(label: &str, family: Family, cni: CniMode, fam: IpFamily) {
    let mut s = setup(label, family, cni);
    s.apply();
    check(
        &s,
        fam,
        &[
            ("b", "a", Proto::Tcp, 80, true),
            ("c", "a", Proto::Tcp, 80, true),
        ],
    );
    // a accepts TCP 80 from b only.
    s.policy(
        "a-from-b",
        json!({"podSelector":{"matchLabels":{"app":"a"}},
        "ingress":[{"from":[{"podSelector":{"matchLabels":{"app":"b"}}}],"ports":[{"port":80}]}]}),
    );
    s.apply();
    check(
        &s,
        fam,
        &[
            ("b", "a", Proto::Tcp, 80, true),
            ("c", "a", Proto::Tcp, 80, false),
            ("b", "a", Proto::Udp, 81, false),
            ("a", "b", Proto::Tcp, 80, true),
            ("a", "c", Proto::Udp, 81, true),
        ],
    );
    // Egress isolation of b: only UDP 81 to c; its TCP to a is now closed on b's side.
    s.policy("b-egress", json!({"podSelector":{"matchLabels":{"app":"b"}},"policyTypes":["Egress"],
        "egress":[{"to":[{"podSelector":{"matchLabels":{"app":"c"}}}],"ports":[{"port":"dns","protocol":"UDP"}]}]}));
    s.apply();
    check(
        &s,
        fam,
        &[
            ("b", "a", Proto::Tcp, 80, false),
            ("b", "c", Proto::Udp, 81, true),
            ("b", "c", Proto::Tcp, 80, false),
            ("c", "b", Proto::Tcp, 80, true),
        ],
    );
    // Removing the policies opens everything again.
    s.manifests.remove("np-a-from-b").expect("rm");
    s.manifests.remove("np-b-egress").expect("rm");
    s.apply();
    check(
        &s,
        fam,
        &[
            ("c", "a", Proto::Tcp, 80, true),
            ("b", "a", Proto::Udp, 81, true),
        ],
    );
}

#[test]
#[ignore = "privileged: needs root (cargo xtask test runs it)"]
fn agent_enforces_ingress_and_egress_ipv4_bridge() {
    ingress_scenario("v4br", Family::Ipv4, CniMode::Bridge, IpFamily::Ipv4);
}

#[test]
#[ignore = "privileged: needs root (cargo xtask test runs it)"]
fn agent_enforces_ingress_and_egress_ipv6_ptp() {
    ingress_scenario("v6ptp", Family::Ipv6, CniMode::Ptp, IpFamily::Ipv6);
}
