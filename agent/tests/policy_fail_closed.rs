//! A NetworkPolicy whose `spec` does not deserialize (a type error) fails closed: it is loaded,
//! not dropped; the unreadable rule allows nothing, the policy still isolates its pods, and an
//! unreadable podSelector isolates the whole namespace. The problem is reported as a manifest
//! note and as a compiler problem. Verdicts go through the compiled lookup and the reference
//! evaluator (which must agree), over every pair of the base cluster's addresses.
mod policy_util;

use std::path::Path;

use palisade::compiler::{compile, CompileOptions, CompiledOutput};
use palisade::model::{Model, Protocol};
use palisade::source::{load_str, ManifestNote};
use policy_util::{allowed, BASE, SCTP, TCP, UDP};

const ADDRS: [&str; 8] = [
    "x/a",
    "x/b",
    "y/a",
    "y/c",
    "x/a6",
    "x/b6",
    "192.168.1.1",
    "8.8.8.8",
];
const PORTS: [(Protocol, u16); 6] = [
    (TCP, 80),
    (TCP, 8080),
    (TCP, 9999),
    (UDP, 53),
    (SCTP, 80),
    (TCP, 1),
];

fn load(policies: &str) -> (Model, CompiledOutput, Vec<ManifestNote>) {
    let text = format!("{BASE}\n---\n{policies}");
    let (changes, notes) = load_str(&text, Path::new("test.yaml"));
    let mut model = Model::new();
    for c in changes {
        model.apply(c);
    }
    let out = compile(&model, &CompileOptions::default());
    (model, out, notes)
}

fn doc(name: &str, spec: &str) -> String {
    format!("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: {name}, namespace: x}}\nspec: {spec}\n")
}

/// Every connection `broken` allows, `fixed` allows too.
fn never_more(broken: &str, fixed: &str) {
    let (bm, bo, _) = load(broken);
    let (fm, fo, notes) = load(fixed);
    assert!(
        notes.is_empty(),
        "the fixed policies load cleanly: {notes:?}"
    );
    for from in ADDRS {
        for to in ADDRS {
            for (protocol, port) in PORTS {
                if allowed(&bm, &bo, from, to, protocol, port) {
                    assert!(
                        allowed(&fm, &fo, from, to, protocol, port),
                        "{from} -> {to} {protocol}/{port} allowed by\n{broken}\nbut not by\n{fixed}"
                    );
                }
            }
        }
    }
}

struct Case {
    name: &'static str,
    /// The spec with a part that does not deserialize.
    broken: &'static str,
    /// The same spec with the unreadable rule removed (for an unreadable podSelector: the
    /// policy selecting the whole namespace, with no rules).
    fixed: &'static str,
    /// The field the note and a problem name.
    field: &'static str,
    /// Connections that must be denied (they would be allowed if the policy were dropped).
    denied: &'static [(&'static str, &'static str, Protocol, u16)],
    /// Connections that the readable rules still allow.
    allowed: &'static [(&'static str, &'static str, Protocol, u16)],
}

