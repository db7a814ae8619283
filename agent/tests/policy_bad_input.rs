//! Bad input: each problem is reported naming the policy and field; the policy's other rules and
//! all other policies still apply; selected pods stay isolated (never fail open). Also the
//! manifest loader's handling of malformed documents and unknown kinds.
mod policy_util;

use std::path::Path;

use palisade::compiler::{CompiledOutput, Severity};
use palisade::source::load_str;
use policy_util::{check, TCP, UDP};

/// Asserts one problem with this policy, field and message fragment.
fn has_problem(
    out: &CompiledOutput,
    policy: &str,
    field: &str,
    fragment: &str,
    severity: Severity,
) {
    let found = out.problems.iter().any(|p| {
        p.policy.to_string() == policy
            && p.field == field
            && p.message.contains(fragment)
            && p.severity == severity
    });
    assert!(
        found,
        "no {severity:?} for {policy} {field} containing {fragment:?} in {:#?}",
        out.problems
    );
}

/// A policy on x/b with a broken first peer/port and a valid second one, plus an unrelated
/// valid policy on x/a.
fn policy(first_peer: &str, first_port: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: bad, namespace: x}}\nspec:\n  podSelector: {{matchLabels: {{app: b}}}}\n  ingress:\n  - from: [{first_peer}, {{podSelector: {{matchLabels: {{app: a}}}}}}]\n    ports: [{first_port}, {{port: 8080}}]\n  - from: [{{namespaceSelector: {{matchLabels: {{team: blue}}}}}}]\n    ports: [{{port: 9999}}]\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: good, namespace: x}}\nspec: {{podSelector: {{matchLabels: {{app: a}}}}, ingress: [{{from: [{{podSelector: {{}}}}]}}]}}\n"
    )
}

/// What must hold whatever is broken in the first peer or port.
const STILL: [policy_util::Case<'static>; 5] = [
    ("x/a", "x/b", TCP, 8080, true),
    ("y/a", "x/b", TCP, 9999, true),
    ("y/a", "x/b", TCP, 8080, false),
    ("x/b", "x/a", TCP, 80, true),
    ("y/a", "x/a", TCP, 80, false),
];

#[test]
fn invalid_cidr() {
    let out = check(
        &policy("{ipBlock: {cidr: 10.0.0.0/33}}", "{port: 8080}"),
        &STILL,
    );
    has_problem(
        &out,
        "x/bad",
        "spec.ingress[0].from[0].ipBlock.cidr",
        "invalid CIDR \"10.0.0.0/33\"",
        Severity::Error,
    );
    let out = check(
        &policy("{ipBlock: {cidr: 'not-a-cidr'}}", "{port: 8080}"),
        &STILL,
    );
    has_problem(
        &out,
        "x/bad",
        "spec.ingress[0].from[0].ipBlock.cidr",
        "invalid CIDR",
        Severity::Error,
    );
}

#[test]
fn except_outside_cidr() {
    // The whole ipBlock is dropped, so 10.0.1.x (y/a) is not let in through it.
    let p = policy(
        "{ipBlock: {cidr: 10.0.1.0/24, except: [10.9.0.0/16]}}",
        "{port: 8080}",
    );
    let out = check(&p, &STILL);
    has_problem(
        &out,
        "x/bad",
        "spec.ingress[0].from[0].ipBlock.except[0]",
        "not inside cidr 10.0.1.0/24",
        Severity::Error,
    );
}

#[test]
fn port_out_of_range() {
    let out = check(&policy("{podSelector: {}}", "{port: 70000}"), &STILL);
    has_problem(
        &out,
        "x/bad",
        "spec.ingress[0].ports[0].port",
        "port 70000 is out of range",
        Severity::Error,
    );
    let out = check(
        &policy("{podSelector: {}}", "{port: 80, endPort: 70000}"),
        &STILL,
    );
    has_problem(
        &out,
        "x/bad",
        "spec.ingress[0].ports[0].endPort",
        "endPort 70000 is out of range",
        Severity::Error,
    );
    let out = check(
        &policy("{podSelector: {}}", "{port: 90, endPort: 80}"),
        &STILL,
    );
    has_problem(
        &out,
        "x/bad",
        "spec.ingress[0].ports[0].endPort",
        "smaller than port",
        Severity::Error,
    );
}

#[test]
fn unknown_protocol() {
    let out = check(
        &policy("{podSelector: {}}", "{protocol: ICMP, port: 80}"),
        &STILL,
    );
    has_problem(
        &out,
        "x/bad",
        "spec.ingress[0].ports[0].protocol",
        "unknown protocol \"ICMP\"",
        Severity::Error,
    );
}

