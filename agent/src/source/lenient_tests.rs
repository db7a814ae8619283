use serde_json::json;

use super::*;

/// What the lenient reading must give: unreadable fields (with a reason fragment), the
/// effective policyTypes, the rule counts, and whether the podSelector was replaced.
struct Case {
    name: &'static str,
    spec: Value,
    unreadable: &'static [(&'static str, &'static str)],
    types: Option<&'static [&'static str]>,
    ingress: Option<usize>,
    egress: Option<usize>,
    selector_replaced: bool,
}

fn cases() -> Vec<Case> {
    let sel = json!({"matchLabels": {"app": "b"}});
    let good = json!({"from": [{"podSelector": {}}], "ports": [{"port": 80}]});
    vec![
        Case {
            name: "endPort not a number",
            spec: json!({"podSelector": sel, "ingress": [good, {"ports": [{"port": 80, "endPort": "x"}]}]}),
            unreadable: &[(
                "spec.ingress[1]",
                "ports[0].endPort: invalid type: string \"x\"",
            )],
            types: None,
            ingress: Some(2),
            egress: None,
            selector_replaced: false,
        },
        Case {
            name: "port an object",
            spec: json!({"podSelector": sel, "ingress": [{"ports": [{"port": {}}]}, good]}),
            unreadable: &[("spec.ingress[0]", "ports[0].port:")],
            types: None,
            ingress: Some(2),
            egress: None,
            selector_replaced: false,
        },
        Case {
            name: "rule not an object",
            spec: json!({"podSelector": sel, "egress": ["x", good]}),
            unreadable: &[("spec.egress[0]", "not an object (a string)")],
            types: None,
            ingress: None,
            egress: Some(2),
            selector_replaced: false,
        },
        Case {
            name: "null rule",
            spec: json!({"podSelector": sel, "ingress": [null]}),
            unreadable: &[("spec.ingress[0]", "not an object (null)")],
            types: None,
            ingress: Some(1),
            egress: None,
            selector_replaced: false,
        },
        Case {
            name: "peer selector labels not strings",
            spec: json!({"podSelector": sel, "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": 1}}}]}]}),
            unreadable: &[("spec.ingress[0]", "from[0].podSelector:")],
            types: None,
            ingress: Some(1),
            egress: None,
            selector_replaced: false,
        },
        Case {
            name: "egress not a list",
            spec: json!({"podSelector": sel, "egress": {"to": []}}),
            unreadable: &[("spec.egress", "not a list (an object)")],
            types: None,
            ingress: None,
            egress: Some(1),
            selector_replaced: false,
        },
        Case {
            name: "policyTypes a string",
            spec: json!({"podSelector": sel, "policyTypes": "Ingress", "ingress": [good]}),
            unreadable: &[("spec.policyTypes", "invalid type")],
            types: Some(&["Ingress", "Egress"]),
            ingress: Some(1),
            egress: None,
            selector_replaced: false,
        },
        Case {
            name: "podSelector unreadable, egress present",
            spec: json!({"podSelector": {"matchLabels": ["app"]}, "ingress": [good], "egress": [good]}),
            unreadable: &[("spec.podSelector", "invalid type")],
            types: Some(&["Ingress", "Egress"]),
            ingress: None,
            egress: None,
            selector_replaced: true,
        },
        Case {
            name: "podSelector unreadable, ingress only",
            spec: json!({"podSelector": 7, "ingress": [good]}),
            unreadable: &[("spec.podSelector", "invalid type")],
            types: Some(&["Ingress"]),
            ingress: None,
            egress: None,
            selector_replaced: true,
        },
        Case {
            name: "podSelector unreadable, policyTypes Egress",
            spec: json!({"podSelector": 7, "policyTypes": ["Egress"]}),
            unreadable: &[("spec.podSelector", "invalid type")],
            types: Some(&["Egress"]),
            ingress: None,
            egress: None,
            selector_replaced: true,
        },
        Case {
            name: "podSelector and policyTypes unreadable",
            spec: json!({"podSelector": 7, "policyTypes": 3}),
            unreadable: &[("spec.policyTypes", ""), ("spec.podSelector", "")],
            types: Some(&["Ingress", "Egress"]),
            ingress: None,
            egress: None,
            selector_replaced: true,
        },
        Case {
            name: "spec not an object",
            spec: json!(["x"]),
            unreadable: &[("spec", "not an object (a list)")],
            types: Some(&["Ingress", "Egress"]),
            ingress: None,
            egress: None,
            selector_replaced: true,
        },
        Case {
            name: "readable spec is exact",
            spec: json!({"podSelector": sel, "ingress": [good], "egress": []}),
            unreadable: &[],
            types: None,
            ingress: Some(1),
            egress: Some(0),
            selector_replaced: false,
        },
    ]
}

fn selector_replaced(spec: &NetworkPolicySpec) -> bool {
    spec.pod_selector
        .match_expressions
        .iter()
        .flatten()
        .any(|e| e.operator.starts_with(MARK))
}

#[test]
fn unreadable_parts_fail_closed() {
    for case in cases() {
        let (spec, unreadable) = policy_spec(Some(&case.spec));
        let fields: Vec<&str> = unreadable.iter().map(|u| u.field.as_str()).collect();
        let want: Vec<&str> = case.unreadable.iter().map(|(f, _)| *f).collect();
        assert_eq!(fields, want, "{}: {unreadable:?}", case.name);
        for (u, (_, fragment)) in unreadable.iter().zip(case.unreadable) {
            assert!(u.reason.contains(fragment), "{}: {u:?}", case.name);
        }
        let types: Option<Vec<&str>> = spec.policy_types.as_ref().map(|t| {
            let known = t.iter().filter(|t| !t.starts_with(MARK));
            known.map(String::as_str).collect()
        });
        assert_eq!(types.as_deref(), case.types, "{}", case.name);
        assert_eq!(
            spec.ingress.as_ref().map(Vec::len),
            case.ingress,
            "{}",
            case.name
        );
        assert_eq!(
            spec.egress.as_ref().map(Vec::len),
            case.egress,
            "{}",
            case.name
        );
        assert_eq!(
            selector_replaced(&spec),
            case.selector_replaced,
            "{}",
            case.name
        );
    }
}

#[test]
fn an_unreadable_rule_keeps_the_others_in_place() {
    let good = json!({"from": [{"podSelector": {}}], "ports": [{"port": 80}]});
    let spec = json!({"ingress": [{"ports": [{"endPort": "x"}]}, good]});
    let (spec, _) = policy_spec(Some(&spec));
    let rules = spec.ingress.unwrap();
    let exact: IngressRule = serde_json::from_value(good).unwrap();
    assert_eq!(rules[1], exact);
    let stand_in = rules[0].from.as_ref().unwrap()[0]
        .ip_block
        .as_ref()
        .unwrap();
    assert!(stand_in
        .cidr
        .starts_with("unreadable rule (ports[0].endPort: invalid type"));
    assert_eq!(rules[0].ports, None);
    assert!(is_stand_in_rule(rules[0].from.as_deref()));
    assert!(!is_stand_in_rule(rules[1].from.as_deref()));
}

#[test]
fn absent_and_null_spec_are_the_empty_spec() {
    for spec in [None, Some(&Value::Null)] {
        let (read, unreadable) = policy_spec(spec);
        assert_eq!(read, NetworkPolicySpec::default());
        assert!(unreadable.is_empty());
    }
}
