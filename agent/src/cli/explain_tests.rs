//! Table tests of `explain` and `matrix` over ClusterNetworkPolicy tiers: each row names the
//! verdict, the tier that decided, the deciding rule and the matrix mark; every row must also
//! have the compiled lookup agree with the reference evaluator.
use std::path::Path;

use super::explain::{explain_model, render_text, Explanation};
use super::matrix::matrix_for_model;
use crate::model::{Model, Protocol};

const BASE: &str = r#"
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
status: {podIP: 10.0.0.1}
---
apiVersion: v1
kind: Pod
metadata: {namespace: x, name: b, labels: {app: b}}
spec: {nodeName: n1, containers: [{name: c}]}
status: {podIP: 10.0.0.2}
---
apiVersion: v1
kind: Pod
metadata: {namespace: y, name: c, labels: {app: c}}
spec: {nodeName: n1, containers: [{name: c}]}
status: {podIP: 10.0.0.3}
"#;

/// Admin priority 10 on x: Deny from y, then Pass from x/b, then Accept from anything on 80.
const ADMIN: &str = r#"
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: guard}
spec:
  tier: Admin
  priority: 10
  subject: {namespaces: {matchLabels: {team: red}}}
  ingress:
  - {name: deny-blue, action: Deny, from: [{namespaces: {matchLabels: {team: blue}}}]}
  - {name: pass-b, action: Pass, from: [{pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: b}}}}]}
  - {action: Accept, from: [{namespaces: {}}], protocols: [{tcp: {destinationPort: {number: 80}}}]}
"#;

/// NetworkPolicy: x/a is isolated for ingress and allows nothing.
const NP_DENY_A: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {namespace: x, name: deny-a}
spec: {podSelector: {matchLabels: {app: a}}, policyTypes: [Ingress]}
"#;

/// Baseline: every pod denies ingress from every pod.
const BASELINE: &str = r#"
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: floor}
spec:
  tier: Baseline
  priority: 0
  subject: {namespaces: {}}
  ingress: [{name: deny-all, action: Deny, from: [{namespaces: {}}]}]
"#;

fn model(parts: &[&str]) -> Model {
    let text = parts.join("\n---\n");
    let (changes, notes) = crate::source::load_str(&text, Path::new("t.yaml"));
    assert!(notes.is_empty(), "{notes:?}");
    let mut m = Model::default();
    for c in changes {
        m.apply(c);
    }
    m
}

fn one(m: &Model, from: &str, to: &str, port: u16) -> Explanation {
    let mut list = explain_model(m, from, to, Protocol::Tcp, port).expect("explains");
    assert_eq!(list.len(), 1);
    list.remove(0)
}

/// from, to, port, allowed, ingress tier, ingress decider (prefix), matrix mark.
type Row = (
    &'static str,
    &'static str,
    u16,
    bool,
    &'static str,
    &'static str,
    char,
);

#[test]
fn each_tier_decides_and_the_compiled_lookup_agrees() {
    let m = model(&[BASE, ADMIN, NP_DENY_A, BASELINE]);
    let rows: [Row; 6] = [
        // Admin Deny beats everything after it.
        (
            "y/c",
            "x/a",
            80,
            false,
            "Admin",
            "ClusterNetworkPolicy guard (Admin) ingress[0] \"deny-blue\": Deny",
            'D',
        ),
        // Admin Pass hands over to NetworkPolicy, which isolates x/a and allows nothing.
        (
            "x/b",
            "x/a",
            80,
            false,
            "NetworkPolicy",
            "NetworkPolicy isolation (x/deny-a)",
            'X',
        ),
        // Admin Accept overrides the NetworkPolicy isolation.
        (
            "x/a",
            "x/a",
            80,
            true,
            "Admin",
            "ClusterNetworkPolicy guard (Admin) ingress[2]: Accept",
            'A',
        ),
        // No Admin match on 81: NetworkPolicy isolation denies.
        (
            "x/a",
            "x/a",
            81,
            false,
            "NetworkPolicy",
            "NetworkPolicy isolation",
            'X',
        ),
        // x/b is not isolated by NetworkPolicy: Admin passes, the Baseline Deny decides.
        (
            "x/b",
            "x/b",
            80,
            false,
            "Baseline",
            "ClusterNetworkPolicy floor (Baseline) ingress[0] \"deny-all\": Deny",
            'd',
        ),
        // y/c: no Admin subject, no NetworkPolicy: the Baseline Deny decides.
        (
            "x/a",
            "y/c",
            80,
            false,
            "Baseline",
            "ClusterNetworkPolicy floor (Baseline)",
            'd',
        ),
    ];
    let (matrix, _) = matrix_for_model(&m, Protocol::Tcp, 80, None);
    let (matrix81, _) = matrix_for_model(&m, Protocol::Tcp, 81, None);
    for (from, to, port, allowed, tier, decider, mark) in rows {
        let e = one(&m, from, to, port);
        let row = format!(
            "{from} -> {to}:{port}\n{}",
            render_text(std::slice::from_ref(&e))
        );
        assert_eq!(e.allowed, allowed, "{row}");
        assert_eq!(e.agrees, Some(true), "{row}");
        let t = e.ingress.tiers.as_ref().expect("ingress walked");
        assert_eq!(t.tier.as_deref(), Some(tier), "{row}");
        assert!(t.decided_by.starts_with(decider), "{row}");
        assert!(
            e.decided_by.as_deref().unwrap_or("").contains(decider) || allowed,
            "{row}"
        );
        let table = if port == 80 { &matrix } else { &matrix81 };
        let cell = table
            .cells
            .iter()
            .find(|c| c.from == from && c.to == to)
            .expect("cell");
        assert_eq!(cell.mark(), mark, "{row}");
        assert_eq!(cell.allowed, allowed, "{row}");
    }
}