const CASES: [Case; 6] = [
    Case {
        name: "endPort not a number",
        broken: "{podSelector: {matchLabels: {app: b}}, ingress: [{from: [{podSelector: {matchLabels: {app: a}}}], ports: [{port: 8080}]}, {ports: [{port: 9000, endPort: x}]}]}",
        fixed: "{podSelector: {matchLabels: {app: b}}, ingress: [{from: [{podSelector: {matchLabels: {app: a}}}], ports: [{port: 8080}]}]}",
        field: "spec.ingress[1]",
        denied: &[("y/a", "x/b", TCP, 9999), ("y/a", "x/b", TCP, 8080)],
        allowed: &[("x/a", "x/b", TCP, 8080)],
    },
    Case {
        name: "port an object",
        broken: "{podSelector: {matchLabels: {app: b}}, ingress: [{ports: [{port: {}}]}, {from: [{namespaceSelector: {matchLabels: {team: blue}}}]}]}",
        fixed: "{podSelector: {matchLabels: {app: b}}, ingress: [{from: [{namespaceSelector: {matchLabels: {team: blue}}}]}]}",
        field: "spec.ingress[0]",
        denied: &[("x/a", "x/b", TCP, 8080)],
        allowed: &[("y/a", "x/b", TCP, 8080)],
    },
    Case {
        name: "egress rule not an object",
        broken: "{podSelector: {matchLabels: {app: a}}, policyTypes: [Egress], egress: [x, {ports: [{port: 53, protocol: UDP}]}]}",
        fixed: "{podSelector: {matchLabels: {app: a}}, policyTypes: [Egress], egress: [{ports: [{port: 53, protocol: UDP}]}]}",
        field: "spec.egress[0]",
        denied: &[("x/a", "x/b", TCP, 8080), ("x/a", "8.8.8.8", TCP, 80)],
        allowed: &[("x/a", "8.8.8.8", UDP, 53)],
    },
    Case {
        name: "the only egress rule unreadable, policyTypes absent",
        broken: "{podSelector: {matchLabels: {app: a}}, egress: [{to: {ipBlock: {cidr: 0.0.0.0/0}}}]}",
        fixed: "{podSelector: {matchLabels: {app: a}}, policyTypes: [Ingress, Egress]}",
        field: "spec.egress[0]",
        denied: &[("x/a", "8.8.8.8", TCP, 80), ("y/a", "x/a", TCP, 80)],
        allowed: &[],
    },
    Case {
        name: "podSelector unreadable",
        broken: "{podSelector: {matchLabels: [app]}, ingress: [{from: [{namespaceSelector: {}}]}]}",
        fixed: "{podSelector: {}}",
        field: "spec.podSelector",
        denied: &[("y/a", "x/a", TCP, 80), ("y/a", "x/b", TCP, 8080)],
        allowed: &[("x/a", "y/a", TCP, 80)],
    },
    Case {
        name: "spec not an object",
        broken: "[ingress]",
        fixed: "{podSelector: {}, policyTypes: [Ingress, Egress]}",
        field: "spec",
        denied: &[("y/a", "x/a", TCP, 80), ("x/a", "y/a", TCP, 80)],
        allowed: &[("y/a", "y/c", TCP, 80)],
    },
];

#[test]
fn unreadable_parts_fail_closed_and_are_reported() {
    for case in &CASES {
        let broken = doc("p", case.broken);
        let fixed = doc("p", case.fixed);
        never_more(&broken, &fixed);
        let (model, out, notes) = load(&broken);
        assert!(
            notes.iter().any(|n| n.malformed
                && n.message
                    .contains(&format!("NetworkPolicy p: field {}: ", case.field))),
            "{}: no note for {}: {notes:#?}",
            case.name,
            case.field
        );
        assert!(
            out.problems.iter().any(|p| p.policy.to_string() == "x/p"
                && p.field.starts_with(case.field)
                && p.message.contains("unreadable")),
            "{}: no problem for {}: {:#?}",
            case.name,
            case.field,
            out.problems
        );
        for (from, to, protocol, port) in case.denied {
            assert!(
                !allowed(&model, &out, from, to, *protocol, *port),
                "{}: {from} -> {to} {protocol}/{port} allowed",
                case.name
            );
        }
        for (from, to, protocol, port) in case.allowed {
            assert!(
                allowed(&model, &out, from, to, *protocol, *port),
                "{}: {from} -> {to} {protocol}/{port} denied",
                case.name
            );
        }
    }
}

#[test]
fn other_policies_and_documents_are_untouched() {
    let broken = doc("p", CASES[0].broken);
    let other = doc(
        "q",
        "{podSelector: {matchLabels: {app: a}}, ingress: [{from: [{namespaceSelector: {matchLabels: {team: blue}}}]}]}",
    );
    let (model, out, notes) = load(&format!("{broken}---\n{other}"));
    assert_eq!(notes.len(), 1, "{notes:#?}");
    assert!(out.problems.iter().all(|p| p.policy.to_string() == "x/p"));
    assert!(allowed(&model, &out, "y/a", "x/a", TCP, 80));
    assert!(!allowed(&model, &out, "x/b", "x/a", TCP, 80));
}
