//! The upstream corpus through the runner's pure parts (no root needed): every case parses
//! and applies step by step, every expected table resolves and prints exactly as upstream's
//! `matrix`, templates fill in for both families, and the manifests the agents would read
//! are complete.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use palisade_tests::conformance::case::{self, Action, Case, Protocol};
use palisade_tests::conformance::manifests::{self, PodRuntime, Runtime};
use palisade_tests::conformance::table;
use palisade_tests::conformance::template::{self, PodIps};
use palisade_tests::conformance::world::World;
use serde_json::Value;

fn corpus() -> Option<Vec<Case>> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance/upstream-e2e.json");
    if !path.exists() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("CI=true and the corpus is missing at {}", path.display());
        }
        eprintln!("SKIPPED: no corpus at {}", path.display());
        return None;
    }
    Some(case::load_all(&[path], &[]).expect("corpus loads"))
}

/// IPs the way the harness hands them out: pods round-robin over two nodes in key order,
/// `10.244.<node>.<2+n>` and `fd00:10:244:<node>::<2+n>`.
fn synthetic_ips(pods: &[String], v6: bool) -> PodIps {
    pods.iter()
        .enumerate()
        .map(|(i, key)| {
            let (node, host) = (i % 2, 2 + i / 2);
            let text = if v6 {
                format!("fd00:10:244:{node}::{host:x}")
            } else {
                format!("10.244.{node}.{host}")
            };
            (key.clone(), text.parse::<IpAddr>().unwrap())
        })
        .collect()
}

fn runtime(world: &World) -> Runtime {
    let keys: Vec<String> = world.pods.keys().cloned().collect();
    let (v4, v6) = (synthetic_ips(&keys, false), synthetic_ips(&keys, true));
    keys.iter()
        .enumerate()
        .map(|(i, k)| {
            let rt = PodRuntime {
                node_name: format!("node-{}", i % 2),
                ips: vec![v4[k], v6[k]],
                cluster_ips: vec![
                    format!("10.96.0.{}", 10 + i).parse().unwrap(),
                    format!("fd00:96::{:x}", 10 + i).parse().unwrap(),
                ],
                host_veth: format!("veth{i:04x}"),
            };
            (k.clone(), rt)
        })
        .collect()
}

#[test]
fn corpus_parses_with_every_field() {
    let Some(cases) = corpus() else { return };
    assert_eq!(cases.len(), 48);
    let probes: Vec<(&Case, u32, &case::Probe)> = cases
        .iter()
        .flat_map(|c| c.probes().map(move |(s, p)| (c, s, p)))
        .collect();
    assert_eq!(probes.len(), 65);
    let by_proto = |proto| {
        cases
            .iter()
            .filter(|c| c.probes().any(|(_, p)| p.protocol == proto))
            .count()
    };
    assert_eq!(
        (
            by_proto(Protocol::Tcp),
            by_proto(Protocol::Udp),
            by_proto(Protocol::Sctp)
        ),
        (42, 4, 3)
    );
    for (c, step, p) in probes {
        assert_eq!(p.expected.len(), 81, "{} step {step}", c.id);
        assert!(
            p.port.is_some() && p.port_name.is_some(),
            "{} step {step}",
            c.id
        );
        let loopback = p.expected.iter().filter(|e| e.is_loopback()).count();
        assert_eq!(loopback, 9, "{} step {step}", c.id);
    }
    let templated: Vec<&str> = cases
        .iter()
        .filter(|c| c.has_templates())
        .map(|c| c.id.as_str())
        .collect();
    assert_eq!(
        templated,
        ["upstream-tcp-34", "upstream-tcp-35", "upstream-tcp-36"]
    );
    assert!(cases.iter().all(|c| c.has_templates() == c.symbolic));
}

#[test]
fn every_step_applies_and_every_table_prints_as_upstream() {
    let Some(cases) = corpus() else { return };
    let mut tables = 0;
    for c in &cases {
        let mut world = World::new(&c.initial_state).unwrap_or_else(|e| panic!("{}: {e}", c.id));
        let refs = template::reference_pods(c);
        for s in &c.steps {
            let Action::Probe(p) = &s.action else {
                world
                    .apply(&s.action)
                    .unwrap_or_else(|e| panic!("{} step {}: {e}", c.id, s.step));
                continue;
            };
            world.check_pods(p.pods.as_deref()).unwrap();
            let keys: Vec<String> = world.pods.keys().cloned().collect();
            for v6 in [false, true] {
                let ips = synthetic_ips(&keys, v6);
                let expected = table::expected(p, &ips, &refs).unwrap();
                let values: Vec<bool> = expected.cells.iter().map(|c| c.allowed).collect();
                let grid = table::grid(&expected, &values);
                let printed = table::upstream_lines(&expected.order, &grid);
                assert_eq!(printed, p.matrix, "{} step {}", c.id, s.step);
                let allowed = values.iter().filter(|v| **v).count();
                let counts = p.counts.as_ref().unwrap();
                assert_eq!(Some(allowed as u64), counts["allowed"].as_u64());
                tables += 1;
            }
        }
    }
    assert_eq!(tables, 130);
}

