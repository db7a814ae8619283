//! The worked example of `docs/cluster-network-policy.md`: every row of its table (between the
//! `example-table` markers) is checked against the manifests in `docs/examples/cluster-tiers/`,
//! through the reference evaluator (verdict and ingress decider) and the compiled lookup.

use std::path::Path;

use palisade::compiler::{compile, verdict, CompileOptions, SideDecision, Tier};
use palisade::model::{Model, ObjectKey, Protocol};
use palisade::reference::{self, ClusterTier, Decider, ReferenceOptions};
use palisade::source::load_dir;

fn root() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn model() -> Model {
    let loaded = load_dir(&root().join("docs/examples/cluster-tiers")).expect("example");
    assert!(loaded.notes.is_empty(), "{:?}", loaded.notes);
    loaded.model
}

/// `(from, to, port, allowed, decider)` rows of the document's table.
fn rows() -> Vec<(String, String, u16, bool, String)> {
    let doc = std::fs::read_to_string(root().join("docs/cluster-network-policy.md")).expect("doc");
    let start = doc.find("<!-- example-table").expect("table start");
    let end = doc.find("<!-- end example-table -->").expect("table end");
    let cells = |line: &str| -> Vec<String> {
        line.trim_matches('|')
            .split('|')
            .map(|c| c.trim().trim_matches('`').to_owned())
            .collect()
    };
    doc[start..end]
        .lines()
        .filter(|l| l.starts_with('|') && !l.starts_with("| from") && !l.starts_with("| ---"))
        .map(|l| {
            let c = cells(l);
            let allowed = match c[3].as_str() {
                "allowed" => true,
                "denied" => false,
                other => panic!("verdict {other:?}"),
            };
            let port = c[2].parse().expect("port");
            (c[0].clone(), c[1].clone(), port, allowed, c[4].clone())
        })
        .collect()
}

fn ip(model: &Model, text: &str) -> std::net::IpAddr {
    if let Ok(ip) = text.parse() {
        return ip;
    }
    let key = ObjectKey::parse(text).expect("ns/name");
    model.pods[&key].ips[0]
}

fn decider(d: &Decider) -> String {
    match d {
        Decider::Cluster(m) => {
            let tier = match m.tier {
                ClusterTier::Admin => "admin",
                ClusterTier::Baseline => "baseline",
            };
            format!("{tier}:{}[{}]:{:?}", m.policy, m.index, m.action)
        }
        Decider::NetworkPolicy { policy, index } => format!("np:{policy}[{index}]"),
        Decider::NetworkPolicyIsolated { .. } => "np-isolated".into(),
        Decider::Default { .. } => "default".into(),
        Decider::NodeTraffic => "node".into(),
        Decider::NotEndpoint => "none".into(),
    }
}

fn compiled(d: &SideDecision) -> String {
    let cluster = |r: &palisade::compiler::RuleRef, action: &str| {
        let tier = if r.tier == Tier::Admin {
            "admin"
        } else {
            "baseline"
        };
        format!("{tier}:{}[{}]:{action}", r.policy.name, r.index)
    };
    match d {
        SideDecision::Allowed { rule: Some(r), .. } if r.is_cluster() => cluster(r, "Accept"),
        SideDecision::Allowed { rule: Some(r), .. } => format!("np:{}[{}]", r.policy, r.index),
        SideDecision::DeniedByRule { rule: Some(r), .. } => cluster(r, "Deny"),
        SideDecision::Denied { .. } => "np-isolated".into(),
        SideDecision::NotIsolated => "default".into(),
        other => format!("{other:?}"),
    }
}

#[test]
fn worked_example_table_holds() {
    let model = model();
    let out = compile(&model, &CompileOptions::default());
    let rows = rows();
    assert_eq!(rows.len(), 7, "the table has its seven rows");
    for (from, to, port, allowed, want) in rows {
        let (f, t) = (ip(&model, &from), ip(&model, &to));
        let options = ReferenceOptions::default();
        let r = reference::evaluate_detailed(&model, options, f, t, Protocol::Tcp, port);
        let row = format!("{from} -> {to} TCP/{port}");
        assert_eq!(r.allowed(), allowed, "{row}: reference {r:?}");
        assert_eq!(decider(&r.ingress.decider), want, "{row}: reference");
        assert_eq!(
            decider(&r.egress.decider),
            if from.contains('/') {
                "default"
            } else {
                "none"
            }
        );
        let v = verdict(&out, f, t, Protocol::Tcp, port);
        assert_eq!(v.allowed, allowed, "{row}: compiled {v:?}");
        assert_eq!(compiled(&v.ingress), want, "{row}: compiled");
    }
}