#[test]
fn named_port_resolving_nowhere() {
    let out = check(&policy("{podSelector: {}}", "{port: nope}"), &STILL);
    has_problem(
        &out,
        "x/bad",
        "spec.ingress[0].ports[0].port",
        "named port \"nope\"/TCP resolves to no containerPort",
        Severity::Warning,
    );
    let egress = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: e, namespace: y}\nspec: {podSelector: {}, policyTypes: [Egress], egress: [{ports: [{port: gone, protocol: UDP}]}, {ports: [{port: 53, protocol: UDP}]}]}\n";
    let out = check(
        egress,
        &[
            ("y/a", "x/a", UDP, 53, true),
            ("y/a", "x/a", TCP, 80, false),
        ],
    );
    has_problem(
        &out,
        "y/e",
        "spec.egress[0].ports[0].port",
        "\"gone\"/UDP",
        Severity::Warning,
    );
}

#[test]
fn rule_whose_every_entry_is_invalid_matches_nothing() {
    // Dropping the only port entry must not turn the rule into "all ports".
    let p = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: x}\nspec: {podSelector: {}, ingress: [{ports: [{port: 0}]}, {from: [{ipBlock: {cidr: bogus}}]}]}\n";
    let out = check(
        p,
        &[
            ("y/a", "x/a", TCP, 80, false),
            ("y/a", "x/b", UDP, 1, false),
            ("8.8.8.8", "x/a", TCP, 1, false),
        ],
    );
    assert_eq!(out.problems.len(), 2, "{:#?}", out.problems);
}

#[test]
fn invalid_selectors() {
    // A bad podSelector isolates the whole namespace (fail closed); its valid rule still allows.
    let p = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: x}\nspec: {podSelector: {matchExpressions: [{key: app, operator: Equals, values: [a]}]}, ingress: [{from: [{namespaceSelector: {matchLabels: {team: blue}}}]}]}\n";
    let out = check(
        p,
        &[
            ("y/a", "x/b", TCP, 8080, true),
            ("x/a", "x/b", TCP, 8080, false),
            ("x/b", "x/a", TCP, 80, false),
        ],
    );
    has_problem(
        &out,
        "x/p",
        "spec.podSelector.matchExpressions[0].operator",
        "unknown selector operator \"Equals\"",
        Severity::Error,
    );
    // A bad peer selector matches nothing.
    let p = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: x}\nspec: {podSelector: {}, ingress: [{from: [{podSelector: {matchExpressions: [{key: app, operator: In}]}}]}]}\n";
    let out = check(p, &[("x/a", "x/b", TCP, 8080, false)]);
    has_problem(
        &out,
        "x/p",
        "spec.ingress[0].from[0].podSelector.matchExpressions[0].operator",
        "needs a non-empty values list",
        Severity::Error,
    );
}

#[test]
fn malformed_manifests_are_reported_and_the_rest_loads() {
    let text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\nkind: Pod\nmetadata: {name: p, namespace: a}\nstatus: {podIP: 10.0.0.300}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n---\njust a string\n---\napiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Pod, metadata: {name: q, namespace: a}, status: {podIP: 10.0.0.3}}\n- {apiVersion: networking.k8s.io/v1, kind: NetworkPolicy, metadata: {name: n, namespace: a}, spec: {podSelector: {}, ingress: 3}}\n";
    let (changes, notes) = load_str(text, Path::new("dir/m.yaml"));
    // The namespace, pod q and policy n: a policy with an unreadable part still loads and
    // fails closed (tests/policy_fail_closed.rs).
    assert_eq!(changes.len(), 3, "{changes:#?}");
    let find = |doc: usize, fragment: &str, malformed: bool| {
        assert!(
            notes.iter().any(|n| n.document == doc
                && n.message.contains(fragment)
                && n.malformed == malformed
                && n.file == Path::new("dir/m.yaml")),
            "no note for document {doc} with {fragment:?}: {notes:#?}"
        );
    };
    find(1, "status.podIP", true);
    find(2, "Deployment", false);
    find(3, "not an object", true);
    find(4, "NetworkPolicy n: field spec", true);
    assert_eq!(notes.len(), 4, "{notes:#?}");
    let (_, notes) = load_str("{\"kind\": ", Path::new("x.json"));
    assert!(notes[0].message.contains("invalid JSON"), "{notes:?}");
}