fn policy_text(files: &BTreeMap<String, Value>) -> String {
    files
        .iter()
        .filter(|(k, _)| k.starts_with("policy_"))
        .map(|(_, v)| v.to_string())
        .collect()
}

/// Runs a case's steps up to its last policy change and renders the manifests for a family.
fn manifests_at_end(c: &Case, v6: bool) -> (World, BTreeMap<String, Value>) {
    let mut world = World::new(&c.initial_state).unwrap();
    for s in &c.steps {
        // As the runner does: templates are filled in when the policy is written.
        let keys: Vec<String> = world.pods.keys().cloned().collect();
        let ips = synthetic_ips(&keys, v6);
        let action = match &s.action {
            Action::CreatePolicy { namespace, policy } => Action::CreatePolicy {
                namespace: namespace.clone(),
                policy: template::fill_value(policy, &ips).unwrap(),
            },
            Action::UpdatePolicy { namespace, policy } => Action::UpdatePolicy {
                namespace: namespace.clone(),
                policy: template::fill_value(policy, &ips).unwrap(),
            },
            other => other.clone(),
        };
        world.apply(&action).unwrap();
    }
    let files = manifests::render(&world, &runtime(&world)).unwrap();
    (world, files)
}

#[test]
fn templates_fill_in_for_both_families() {
    let Some(cases) = corpus() else { return };
    let find = |id: &str| cases.iter().find(|c| c.id == id).unwrap();
    // x/b is the 2nd of 9 pods in key order: node 1, host 2.
    let (_, v4) = manifests_at_end(find("upstream-tcp-35"), false);
    let text = policy_text(&v4);
    assert!(
        text.contains("\"0.0.0.0/4\"") && text.contains("\"10.244.1.2/32\""),
        "{text}"
    );
    let (_, v6) = manifests_at_end(find("upstream-tcp-35"), true);
    let text = policy_text(&v6);
    assert!(
        text.contains("\"f000::/4\"") && text.contains("\"fd00:10:244:1::2/128\""),
        "{text}"
    );
    // y/b is the 5th: node 0, host 4.
    let (_, v6) = manifests_at_end(find("upstream-tcp-34"), true);
    assert!(policy_text(&v6).contains("\"fd00:10:244::4/128\""));
    for c in cases.iter().filter(|c| c.has_templates()) {
        for v6 in [false, true] {
            assert!(
                !policy_text(&manifests_at_end(c, v6).1).contains("{{"),
                "{}",
                c.id
            );
        }
    }
}

#[test]
fn manifests_hold_what_the_agent_needs() {
    let Some(cases) = corpus() else { return };
    let c = cases.iter().find(|c| c.id == "upstream-tcp-21").unwrap();
    let (world, files) = manifests_at_end(c, false);
    assert_eq!(files.len(), 3 + 9 + 9 + world.policies.len());
    let ns = &files["namespace_y.json"];
    assert_eq!(ns["metadata"]["labels"]["ns2"], "updated");
    assert_eq!(ns["metadata"]["labels"]["kubernetes.io/metadata.name"], "y");
    let pod = &files["pod_x_b.json"];
    assert_eq!(pod["spec"]["nodeName"], "node-1");
    assert_eq!(pod["status"]["podIP"], "10.244.1.2");
    assert_eq!(pod["status"]["podIPs"][1]["ip"], "fd00:10:244:1::2");
    let ports = pod["spec"]["containers"][0]["ports"].as_array().unwrap();
    assert_eq!(
        ports.len(),
        6,
        "SCTP containerPorts stay in the pod (named ports)"
    );
    let svc = &files["service_x_b.json"];
    assert_eq!(svc["metadata"]["name"], "s-x-b");
    assert_eq!(svc["spec"]["clusterIPs"].as_array().unwrap().len(), 2);
    let sports = svc["spec"]["ports"].as_array().unwrap();
    assert_eq!(sports.len(), 4, "no SCTP Service ports: {sports:?}");
    assert!(sports.iter().all(|p| p["port"] == p["targetPort"]));
    for ((ns, name), policy) in &world.policies {
        let written = &files[&format!("policy_{ns}_{name}.json")];
        assert_eq!(
            written, policy,
            "policies are written exactly as the case gives them"
        );
    }
    let eps = manifests::render_endpoints(&world, &runtime(&world), "node-0");
    assert_eq!(eps.len(), 5);
    assert_eq!(eps["x_a.json"]["ifname"], "veth0000");
    assert_eq!(eps["x_a.json"]["ips"].as_array().unwrap().len(), 2);
}

#[test]
fn case_filter_keeps_file_order_and_rejects_unknown_ids() {
    let path: PathBuf =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance/upstream-e2e.json");
    if corpus().is_none() {
        return;
    }
    let only = ["upstream-udp-01".to_owned(), "upstream-tcp-02".to_owned()];
    let picked = case::load_all(std::slice::from_ref(&path), &only).unwrap();
    let ids: Vec<&str> = picked.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["upstream-tcp-02", "upstream-udp-01"]);
    let err = case::load_all(std::slice::from_ref(&path), &["nope".to_owned()]).unwrap_err();
    assert!(err.to_string().contains("nope"));
    let err = case::load_all(&[path.clone(), path], &[]).unwrap_err();
    assert!(err.to_string().contains("appears twice"), "{err}");
}
