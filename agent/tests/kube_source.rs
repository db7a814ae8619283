//! The Kubernetes API source against a real kube-apiserver (v1.20, built from Debian's source
//! package and cached by `cargo xtask k8s build`): it follows creates, updates and deletes,
//! survives watch expiry, an API server restart and an outage (keeping the last known model),
//! and resyncs when the server is back. Each test starts its own control plane.

#[path = "support/kube.rs"]
mod kube_support;

use std::{net::IpAddr, time::Duration};

use kube_support::{control_plane, settings, wait_model};
use palisade::{
    model::{IntOrString, ObjectKey},
    source::kube::{KubeSource, ResourceKind},
};
use palisade_tests::kube::TestApi;
use serde_json::json;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

fn key(ns: &str, name: &str) -> ObjectKey {
    ObjectKey::new(ns, name)
}

#[test]
#[ignore = "privileged: needs root and the API server (cargo xtask test runs it)"]
fn kube_source_follows_creates_updates_and_deletes() {
    let cp = control_plane();
    let api = TestApi::connect(&cp.kubeconfig()).expect("client");
    api.namespace("x", &[("team", "a")]).expect("ns");
    api.pod(
        "x",
        "a",
        "node-0",
        &[("app", "a")],
        &[(80, "TCP", Some("http"))],
    )
    .expect("pod");
    api.pod_status("x", "a", &[ip("10.244.0.2")], "Running")
        .expect("status");
    api.pod("x", "b", "node-1", &[("app", "b")], &[])
        .expect("pod b");
    api.service(
        "x",
        "s",
        &[ip("10.96.0.10")],
        &[("app", "a")],
        &[(80, "TCP", 80)],
    )
    .expect("svc");
    api.policy("x", "deny", json!({"podSelector": {}}))
        .expect("policy");

    let source = KubeSource::start(settings(&cp.kubeconfig())).expect("source");
    let (g0, m) = wait_model(&source, "the initial list", |m| {
        m.pods.contains_key(&key("x", "b")) && m.policies.contains_key(&key("x", "deny"))
    });
    let a = &m.pods[&key("x", "a")];
    assert_eq!(a.ips, vec![ip("10.244.0.2")]);
    assert_eq!(a.node_name.as_deref(), Some("node-0"));
    assert_eq!(a.container_ports[0].name.as_deref(), Some("http"));
    assert!(m.pods[&key("x", "b")].ips.is_empty(), "Pending, no IP yet");
    assert_eq!(m.namespaces["x"].labels["team"], "a");
    assert_eq!(
        m.namespaces["x"].labels["kubernetes.io/metadata.name"], "x",
        "added although a 1.20 server does not"
    );
    assert_eq!(
        m.services[&key("x", "s")].ports[0].target_port,
        IntOrString::Int(80)
    );
    let health = source.health();
    assert!(health.synced);
    assert_eq!(health.resources[&ResourceKind::Pods].objects, 2);

    // Updates: the kubelet writes b's IP, a is relabelled, the policy changes.
    api.pod_status("x", "b", &[ip("10.244.1.2")], "Running")
        .expect("status b");
    api.pod(
        "x",
        "a",
        "node-0",
        &[("app", "a"), ("tier", "web")],
        &[(80, "TCP", Some("http"))],
    )
    .expect("relabel");
    api.policy(
        "x",
        "deny",
        json!({"podSelector": {"matchLabels": {"app": "a"}}}),
    )
    .expect("policy update");
    let (g1, _) = wait_model(&source, "the updates", |m| {
        m.pods[&key("x", "b")].ips == vec![ip("10.244.1.2")]
            && m.pods[&key("x", "a")]
                .labels
                .get("tier")
                .map(String::as_str)
                == Some("web")
            && m.policies[&key("x", "deny")]
                .spec
                .pod_selector
                .match_labels
                .is_some()
    });
    assert!(g1 > g0);

    // Watches expire every 2 s here; changes keep arriving across re-watches.
    std::thread::sleep(Duration::from_secs(5));
    api.pod_status("x", "b", &[ip("10.244.1.2")], "Succeeded")
        .expect("terminated");
    wait_model(&source, "a terminated pod losing its IP", |m| {
        m.pods[&key("x", "b")].ips.is_empty()
    });

    // Deletes, then the whole namespace.
    api.delete("Service", "x", "s").expect("delete svc");
    api.delete("NetworkPolicy", "x", "deny")
        .expect("delete policy");
    wait_model(&source, "the deletes", |m| {
        !m.services.contains_key(&key("x", "s")) && m.policies.is_empty()
    });
    api.delete_namespace("x", Duration::from_secs(60))
        .expect("delete namespace");
    wait_model(&source, "the namespace deletion", |m| {
        !m.namespaces.contains_key("x") && m.pods.is_empty()
    });
    let health = source.health();
    for (kind, h) in &health.resources {
        assert!(h.synced && !h.failing, "{kind:?}: {h:?}");
    }
}

#[test]
#[ignore = "privileged: needs root and the API server (cargo xtask test runs it)"]
fn kube_source_survives_api_restart_and_outage() {
    let mut cp = control_plane();
    let api = TestApi::connect(&cp.kubeconfig()).expect("client");
    api.namespace("y", &[]).expect("ns");
    api.pod("y", "p", "node-0", &[("app", "p")], &[])
        .expect("pod");
    api.pod_status("y", "p", &[ip("10.244.0.9")], "Running")
        .expect("status");
    api.policy("y", "one", json!({"podSelector": {}}))
        .expect("policy");
    let source = KubeSource::start(settings(&cp.kubeconfig())).expect("source");
    let (before, _) = wait_model(&source, "the initial list", |m| {
        m.policies.contains_key(&key("y", "one"))
    });

    // Outage: the API server goes away. The source notices, keeps its model, and retries.
    cp.stop_apiserver();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !source.health().resources.values().all(|h| h.failing) {
        assert!(
            std::time::Instant::now() < deadline,
            "watch failures not noticed: {:#?}",
            source.health()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(3));
    let (during, model) = source.snapshot().expect("the last known model stays");
    assert_eq!(during, before, "nothing changes while the server is away");
    assert!(model.policies.contains_key(&key("y", "one")));
    assert_eq!(model.pods[&key("y", "p")].ips, vec![ip("10.244.0.9")]);
    let health = source.health();
    assert!(
        health.synced,
        "still synced: the model is the last known state"
    );
    for h in health.resources.values() {
        assert!(h.errors >= 1 && h.last_error.is_some(), "{h:?}");
    }

    // The server comes back (same etcd); the source reconnects and follows new changes.
    cp.start_apiserver().expect("restart");
    api.policy(
        "y",
        "two",
        json!({"podSelector": {"matchLabels": {"app": "p"}}}),
    )
    .expect("policy two");
    api.delete("NetworkPolicy", "y", "one").expect("delete one");
    wait_model(&source, "the changes after the restart", |m| {
        m.policies.contains_key(&key("y", "two")) && !m.policies.contains_key(&key("y", "one"))
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let health = source.health();
        let reasons = api.event_reasons("default", "node-0").expect("events");
        let reconnected = reasons.iter().any(|r| r == "PalisadeReconnected");
        let back = health
            .resources
            .values()
            .all(|h| !h.failing && h.reconnects >= 1);
        if reconnected && back {
            eprintln!("health after the outage: {health:#?}");
            assert!(reasons.iter().any(|r| r == "PalisadeSynced"), "{reasons:?}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not all watches came back (or no event: {reasons:?}): {health:#?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
