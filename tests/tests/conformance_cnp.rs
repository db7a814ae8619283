//! The ClusterNetworkPolicy extensions of the case format (no root): the cluster-policy
//! actions, partial probes with per-cell ports, and the transcribed upstream corpus in
//! `tests/cases/cluster-network-policy.json` (every case parses, every step applies, every
//! table resolves, templates fill in for both families, manifests hold the objects).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use palisade_tests::conformance::case::{self, Action, Case};
use palisade_tests::conformance::manifests::{self, PodRuntime};
use palisade_tests::conformance::table;
use palisade_tests::conformance::template::{self, PodIps};
use palisade_tests::conformance::world::{World, WorldError};
use serde_json::{json, Value};

fn one_case(steps: Value) -> Case {
    let text = json!({
        "id": "cnp-unit",
        "initial_state": {
            "namespaces": {"x": {}, "y": {}},
            "pods": {
                "x/a": {"containerPorts": [{"containerPort": 80}, {"containerPort": 81}]},
                "y/b": {"containerPorts": [{"containerPort": 80}, {"containerPort": 81}]}
            }
        },
        "steps": steps
    })
    .to_string();
    let mut cases = case::parse(&text).unwrap();
    let c = cases.remove(0);
    c.check().unwrap();
    c
}

fn cnp(name: &str, priority: u32) -> Value {
    json!({"apiVersion": "policy.networking.k8s.io/v1alpha2", "kind": "ClusterNetworkPolicy",
           "metadata": {"name": name},
           "spec": {"tier": "Admin", "priority": priority,
                    "subject": {"namespaces": {}},
                    "ingress": [{"action": "Deny", "from": [{"namespaces": {}}]}]}})
}

fn ips(pairs: &[(&str, &str)]) -> PodIps {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.parse::<IpAddr>().unwrap()))
        .collect()
}

#[test]
fn cluster_policy_actions_parse_and_apply() {
    let c = one_case(json!([
        {"step": 1, "action": "create_cluster_policy", "policy": cnp("p", 5)},
        {"step": 2, "action": "update_cluster_policy", "policy": cnp("p", 40)},
        {"step": 3, "action": "delete_cluster_policy", "name": "p"}
    ]));
    assert!(matches!(
        c.steps[0].action,
        Action::CreateClusterPolicy { .. }
    ));
    assert!(matches!(
        c.steps[1].action,
        Action::UpdateClusterPolicy { .. }
    ));
    assert!(matches!(&c.steps[2].action, Action::DeleteClusterPolicy { name } if name == "p"));
    let mut w = World::new(&c.initial_state).unwrap();
    w.apply(&c.steps[0].action).unwrap();
    assert_eq!(w.cluster_policies["p"]["spec"]["priority"], 5);
    // Creating it again is a mistake in the case, as on an API server.
    assert!(matches!(
        w.apply(&c.steps[0].action),
        Err(WorldError::ClusterPolicyExists(n)) if n == "p"
    ));
    w.apply(&c.steps[1].action).unwrap();
    assert_eq!(w.cluster_policies["p"]["spec"]["priority"], 40);
    w.apply(&c.steps[2].action).unwrap();
    assert!(w.cluster_policies.is_empty());
    assert!(matches!(
        w.apply(&c.steps[2].action),
        Err(WorldError::NoClusterPolicy(_))
    ));
    assert!(matches!(
        w.apply(&c.steps[1].action),
        Err(WorldError::NoClusterPolicy(_))
    ));
}

#[test]
fn cluster_policy_is_written_as_its_own_cluster_scoped_document() {
    let c =
        one_case(json!([{"step": 1, "action": "create_cluster_policy", "policy": cnp("p", 5)}]));
    let mut w = World::new(&c.initial_state).unwrap();
    w.apply(&c.steps[0].action).unwrap();
    let runtime: manifests::Runtime = w
        .pods
        .keys()
        .map(|k| {
            let rt = PodRuntime {
                node_name: "node-0".into(),
                ips: vec!["10.244.0.2".parse().unwrap()],
                cluster_ips: vec!["10.96.0.2".parse().unwrap()],
                host_veth: "veth0".into(),
            };
            (k.clone(), rt)
        })
        .collect();
    let files = manifests::render(&w, &runtime).unwrap();
    let doc = &files["clusterpolicy_p.json"];
    assert_eq!(doc["kind"], "ClusterNetworkPolicy");
    assert!(doc["metadata"].get("namespace").is_none(), "cluster-scoped");
    assert_eq!(doc, &cnp("p", 5));
}

