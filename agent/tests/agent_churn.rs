//! Atomic sync under load: while policies and labels change as fast as the agents apply them,
//! real connections are probed continuously. A pair that every state denies must never connect,
//! and a pair that every state allows must never fail: no packet sees a half-written policy.
//! Privileged (root): run through `cargo xtask test`.

mod support;

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use palisade_tests::{
    agent::{node_name, pod_manifest, Manifests},
    CniMode, Family, IpFamily, Pod, ProbeSpec, Proto, TestCluster,
};
use serde_json::json;
use support::nodes::{apply_with, find, put_policy, setup, Setup};

const ROUNDS: usize = 120;

/// Two policy states that both allow b → a:80 and both deny c → a:80, with different tables.
fn policy_state(manifests: &Manifests, pods: &[Pod], round: usize) {
    let spec = if round.is_multiple_of(2) {
        json!({"podSelector":{"matchLabels":{"app":"a"}},
               "ingress":[{"from":[{"podSelector":{"matchLabels":{"app":"b"}}}],"ports":[{"port":80}]}]})
    } else {
        json!({"podSelector":{"matchLabels":{"app":"a"}},
               "ingress":[{"from":[{"podSelector":{"matchExpressions":[{"key":"app","operator":"In","values":["b","z"]}]}}],
                           "ports":[{"port":80,"endPort":81}]},
                          {"from":[{"ipBlock":{"cidr":"203.0.113.0/24"}}]}]})
    };
    put_policy(manifests, "a-in", spec);
    // c's identity changes every round (a new label), and it is never allowed.
    let c = find(pods, "c");
    let labels = json!({"app": "c", "round": round.to_string()});
    manifests
        .put("pod-x-c", &pod_manifest(c, &node_name(c.node()), &labels))
        .expect("pod");
}

#[test]
#[ignore = "privileged: needs root (cargo xtask test runs it)"]
fn no_denied_connection_ever_succeeds_while_policies_churn() {
    let mut s = setup("churn", Family::Ipv4, CniMode::Bridge);
    policy_state(&s.manifests, &s.pods, 0);
    s.apply();
    let Setup {
        cluster,
        manifests,
        agents,
        pods,
        ..
    } = &mut s;
    let (cluster, pods) = (&*cluster, &*pods);
    let done = AtomicBool::new(false);
    let (mut allowed_ok, mut allowed_failed, mut denied_ok, mut denied_blocked) = (0, 0, 0, 0);
    std::thread::scope(|scope| {
        let prober = scope.spawn(|| probe_until(cluster, pods, &done));
        for round in 1..=ROUNDS {
            policy_state(manifests, pods, round);
            apply_with(manifests, agents, pods);
        }
        done.store(true, Ordering::SeqCst);
        for (pair, allowed) in prober.join().expect("prober") {
            match (pair, allowed) {
                ("b", true) => allowed_ok += 1,
                ("b", false) => allowed_failed += 1,
                (_, true) => denied_ok += 1,
                (_, false) => denied_blocked += 1,
            }
        }
    });
    println!("{ROUNDS} rounds: allowed pair {allowed_ok} ok / {allowed_failed} failed; denied pair {denied_ok} connected / {denied_blocked} blocked");
    assert!(allowed_ok > 0 && denied_blocked > 0, "the probes ran");
    assert_eq!(denied_ok, 0, "a denied connection succeeded during churn");
    assert_eq!(
        allowed_failed, 0,
        "an always-allowed connection failed during churn"
    );
}

/// Probes b → a and c → a (pod IP and ClusterIP) until `done`.
fn probe_until(
    cluster: &TestCluster,
    pods: &[Pod],
    done: &AtomicBool,
) -> Vec<(&'static str, bool)> {
    let svc = cluster.service("x", "s-x-a").expect("service");
    let targets = [
        find(pods, "a").ip(IpFamily::Ipv4).expect("ip"),
        svc.cluster_ip(IpFamily::Ipv4).expect("cluster ip"),
    ];
    let mut out = Vec::new();
    while !done.load(Ordering::SeqCst) {
        let mut specs = Vec::new();
        for from in ["b", "c"] {
            for ip in targets {
                specs.push(ProbeSpec {
                    from: find(pods, from),
                    to: (ip, 80).into(),
                    proto: Proto::Tcp,
                    timeout: Duration::from_millis(200),
                });
            }
        }
        let outcomes = cluster.probe_many(&specs).expect("probe");
        for (spec, o) in specs.iter().zip(outcomes) {
            out.push((if spec.from.name() == "b" { "b" } else { "c" }, o.allowed));
        }
    }
    out
}
