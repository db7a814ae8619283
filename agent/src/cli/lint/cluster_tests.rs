//! Table tests of the ClusterNetworkPolicy lint checks, positive and negative: each row is a set
//! of policies over two namespaces and the (code, object) warnings it must yield, exactly.
use std::collections::BTreeSet;
use std::path::Path;

use super::{lint_model, Severity};
use crate::model::Model;

const PODS: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: x, labels: {team: red}}
---
apiVersion: v1
kind: Namespace
metadata: {name: y, labels: {team: blue}}
---
apiVersion: v1
kind: Pod
metadata: {namespace: x, name: a, labels: {app: a}}
spec: {nodeName: n1, containers: [{name: c, ports: [{name: http, containerPort: 80}]}]}
---
apiVersion: v1
kind: Pod
metadata: {namespace: y, name: b, labels: {app: b}}
spec: {nodeName: n1, containers: [{name: c}]}
"#;

/// A ClusterNetworkPolicy with ingress rules given as YAML flow items.
fn cnp(name: &str, tier: &str, priority: u32, subject: &str, rules: &[&str]) -> String {
    let rules: Vec<String> = rules.iter().map(|r| format!("  - {r}\n")).collect();
    format!(
        "apiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\n\
         metadata: {{name: {name}}}\nspec:\n  tier: {tier}\n  priority: {priority}\n  \
         subject: {subject}\n  ingress:\n{}",
        rules.concat()
    )
}

const ALL: &str = "{namespaces: {}}";
const X: &str = "{namespaces: {matchLabels: {team: red}}}";
const Y: &str = "{namespaces: {matchLabels: {team: blue}}}";
const DENY_Y: &str = "{action: Deny, from: [{namespaces: {matchLabels: {team: blue}}}]}";
const DENY_ALL: &str = "{action: Deny, from: [{namespaces: {}}]}";
const ACCEPT_Y_80: &str = "{action: Accept, from: [{namespaces: {matchLabels: {team: blue}}}], protocols: [{tcp: {destinationPort: {number: 80}}}]}";
const ACCEPT_Y_ALL: &str = "{action: Accept, from: [{namespaces: {matchLabels: {team: blue}}}]}";
const DENY_Y_81: &str = "{action: Deny, from: [{namespaces: {matchLabels: {team: blue}}}], protocols: [{tcp: {destinationPort: {number: 81}}}]}";
const PASS_Y: &str = "{action: Pass, from: [{namespaces: {matchLabels: {team: blue}}}]}";
const NP_ISOLATE_X: &str = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {namespace: x, name: iso}\nspec: {podSelector: {}, policyTypes: [Ingress]}\n";

fn warnings(docs: &[String]) -> BTreeSet<(String, String)> {
    let mut all = vec![PODS.to_owned()];
    all.extend(docs.iter().cloned());
    let (changes, notes) = crate::source::load_str(&all.join("\n---\n"), Path::new("t.yaml"));
    assert!(notes.is_empty(), "{notes:?}");
    let mut model = Model::default();
    for c in changes {
        model.apply(c);
    }
    lint_model(&model)
        .into_iter()
        .filter(|f| f.severity != Severity::Info && f.object.starts_with("ClusterNetworkPolicy/"))
        .map(|f| (f.code, f.object))
        .collect()
}