#[test]
fn cluster_policy_templates_are_found_and_filled() {
    let mut p = cnp("p", 5);
    p["spec"]["egress"] = json!([{"action": "Accept", "to": [{"networks": ["{{podIP y/b}}/32"]}]}]);
    let c = one_case(json!([{"step": 1, "action": "update_cluster_policy", "policy": p}]));
    assert!(c.has_templates());
    assert_eq!(template::reference_pods(&c), vec!["y/b".to_owned()]);
    let filled = template::fill_value(&p, &ips(&[("y/b", "fd00::5")])).unwrap();
    assert_eq!(
        filled["spec"]["egress"][0]["to"][0]["networks"][0],
        "fd00::5/128"
    );
}

#[test]
fn partial_probe_judges_listed_cells_on_their_own_ports() {
    let c = one_case(
        json!([{"step": 1, "action": "probe", "protocol": "TCP", "partial": true,
        "subtest": "upstream words",
        "expected": [{"from": "x/a", "to": "y/b", "port": 80, "allowed": true},
                     {"from": "x/a", "to": "y/b", "port": 81, "allowed": false}]}]),
    );
    let (_, probe) = c.probes().next().unwrap();
    assert!(probe.partial);
    assert_eq!(probe.subtest.as_deref(), Some("upstream words"));
    let ex = table::expected(probe, &PodIps::new(), &[]).unwrap();
    assert_eq!(ex.cells.len(), 2);
    assert_eq!(
        ex.cells.iter().map(|c| c.port).collect::<Vec<_>>(),
        vec![Some(80), Some(81)]
    );
    let cmp = table::compare(&ex, &[true, true]);
    assert_eq!(cmp.differing.len(), 1);
    assert_eq!(cmp.differing[0].port, Some(81));
    assert_eq!(
        table::describe(&cmp.differing),
        "x/a -> y/b:81: expected X observed ."
    );
    let lines = table::cell_lines(&ex, &[true, true]);
    assert!(lines.contains("x/a -> y/b:80: expected . observed . ok"));
    assert!(lines.contains("x/a -> y/b:81: expected X observed . DIFFERS"));
}

#[test]
fn partial_probe_without_cells_is_refused() {
    let text = json!({"id": "bad", "initial_state": {}, "steps": [
        {"step": 1, "action": "probe", "protocol": "UDP", "partial": true, "expected": []}]})
    .to_string();
    let c = case::parse(&text).unwrap().remove(0);
    assert!(c.check().is_err());
}

fn corpus() -> Vec<Case> {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("cases/cluster-network-policy.json");
    case::load_all(&[file], &[]).unwrap()
}

/// Every case of the transcribed upstream corpus applies step by step, every table resolves
/// (templates filled for both families), and every probe is partial with ports on its cells.
#[test]
fn transcribed_corpus_applies_step_by_step() {
    let cases = corpus();
    assert_eq!(cases.len(), 28);
    let mut probes = 0;
    for c in &cases {
        let refs = template::reference_pods(c);
        let mut w = World::new(&c.initial_state).unwrap();
        for (family, base) in [("v4", "10.244.0."), ("v6", "fd00:10:244::")] {
            let fake: BTreeMap<String, IpAddr> = w
                .pods
                .keys()
                .enumerate()
                .map(|(i, k)| (k.clone(), format!("{base}{}", i + 2).parse().unwrap()))
                .collect();
            for s in &c.steps {
                let filled = match &s.action {
                    Action::CreateClusterPolicy { policy }
                    | Action::UpdateClusterPolicy { policy } => {
                        let p = template::fill_value(policy, &fake)
                            .unwrap_or_else(|e| panic!("{} {family} {}: {e}", c.id, s.step));
                        assert!(!p.to_string().contains("{{"));
                        continue;
                    }
                    Action::Probe(p) => p,
                    _ => continue,
                };
                assert!(filled.partial, "{} {}", c.id, s.step);
                let ex = table::expected(filled, &fake, &refs).unwrap();
                assert!(ex
                    .cells
                    .iter()
                    .all(|cell| cell.port.is_some() && !cell.loopback));
                probes += 1;
            }
        }
        for s in &c.steps {
            w.apply(&s.action)
                .unwrap_or_else(|e| panic!("{} step {}: {e}", c.id, s.step));
        }
    }
    assert_eq!(probes, 2 * 150);
}
