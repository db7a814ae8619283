//! A ClusterNetworkPolicy whose spec has a type error is not dropped (which would lose its Deny
//! rules): it loads with a manifest note, an unreadable Deny rule denies everything for the
//! policy's subject in its direction, an unreadable Accept rule accepts nothing, and the
//! compiled lookup and the reference evaluator agree on every connection.
mod policy_util;

use std::path::Path;

use palisade::compiler::{compile, verdict, CompileOptions};
use palisade::model::{Model, Protocol};
use palisade::reference::{self, ReferenceOptions};
use palisade::source::{load_str, ManifestNote};
use policy_util::{addr, BASE, TCP, UDP};

/// Admin, subject namespace x: Accept from y/a on TCP 80, then a Deny from y whose port has a
/// type error (`number: "53"`), then Accept from everything.
const BAD_DENY: &str = r#"
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: bad-deny}
spec:
  tier: Admin
  priority: 10
  subject: {namespaces: {matchLabels: {team: red}}}
  ingress:
  - name: accept-ya-80
    action: Accept
    from: [{pods: {namespaceSelector: {matchLabels: {team: blue}}, podSelector: {matchLabels: {app: a}}}}]
    protocols: [{tcp: {destinationPort: {number: 80}}}]
  - name: deny-y-dns
    action: Deny
    from: [{namespaces: {matchLabels: {team: blue}}}]
    protocols: [{udp: {destinationPort: {number: "53"}}}]
  - {name: accept-all, action: Accept, from: [{namespaces: {}}]}
"#;

/// Admin, subject namespace x: an Accept whose peers are not a list, next to a
/// NetworkPolicy isolating x/a with no rules. Read exactly, the Accept would open x/a to y.
const BAD_ACCEPT: &str = r#"
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: bad-accept}
spec:
  tier: Admin
  priority: 10
  subject: {namespaces: {matchLabels: {team: red}}}
  ingress:
  - {name: accept-y, action: Accept, from: {namespaces: {matchLabels: {team: blue}}}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: isolate-a, namespace: x}
spec:
  podSelector: {matchLabels: {app: a}}
  policyTypes: [Ingress]
"#;

fn load(policies: &str) -> (Model, Vec<ManifestNote>) {
    let (changes, notes) = load_str(&format!("{BASE}\n---\n{policies}"), Path::new("t.yaml"));
    let mut model = Model::new();
    for c in changes {
        model.apply(c);
    }
    (model, notes)
}

/// Whether `from` may connect to `to`; the compiled lookup and the reference must agree.
fn allowed(model: &Model, from: &str, to: &str, protocol: Protocol, port: u16) -> bool {
    let out = compile(model, &CompileOptions::default());
    let (f, t) = (addr(model, from), addr(model, to));
    let got = verdict(&out, f, t, protocol, port).allowed;
    let want = reference::evaluate(model, ReferenceOptions::default(), f, t, protocol, port);
    assert_eq!(got, want.allowed(), "{from} -> {to} {protocol}/{port}");
    got
}

#[test]
fn an_unreadable_deny_rule_denies_all_for_the_subject_in_its_place() {
    let (model, notes) = load(BAD_DENY);
    assert!(
        model.cluster_policies.contains_key("bad-deny"),
        "kept, not dropped"
    );
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(notes[0].message.contains("spec.ingress[1]"), "{notes:?}");
    assert!(notes[0].message.contains("Deny all"), "{notes:?}");
    let out = compile(&model, &CompileOptions::default());
    assert!(
        out.problems
            .iter()
            .any(|p| p.to_string().contains("unreadable")),
        "{:?}",
        out.problems
    );
    // The rule before it still decides first.
    assert!(allowed(&model, "y/a", "x/a", TCP, 80));
    // From here on, everything to the subject is denied: the stand-in is "Deny all" (any peer,
    // any port), ahead of the Accept-all rule after it.
    assert!(!allowed(&model, "y/a", "x/a", UDP, 53));
    assert!(!allowed(&model, "y/a", "x/a", TCP, 8080));
    assert!(!allowed(&model, "x/b", "x/a", TCP, 80));
    // Pods outside the subject are untouched, and the subject's egress is not covered.
    assert!(allowed(&model, "x/a", "y/a", UDP, 53));
    assert!(allowed(&model, "x/a", "y/c", TCP, 80));
}

#[test]
fn an_unreadable_accept_rule_accepts_nothing() {
    let (model, notes) = load(BAD_ACCEPT);
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(notes[0].message.contains("matches no traffic"), "{notes:?}");
    // NetworkPolicy isolation still decides for x/a; x/b is not isolated.
    assert!(!allowed(&model, "y/a", "x/a", TCP, 80));
    assert!(!allowed(&model, "y/c", "x/a", UDP, 53));
    assert!(allowed(&model, "y/a", "x/b", TCP, 8080));
}
