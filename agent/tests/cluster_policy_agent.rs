//! ClusterNetworkPolicy through the whole agent on test nodes: manifests with Admin and Baseline
//! policies next to a NetworkPolicy, the agent compiling and syncing them, real TCP and UDP probes
//! directly and through ClusterIPs. Privileged (root): run through `cargo xtask test`.

mod support;

use palisade_tests::{CniMode, Family, IpFamily, Proto};
use serde_json::{json, Value};
use support::nodes::{check, setup, Setup};

fn put_cluster_policy(s: &Setup, name: &str, spec: Value) {
    let object = json!({
        "apiVersion": "policy.networking.k8s.io/v1alpha2",
        "kind": "ClusterNetworkPolicy",
        "metadata": {"name": name},
        "spec": spec,
    });
    s.manifests
        .put(&format!("cnp-{name}"), &object)
        .expect("cnp manifest");
}

fn pods(app: &str) -> Value {
    json!({"pods": {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": app}}}})
}

#[test]
#[ignore = "privileged: needs root (cargo xtask test runs it)"]
fn agent_enforces_admin_and_baseline_tiers() {
    let mut s = setup("cnp", Family::Ipv4, CniMode::Bridge);
    let fam = IpFamily::Ipv4;
    // NetworkPolicy: a accepts TCP 80 from b only.
    s.policy(
        "a-from-b",
        json!({"podSelector":{"matchLabels":{"app":"a"}},
        "ingress":[{"from":[{"podSelector":{"matchLabels":{"app":"b"}}}],"ports":[{"port":80}]}]}),
    );
    // Admin: nothing from c into namespace x; b may reach UDP 81 whatever NetworkPolicy says.
    put_cluster_policy(
        &s,
        "guard",
        json!({"tier": "Admin", "priority": 10, "subject": {"namespaces": {"matchLabels": {"ns": "x"}}},
            "ingress": [
                {"name": "not-from-c", "action": "Deny", "from": [pods("c")]},
                {"name": "b-udp", "action": "Accept", "from": [pods("b")],
                 "protocols": [{"udp": {"destinationPort": {"number": 81}}}]}]}),
    );
    // Baseline: c accepts nothing from a (c is not isolated by NetworkPolicy).
    put_cluster_policy(
        &s,
        "floor",
        json!({"tier": "Baseline", "priority": 0, "subject": {"pods": {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "c"}}}},
            "ingress": [{"name": "not-from-a", "action": "Deny", "from": [pods("a")]}]}),
    );
    s.apply();
    check(
        &s,
        fam,
        &[
            ("b", "a", Proto::Tcp, 80, true),
            // Admin Accept over NetworkPolicy isolation.
            ("b", "a", Proto::Udp, 81, true),
            // Admin Deny where nothing else would deny.
            ("c", "b", Proto::Tcp, 80, false),
            ("c", "b", Proto::Udp, 81, false),
            ("a", "b", Proto::Tcp, 80, true),
            // Baseline Deny; the rest of c's ingress is the default.
            ("a", "c", Proto::Tcp, 80, false),
            ("b", "c", Proto::Tcp, 80, true),
        ],
    );
    // Without the ClusterNetworkPolicies, NetworkPolicy alone decides again.
    s.manifests.remove("cnp-guard").expect("rm");
    s.manifests.remove("cnp-floor").expect("rm");
    s.apply();
    check(
        &s,
        fam,
        &[
            ("b", "a", Proto::Udp, 81, false),
            ("c", "b", Proto::Tcp, 80, true),
            ("a", "c", Proto::Tcp, 80, true),
        ],
    );
}
