//! ClusterNetworkPolicy through the whole agent on test nodes: manifests with Admin and Baseline
//! policies next to a NetworkPolicy, the agent compiling and syncing them, real TCP and UDP probes
//! directly and through ClusterIPs; the flow log names the deciding policy and rule. Privileged
//! (root): run through `cargo xtask test`.

mod support;

use std::time::{Duration, Instant};

use palisade_tests::{
    agent::{node_name, pod_manifest, AgentProcess, Manifests},
    CniMode, Family, IpFamily, Pod, Port, ProbeSpec, Proto, TestCluster,
};
use serde_json::{json, Value};
use support::nodes::{agent_bin, apply_with, check, setup, Setup};

fn put_cluster_policy(s: &Setup, name: &str, spec: Value) {
    put_cnp(&s.manifests, name, spec);
}

fn put_cnp(manifests: &Manifests, name: &str, spec: Value) {
    let object = json!({
        "apiVersion": "policy.networking.k8s.io/v1alpha2",
        "kind": "ClusterNetworkPolicy",
        "metadata": {"name": name},
        "spec": spec,
    });
    manifests
        .put(&format!("cnp-{name}"), &object)
        .expect("cnp manifest");
}

fn select_app(app: &str) -> Value {
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
                {"name": "not-from-c", "action": "Deny", "from": [select_app("c")]},
                {"name": "b-udp", "action": "Accept", "from": [select_app("b")],
                 "protocols": [{"udp": {"destinationPort": {"number": 81}}}]}]}),
    );
    // Baseline: c accepts nothing from a (c is not isolated by NetworkPolicy).
    put_cluster_policy(
        &s,
        "floor",
        json!({"tier": "Baseline", "priority": 0, "subject": {"pods": {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "c"}}}},
            "ingress": [{"name": "not-from-a", "action": "Deny", "from": [select_app("a")]}]}),
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

/// Flow log records of one agent matching `want`, waiting up to 5 s for one.
fn flows(agent: &AgentProcess, want: impl Fn(&Value) -> bool) -> Vec<Value> {
    let path = agent.root().join("flows.jsonl");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let found: Vec<Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .filter(|v| want(v))
            .collect();
        if !found.is_empty() || Instant::now() > deadline {
            return found;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
#[ignore = "privileged: needs root (cargo xtask test runs it)"]
fn flow_log_names_the_cluster_policy_and_rule() {
    palisade_tests::cleanup_stale();
    let tmp = std::env::temp_dir().join(format!("palisade-cnp-flows-{}", std::process::id()));
    let cluster = TestCluster::builder()
        .family(Family::Ipv4)
        .nodes(2)
        .cni(CniMode::Bridge)
        .build()
        .expect("cluster");
    let mut manifests = Manifests::new(tmp.join("manifests")).expect("manifests");
    let ns = json!({"apiVersion":"v1","kind":"Namespace","metadata":{"name":"x"}});
    manifests.put("ns-x", &ns).expect("ns");
    let mut pods: Vec<Pod> = Vec::new();
    for (node, name) in [(0, "a"), (0, "b"), (1, "c")] {
        let pod = cluster
            .add_pod(node, "x", name, &[Port::tcp(80).named("http")])
            .expect("pod");
        let m = pod_manifest(&pod, &node_name(node), &json!({"app": name}));
        manifests.put(&format!("pod-x-{name}"), &m).expect("pod");
        pods.push(pod);
    }
    put_cnp(
        &manifests,
        "guard",
        json!({"tier": "Admin", "priority": 1,
            "subject": {"pods": {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "a"}}}},
            "ingress": [
                {"name": "no-c", "action": "Deny", "from": [select_app("c")]},
                {"name": "b-web", "action": "Accept", "from": [select_app("b")],
                 "protocols": [{"tcp": {"destinationPort": {"number": 80}}}]}]}),
    );
    let flags = ["--flow-log", "{root}/flows.jsonl", "--flow-log-allows"];
    let mut agents: Vec<AgentProcess> = (0..2)
        .map(|n| {
            let root = tmp.join(format!("node{n}"));
            AgentProcess::start_with(&cluster, n, agent_bin(), &manifests, root, &flags)
                .expect("agent")
        })
        .collect();
    for pod in &pods {
        agents[pod.node()].report_endpoint(pod).expect("report");
    }
    apply_with(&mut manifests, &mut agents, &pods);
    let connects = |from: usize, to: usize| {
        let spec = ProbeSpec {
            from: &pods[from],
            to: (pods[to].ip(IpFamily::Ipv4).expect("ip"), 80).into(),
            proto: Proto::Tcp,
            timeout: Duration::from_millis(400),
        };
        cluster.probe_many(&[spec]).expect("probe")[0].allowed
    };
    assert!(!connects(2, 0), "c -> a: Admin Deny");
    assert!(connects(1, 0), "b -> a: Admin Accept");

    let denies = flows(&agents[0], |v| {
        v["verdict"] == "deny" && v["src_pod"] == "x/c"
    });
    let d = denies
        .first()
        .unwrap_or_else(|| panic!("no deny logged; log:\n{}", agents[0].log()));
    assert_eq!(d["reason"], "admin_policy_denied");
    assert_eq!(d["policies"], json!(["ClusterNetworkPolicy/guard"]));
    assert_eq!(d["tier"], "admin");
    assert_eq!(
        d["rule"],
        r#"ClusterNetworkPolicy guard (Admin) ingress[0] "no-c""#
    );
    let allows = flows(&agents[0], |v| {
        v["verdict"] == "allow" && v["src_pod"] == "x/b" && v["dst_pod"] == "x/a"
    });
    assert!(
        allows.iter().any(|a| a["rule"]
            == r#"ClusterNetworkPolicy guard (Admin) ingress[1] "b-web""#
            && a["tier"] == "admin"),
        "allow with its rule: {allows:?}"
    );
    drop(agents);
    let _ = std::fs::remove_dir_all(&tmp);
}
