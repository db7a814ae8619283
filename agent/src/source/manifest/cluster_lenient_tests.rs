use serde_json::json;

use super::*;

fn read(spec: Value) -> (ClusterNetworkPolicySpec, Vec<Unreadable>) {
    cluster_spec(Some(&spec))
}

fn rule(action: &str, ns: &str) -> Value {
    json!({"name": format!("{action}-{ns}"), "action": action,
           "from": [{"namespaces": {"matchLabels": {"team": ns}}}]})
}

#[test]
fn a_readable_spec_is_read_exactly() {
    let spec = json!({"tier": "Admin", "priority": 5, "subject": {"namespaces": {}},
                      "ingress": [rule("Deny", "blue")]});
    let (got, unreadable) = read(spec.clone());
    assert!(unreadable.is_empty());
    assert_eq!(got, serde_json::from_value(spec).unwrap());
    assert_eq!(cluster_spec(None).0, ClusterNetworkPolicySpec::default());
}

#[test]
fn an_unreadable_deny_rule_becomes_deny_all_in_its_place() {
    let mut bad = rule("Deny", "green");
    bad["protocols"] = json!([{"tcp": {"destinationPort": {"number": "80"}}}]);
    let spec = json!({"tier": "Admin", "priority": 5, "subject": {"namespaces": {}},
                      "ingress": [rule("Accept", "red"), bad, rule("Pass", "blue")]});
    let (got, unreadable) = read(spec);
    let ingress = got.ingress.unwrap();
    assert_eq!(ingress.len(), 3, "later rules keep their index");
    assert_eq!(ingress[0].action, "Accept");
    assert_eq!(ingress[1].action, UNREADABLE_ACTION);
    assert_eq!(ingress[1].name.as_deref(), Some("Deny-green"));
    assert_eq!(ingress[2].action, "Pass");
    assert_eq!((got.tier.as_str(), got.priority), ("Admin", 5));
    assert!(got.subject.namespaces.is_some());
    assert_eq!(unreadable.len(), 1);
    assert_eq!(unreadable[0].field, "spec.ingress[1]");
    assert!(
        unreadable[0].reason.contains("invalid type"),
        "{unreadable:?}"
    );
    assert_eq!(unreadable[0].instead, DENY_RULE);
}

#[test]
fn an_unreadable_accept_rule_matches_nothing_and_a_rule_without_action_denies() {
    let spec = json!({"tier": "Baseline", "subject": {"namespaces": {}},
                      "egress": [{"action": "Accept", "to": {"namespaces": {}}},
                                 {"action": 3, "to": [{"namespaces": {}}]},
                                 "not a rule"]});
    let (got, unreadable) = read(spec);
    let egress = got.egress.unwrap();
    assert_eq!(egress[0].action, "Accept");
    assert_eq!(egress[0].to, Some(Vec::new()), "no peers: matches nothing");
    assert_eq!(egress[1].action, UNREADABLE_ACTION);
    assert_eq!(egress[2].action, UNREADABLE_ACTION);
    let instead: Vec<&str> = unreadable.iter().map(|u| u.instead).collect();
    assert_eq!(instead, [ACCEPT_RULE, DENY_RULE, DENY_RULE]);
}

#[test]
fn a_direction_that_is_not_a_list_stays_covered_by_one_deny_all_rule() {
    let spec = json!({"tier": "Admin", "subject": {"namespaces": {}}, "egress": {"action": "Deny"},
                      "ingress": [rule("Deny", "blue")]});
    let (got, unreadable) = read(spec);
    let egress = got.egress.unwrap();
    assert_eq!(egress.len(), 1);
    assert_eq!(egress[0].action, UNREADABLE_ACTION);
    assert_eq!(got.ingress.unwrap().len(), 1);
    assert_eq!(unreadable[0].field, "spec.egress");
    assert_eq!(unreadable[0].instead, DENY_LIST);
}

#[test]
fn unreadable_priority_tier_and_subject_have_stand_ins() {
    let spec = json!({"tier": ["Admin"], "priority": "5", "subject": {"namespaces": 1},
                      "ingress": [rule("Deny", "blue")]});
    let (got, unreadable) = read(spec);
    assert_eq!(got.priority, 0);
    assert_eq!(got.tier, UNREADABLE_ACTION);
    assert_eq!(got.subject, ClusterPolicySubject::default());
    let fields: Vec<&str> = unreadable.iter().map(|u| u.field.as_str()).collect();
    assert_eq!(fields, ["spec.tier", "spec.priority", "spec.subject"]);
    let (got, unreadable) = read(json!(["not", "a", "spec"]));
    assert_eq!(got, ClusterNetworkPolicySpec::default());
    assert_eq!(unreadable[0].field, "spec");
    assert_eq!(unreadable[0].instead, NO_PODS);
}