/// A row: what it shows, the policies, the warnings wanted.
type Row = (&'static str, Vec<String>, BTreeSet<(String, String)>);

fn set(items: &[(&str, &str)]) -> BTreeSet<(String, String)> {
    items
        .iter()
        .map(|(c, o)| ((*c).to_owned(), format!("ClusterNetworkPolicy/{o}")))
        .collect()
}

#[test]
fn shadowing_needs_an_earlier_wider_rule_over_the_same_pods() {
    let rows: Vec<Row> = vec![
        (
            "a later rule of the same policy",
            vec![cnp("p", "Admin", 1, X, &[DENY_Y, ACCEPT_Y_80])],
            set(&[("cluster-rule-shadowed", "p")]),
        ),
        (
            "an earlier policy of the tier",
            vec![
                cnp("p", "Admin", 1, ALL, &[PASS_Y]),
                cnp("q", "Admin", 2, X, &[ACCEPT_Y_80]),
            ],
            set(&[("cluster-rule-shadowed", "q")]),
        ),
        (
            "the earlier rule is narrower (port 80 only)",
            vec![cnp("p", "Admin", 1, X, &[ACCEPT_Y_80, DENY_Y])],
            set(&[]),
        ),
        (
            "the earlier policy applies to fewer pods",
            vec![
                cnp("p", "Admin", 1, X, &[DENY_Y]),
                cnp("q", "Admin", 2, ALL, &[ACCEPT_Y_80]),
            ],
            set(&[]),
        ),
        (
            "another tier does not shadow",
            vec![
                cnp("p", "Admin", 1, X, &[DENY_Y]),
                cnp("q", "Baseline", 1, Y, &[ACCEPT_Y_80]),
            ],
            set(&[]),
        ),
    ];
    for (name, docs, want) in rows {
        assert_eq!(warnings(&docs), want, "{name}");
    }
}

#[test]
fn same_priority_overlap_needs_common_pods_traffic_and_different_actions() {
    let rows: Vec<Row> = vec![
        (
            "Deny and Accept on common traffic",
            vec![
                cnp("p", "Admin", 5, X, &[DENY_Y]),
                cnp("q", "Admin", 5, X, &[ACCEPT_Y_80]),
            ],
            set(&[("cluster-priority-overlap", "q")]),
        ),
        (
            "the same action",
            vec![
                cnp("p", "Admin", 5, X, &[ACCEPT_Y_ALL]),
                cnp("q", "Admin", 5, X, &[ACCEPT_Y_80]),
            ],
            set(&[]),
        ),
        (
            "disjoint ports",
            vec![
                cnp("p", "Admin", 5, X, &[DENY_Y_81]),
                cnp("q", "Admin", 5, X, &[ACCEPT_Y_80]),
            ],
            set(&[]),
        ),
        (
            "no common subject pod",
            vec![
                cnp("p", "Admin", 5, X, &[DENY_Y]),
                cnp("q", "Admin", 5, Y, &[ACCEPT_Y_80]),
            ],
            set(&[]),
        ),
        (
            "different priorities: ordered, the later one is shadowed instead",
            vec![
                cnp("p", "Admin", 4, X, &[DENY_Y]),
                cnp("q", "Admin", 5, X, &[ACCEPT_Y_80]),
            ],
            set(&[("cluster-rule-shadowed", "q")]),
        ),
    ];
    for (name, docs, want) in rows {
        assert_eq!(warnings(&docs), want, "{name}");
    }
}

#[test]
fn baseline_pass_and_unreachable_baseline_rules() {
    let np = NP_ISOLATE_X.to_owned();
    let rows: Vec<Row> = vec![
        (
            "Pass in Baseline",
            vec![cnp("p", "Baseline", 1, Y, &[PASS_Y])],
            set(&[("baseline-pass", "p")]),
        ),
        (
            "Pass in Admin is what Pass is for",
            vec![cnp("p", "Admin", 1, Y, &[PASS_Y])],
            set(&[]),
        ),
        (
            "every subject pod isolated by NetworkPolicy",
            vec![np.clone(), cnp("p", "Baseline", 1, X, &[DENY_ALL])],
            set(&[("baseline-unreachable", "p")]),
        ),
        (
            "one subject pod not isolated",
            vec![np.clone(), cnp("p", "Baseline", 1, ALL, &[DENY_ALL])],
            set(&[]),
        ),
        (
            "Admin rules run before NetworkPolicy",
            vec![np, cnp("p", "Admin", 1, X, &[DENY_ALL])],
            set(&[]),
        ),
    ];
    for (name, docs, want) in rows {
        assert_eq!(warnings(&docs), want, "{name}");
    }
}