#[test]
fn text_lists_every_matching_rule_in_order_and_marks_the_decider() {
    let m = model(&[BASE, ADMIN, NP_DENY_A, BASELINE]);
    let text = render_text(&[one(&m, "x/b", "x/a", 80)]);
    // x/b matches pass-b and then the Accept on 80: the Pass decides, the Accept is not reached.
    let pass = text
        .find("ingress[1] \"pass-b\": Pass  <- decides")
        .expect(&text);
    let accept = text.find("ingress[2]: Accept  (not reached)").expect(&text);
    assert!(pass < accept, "{text}");
    assert!(
        text.contains("2. NetworkPolicy: isolated by x/deny-a; no rule allows it"),
        "{text}"
    );
    assert!(text.contains("3. Baseline tier (not evaluated):"), "{text}");
    assert!(
        text.contains("check: the compiled lookup (what the dataplane does) agrees"),
        "{text}"
    );
    assert!(
        text.contains("decided by ingress of x/a: NetworkPolicy isolation"),
        "{text}"
    );
}

#[test]
fn json_carries_the_tier_walk() {
    let m = model(&[BASE, ADMIN, NP_DENY_A, BASELINE]);
    let v = serde_json::to_value(one(&m, "y/c", "x/a", 80)).expect("json");
    assert_eq!(v["agrees"], true);
    assert_eq!(v["tiered"], true);
    let t = &v["ingress"]["tiers"];
    assert_eq!(t["tier"], "Admin");
    assert_eq!(t["admin"][0]["policy"], "guard");
    assert_eq!(t["admin"][0]["index"], 0);
    assert_eq!(t["admin"][0]["name"], "deny-blue");
    assert_eq!(t["admin"][0]["reached"], true);
    assert_eq!(t["network_policy_evaluated"], false);
    assert_eq!(t["baseline"][0]["reached"], false);
    // Old agents send no walk: the explanation still reads.
    let mut old = v.clone();
    for key in ["agrees", "tiered", "decided_by"] {
        old.as_object_mut().expect("object").remove(key);
    }
    old["ingress"]
        .as_object_mut()
        .expect("object")
        .remove("tiers");
    let back: Explanation = serde_json::from_value(old).expect("reads");
    assert!(back.ingress.tiers.is_none() && back.agrees.is_none());
}

#[test]
fn networkpolicy_only_models_keep_the_plain_format() {
    let m = model(&[BASE, NP_DENY_A]);
    let e = one(&m, "x/b", "x/a", 80);
    assert!(!e.tiered);
    let text = render_text(&[e]);
    assert!(!text.contains("Admin tier"), "{text}");
    assert!(
        text.contains("ingress of x/a: isolated by x/deny-a; no rule allows it"),
        "{text}"
    );
    assert!(text.contains("check: the compiled lookup"), "{text}");
    let (matrix, _) = matrix_for_model(&m, Protocol::Tcp, 80, None);
    assert!(!matrix.render_text().contains("legend"));
    assert!(!matrix.render_json().expect("json").contains("tier"));
}

/// Baseline priority 0 on y: Pass from x, then (priority 1) Deny from everything.
const BASELINE_PASS: &str = r#"
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: floor-pass}
spec:
  tier: Baseline
  priority: 0
  subject: {namespaces: {matchLabels: {team: blue}}}
  ingress: [{name: pass-red, action: Pass, from: [{namespaces: {matchLabels: {team: red}}}]}]
"#;

#[test]
fn a_baseline_pass_ends_the_tier_with_the_default_allow() {
    // The floor's Deny after the Pass: priority 1 (a larger value is evaluated later).
    let later_floor = BASELINE.replace("priority: 0", "priority: 1");
    let m = model(&[BASE, BASELINE_PASS, &later_floor]);
    let e = one(&m, "x/a", "y/c", 80);
    assert!(e.allowed);
    assert_eq!(e.agrees, Some(true));
    let t = e.ingress.tiers.as_ref().expect("walked");
    assert_eq!(t.tier.as_deref(), Some("Default"));
    assert!(
        t.decided_by
            .contains("\"pass-red\": Pass ended the Baseline tier"),
        "{}",
        t.decided_by
    );
    let text = render_text(&[e]);
    assert!(
        text.contains("Pass  <- decides: Pass ends the tier"),
        "{text}"
    );
    assert!(text.contains("\"deny-all\": Deny  (not reached)"), "{text}");
    let (matrix, _) = matrix_for_model(&m, Protocol::Tcp, 80, None);
    let cell = matrix
        .cells
        .iter()
        .find(|c| c.from == "x/a" && c.to == "y/c")
        .expect("cell");
    assert_eq!(
        cell.mark(),
        '.',
        "the default allow is not a rule's verdict"
    );
}
