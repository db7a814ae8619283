//! ClusterNetworkPolicy semantics, table-driven: each row is policies, a connection and the
//! expected verdict with the tier/policy/rule that decided each side. Every row is answered by the
//! reference evaluator (tiers walked in order) and by the compiled, flattened tables (looked up as
//! the dataplane does), and both must agree with the row.
mod policy_util;

use palisade::compiler::{compile, verdict, CompileOptions, SideDecision, Tier};
use palisade::model::Protocol;
use palisade::reference::{self, ClusterTier, Decider, ReferenceOptions, SideAnswer};
use policy_util::{addr, cluster, SCTP, TCP, UDP};

/// Admin, priority 10: namespace x (team=red) denies ingress from namespace y (team=blue).
const ADMIN_DENY_Y: &str = r#"
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: admin-deny-y}
spec:
  tier: Admin
  priority: 10
  subject: {namespaces: {matchLabels: {team: red}}}
  ingress:
  - {name: deny-from-blue, action: Deny, from: [{namespaces: {matchLabels: {team: blue}}}]}
"#;

/// Admin, priority 5: pods app=a of any namespace are passed on to NetworkPolicy.
const ADMIN_PASS_A: &str = r#"
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: admin-pass-a}
spec:
  tier: Admin
  priority: 5
  subject: {namespaces: {matchLabels: {team: red}}}
  ingress:
  - name: pass-app-a
    action: Pass
    from: [{pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: a}}}}]
"#;

/// NetworkPolicy: x/a accepts only x/b on TCP 80.
const NP_A_FROM_B: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: a-from-b, namespace: x}
spec:
  podSelector: {matchLabels: {app: a}}
  ingress: [{from: [{podSelector: {matchLabels: {app: b}}}], ports: [{port: 80}]}]
"#;

/// Baseline: every pod denies ingress from every pod.
const BASELINE_DENY: &str = r#"
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: baseline-deny}
spec:
  tier: Baseline
  priority: 0
  subject: {namespaces: {}}
  ingress: [{name: default-deny, action: Deny, from: [{namespaces: {}}]}]
"#;

/// Admin, priority 1: x/a accepts y/c on TCP 8080 whatever NetworkPolicy says.
const ADMIN_ACCEPT_C: &str = r#"
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: admin-accept-c}
spec:
  tier: Admin
  priority: 1
  subject: {pods: {namespaceSelector: {matchLabels: {team: red}}, podSelector: {matchLabels: {app: a}}}}
  ingress:
  - action: Accept
    from: [{pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: c}}}}]
    protocols: [{tcp: {destinationPort: {number: 8080}}}]
"#;

fn cnp(name: &str, tier: &str, priority: u32, subject: &str, dir: &str, rules: &str) -> String {
    format!(
        "apiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\n\
         metadata: {{name: {name}}}\nspec:\n  tier: {tier}\n  priority: {priority}\n  \
         subject: {subject}\n  {dir}: {rules}\n"
    )
}

/// A short name for who decided one side: `admin:policy[index]:Action`, `np:ns/name[index]`,
/// `np-isolated`, `default`, `default-after-pass:policy`, `node`, `none`.
fn decider_name(d: &Decider) -> String {
    match d {
        Decider::NotEndpoint => "none".into(),
        Decider::NodeTraffic => "node".into(),
        Decider::Cluster(m) => {
            let tier = match m.tier {
                ClusterTier::Admin => "admin",
                ClusterTier::Baseline => "baseline",
            };
            format!("{tier}:{}[{}]:{:?}", m.policy, m.index, m.action)
        }
        Decider::NetworkPolicy { policy, index } => format!("np:{policy}[{index}]"),
        Decider::NetworkPolicyIsolated { .. } => "np-isolated".into(),
        Decider::Default { passed: None } => "default".into(),
        Decider::Default { passed: Some(m) } => format!("default-after-pass:{}", m.policy),
    }
}

/// The same name from the compiled lookup (the rule id maps back through the output's rules).
fn compiled_name(out: &palisade::compiler::CompiledOutput, d: &SideDecision) -> String {
    let cluster = |rule: &palisade::compiler::RuleRef, action: &str| {
        let tier = match rule.tier {
            Tier::Admin => "admin",
            Tier::Baseline => "baseline",
            _ => "?",
        };
        format!("{tier}:{}[{}]:{action}", rule.policy.name, rule.index)
    };
    match d {
        SideDecision::NotEndpoint => "none".into(),
        SideDecision::NodeTraffic => "node".into(),
        SideDecision::NotIsolated => "default".into(),
        SideDecision::Allowed { rule: Some(r), .. } if r.tier == Tier::NetworkPolicy => {
            format!("np:{}[{}]", r.policy, r.index)
        }
        SideDecision::Allowed { rule: Some(r), .. } => cluster(r, "Accept"),
        SideDecision::Allowed { rule: None, .. } => "allowed-without-rule".into(),
        SideDecision::Denied { .. } => "np-isolated".into(),
        SideDecision::DeniedByRule { rule_id, .. } => match out.rules.get(rule_id) {
            Some(r) => cluster(r, "Deny"),
            None => format!("deny-rule-{rule_id}?"),
        },
    }
}

/// policies, from, to, protocol, port, allowed, "egress decider | ingress decider".
type Row<'a> = (String, &'a str, &'a str, Protocol, u16, bool, &'a str);

fn run(rows: &[Row<'_>]) {
    let mut bad = Vec::new();
    for (i, (policies, from, to, protocol, port, want, deciders)) in rows.iter().enumerate() {
        let model = cluster(policies);
        let (f, t) = (addr(&model, from), addr(&model, to));
        let options = ReferenceOptions::default();
        let r = reference::evaluate_detailed(&model, options, f, t, *protocol, *port);
        let name = |s: &SideAnswer| decider_name(&s.decider);
        let got = format!("{} | {}", name(&r.egress), name(&r.ingress));
        let row = format!("row {i}: {from} -> {to} {protocol}/{port}");
        if r.allowed() != *want || got != *deciders {
            bad.push(format!(
                "{row}: reference says {} by {got}, want {want} by {deciders}",
                r.allowed()
            ));
        }
        let out = compile(&model, &CompileOptions::default());
        let v = verdict(&out, f, t, *protocol, *port);
        let compiled = format!(
            "{} | {}",
            compiled_name(&out, &v.egress),
            compiled_name(&out, &v.ingress)
        );
        // The compiled side cannot tell "default" after a Baseline Pass from a plain default.
        let want_compiled = deciders.replace("default-after-pass:", "default#");
        let want_compiled: String = want_compiled
            .split(" | ")
            .map(|s| {
                if s.starts_with("default#") {
                    "default"
                } else {
                    s
                }
            })
            .collect::<Vec<_>>()
            .join(" | ");
        if v.allowed != *want || compiled != want_compiled {
            bad.push(format!(
                "{row}: compiled says {} by {compiled}, want {want} by {want_compiled}",
                v.allowed
            ));
        }
    }
    assert!(bad.is_empty(), "mismatches:\n{}", bad.join("\n"));
}

fn join(parts: &[&str]) -> String {
    parts.join("\n---\n")
}

#[test]
#[rustfmt::skip]
fn admin_deny_pass_networkpolicy_and_baseline() {
    let all = join(&[ADMIN_DENY_Y, ADMIN_PASS_A, NP_A_FROM_B, BASELINE_DENY]);
    let rows: Vec<Row<'_>> = vec![
        // Admin Deny decides before anything else.
        (join(&[ADMIN_DENY_Y]), "y/c", "x/a", TCP, 80, false, "default | admin:admin-deny-y[0]:Deny"),
        (join(&[ADMIN_DENY_Y]), "x/b", "x/a", TCP, 80, true, "default | default"),
        // A Pass at priority 5 comes before the Deny at 10 and hands over to NetworkPolicy,
        // which does not isolate x/b: the Baseline tier would be next, and there is none.
        (join(&[ADMIN_DENY_Y, ADMIN_PASS_A]), "y/a", "x/b", TCP, 80, true, "default | default"),
        (join(&[ADMIN_DENY_Y, ADMIN_PASS_A]), "y/c", "x/b", TCP, 80, false, "default | admin:admin-deny-y[0]:Deny"),
        // Passed to NetworkPolicy, which isolates x/a and allows only x/b on 80.
        (all.clone(), "y/a", "x/a", TCP, 80, false, "default | np-isolated"),
        (all.clone(), "x/b", "x/a", TCP, 80, true, "default | np:x/a-from-b[0]"),
        (all.clone(), "x/b", "x/a", TCP, 81, false, "default | np-isolated"),
        // Not isolated by NetworkPolicy: the Baseline default deny decides.
        (all.clone(), "x/a", "y/a", TCP, 80, false, "default | baseline:baseline-deny[0]:Deny"),
        (all.clone(), "y/a", "y/c", UDP, 53, false, "default | baseline:baseline-deny[0]:Deny"),
        // Node traffic is allowed before any tier.
        (all.clone(), "192.168.1.1", "y/a", TCP, 80, true, "none | node"),
        // A non-pod peer is not in any namespace: the Baseline rule does not match it.
        (all.clone(), "8.8.8.8", "y/a", TCP, 80, true, "none | default"),
    ];
    run(&rows);
}

#[test]
#[rustfmt::skip]
fn admin_accept_overrides_networkpolicy_isolation() {
    let p = join(&[ADMIN_ACCEPT_C, NP_A_FROM_B]);
    let rows: Vec<Row<'_>> = vec![
        (p.clone(), "y/c", "x/a", TCP, 8080, true, "default | admin:admin-accept-c[0]:Accept"),
        (p.clone(), "y/c", "x/a", TCP, 80, false, "default | np-isolated"),
        (p.clone(), "y/c", "x/a", UDP, 8080, false, "default | np-isolated"),
        (p.clone(), "x/b", "x/a", TCP, 80, true, "default | np:x/a-from-b[0]"),
    ];
    run(&rows);
}

#[test]
#[rustfmt::skip]
fn priorities_rule_order_and_ties() {
    let subject = "{namespaces: {matchLabels: {team: red}}}";
    let from_y = "[{namespaces: {matchLabels: {team: blue}}}]";
    let accept = format!("[{{action: Accept, from: {from_y}}}]");
    let deny = format!("[{{action: Deny, from: {from_y}}}]");
    let low_deny = join(&[
        &cnp("p-accept", "Admin", 20, subject, "ingress", &accept),
        &cnp("p-deny", "Admin", 10, subject, "ingress", &deny),
    ]);
    let low_accept = join(&[
        &cnp("p-accept", "Admin", 10, subject, "ingress", &accept),
        &cnp("p-deny", "Admin", 20, subject, "ingress", &deny),
    ]);
    // Same priority: ordered by name (the API leaves it open).
    let tie = join(&[
        &cnp("b-deny", "Admin", 7, subject, "ingress", &deny),
        &cnp("a-accept", "Admin", 7, subject, "ingress", &accept),
    ]);
    let ordered = cnp(
        "ordered",
        "Admin",
        3,
        subject,
        "ingress",
        "[{action: Accept, from: [{pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: a}}}}]}, \
         {action: Deny, from: [{namespaces: {matchLabels: {team: blue}}}]}]",
    );
    let rows: Vec<Row<'_>> = vec![
        (low_deny, "y/a", "x/b", TCP, 80, false, "default | admin:p-deny[0]:Deny"),
        (low_accept, "y/a", "x/b", TCP, 80, true, "default | admin:p-accept[0]:Accept"),
        (tie, "y/a", "x/b", TCP, 80, true, "default | admin:a-accept[0]:Accept"),
        (ordered.clone(), "y/a", "x/b", TCP, 80, true, "default | admin:ordered[0]:Accept"),
        (ordered, "y/c", "x/b", TCP, 80, false, "default | admin:ordered[1]:Deny"),
    ];
    run(&rows);
}

#[test]
#[rustfmt::skip]
fn ports_ranges_and_named_ports() {
    let subject = "{namespaces: {}}";
    let range = cnp(
        "range",
        "Admin",
        1,
        subject,
        "ingress",
        "[{action: Deny, from: [{namespaces: {}}], protocols: [{tcp: {destinationPort: {range: {start: 8000, end: 9000}}}}]}]",
    );
    let named = cnp(
        "named",
        "Admin",
        1,
        subject,
        "ingress",
        "[{action: Deny, from: [{namespaces: {matchLabels: {team: blue}}}], protocols: [{destinationNamedPort: dns}]}]",
    );
    let sctp = cnp(
        "sctp",
        "Baseline",
        1,
        subject,
        "ingress",
        "[{action: Deny, from: [{namespaces: {}}], protocols: [{sctp: {destinationPort: {number: 80}}}, {udp: {}}]}]",
    );
    let rows: Vec<Row<'_>> = vec![
        (range.clone(), "x/b", "x/a", TCP, 8000, false, "default | admin:range[0]:Deny"),
        (range.clone(), "x/b", "x/a", TCP, 8500, false, "default | admin:range[0]:Deny"),
        (range.clone(), "x/b", "x/a", TCP, 9000, false, "default | admin:range[0]:Deny"),
        (range.clone(), "x/b", "x/a", TCP, 9001, true, "default | default"),
        (range.clone(), "x/b", "x/a", TCP, 7999, true, "default | default"),
        (range, "x/b", "x/a", UDP, 8500, true, "default | default"),
        // x/a has dns = UDP 53; y/a has no such port.
        (named.clone(), "y/a", "x/a", UDP, 53, false, "default | admin:named[0]:Deny"),
        (named.clone(), "y/a", "x/a", TCP, 53, true, "default | default"),
        (named.clone(), "x/b", "x/a", UDP, 53, true, "default | default"),
        (named, "x/a", "y/a", UDP, 53, true, "default | default"),
        (sctp.clone(), "x/a", "x/b", SCTP, 80, false, "default | baseline:sctp[0]:Deny"),
        (sctp.clone(), "x/a", "x/b", SCTP, 81, true, "default | default"),
        (sctp.clone(), "x/a", "x/b", UDP, 12345, false, "default | baseline:sctp[0]:Deny"),
        (sctp, "x/a", "x/b", TCP, 80, true, "default | default"),
    ];
    run(&rows);
}

#[test]
#[rustfmt::skip]
fn egress_networks_nodes_and_networkpolicy() {
    const NODE3: &str =
        "apiVersion: v1\nkind: Node\nmetadata: {name: node-3, labels: {role: infra}}\n\
                         status: {addresses: [{type: InternalIP, address: 192.168.1.3}]}";
    let subject = "{pods: {namespaceSelector: {matchLabels: {team: red}}, podSelector: {matchLabels: {app: a}}}}";
    let networks = cnp(
        "nets",
        "Admin",
        1,
        subject,
        "egress",
        "[{action: Deny, to: [{networks: [10.0.1.0/24, \"fd00::2/128\"]}]}]",
    );
    let nodes = join(&[
        NODE3,
        &cnp(
            "nodes",
            "Admin",
            1,
            subject,
            "egress",
            "[{action: Deny, to: [{nodes: {matchLabels: {role: infra}}}]}, {action: Deny, to: [{nodes: {}}], protocols: [{tcp: {destinationPort: {number: 22}}}]}]",
        ),
    ]);
    let np_egress = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
                     metadata: {name: a-egress, namespace: x}\nspec:\n  podSelector: {matchLabels: {app: a}}\n  \
                     policyTypes: [Egress]\n  egress: [{to: [{namespaceSelector: {matchLabels: {team: blue}}}]}]";
    let baseline_egress = cnp(
        "base-egress",
        "Baseline",
        9,
        "{namespaces: {}}",
        "egress",
        "[{action: Deny, to: [{networks: [0.0.0.0/0]}]}]",
    );
    let with_np = join(&[np_egress, &baseline_egress]);
    let rows: Vec<Row<'_>> = vec![
        (networks.clone(), "x/a", "y/a", TCP, 80, false, "admin:nets[0]:Deny | default"),
        (networks.clone(), "x/a", "10.0.1.200", TCP, 80, false, "admin:nets[0]:Deny | none"),
        (networks.clone(), "x/a", "x/b", TCP, 80, true, "default | default"),
        (networks.clone(), "x/a6", "x/b6", TCP, 80, false, "admin:nets[0]:Deny | default"),
        (networks, "x/b", "y/a", TCP, 80, true, "default | default"),
        (nodes.clone(), "x/a", "192.168.1.3", TCP, 80, false, "admin:nodes[0]:Deny | none"),
        (nodes.clone(), "x/a", "192.168.1.2", TCP, 80, true, "default | none"),
        (nodes.clone(), "x/a", "192.168.1.2", TCP, 22, false, "admin:nodes[1]:Deny | none"),
        // The pod's own node: allowed before any tier.
        (nodes.clone(), "x/a", "192.168.1.1", TCP, 22, true, "node | none"),
        (nodes, "x/a", "8.8.8.8", TCP, 22, true, "default | none"),
        // x/a's egress is isolated by NetworkPolicy: Baseline does not apply to it.
        (with_np.clone(), "x/a", "y/a", TCP, 80, true, "np:x/a-egress[0] | default"),
        (with_np.clone(), "x/a", "x/b", TCP, 80, false, "np-isolated | default"),
        (with_np.clone(), "x/b", "y/a", TCP, 80, false, "baseline:base-egress[0]:Deny | default"),
        (with_np, "x/b6", "x/a6", TCP, 80, true, "default | default"),
    ];
    run(&rows);
}

#[test]
#[rustfmt::skip]
fn baseline_pass_and_fail_closed() {
    let pass = join(&[
        &cnp(
            "b0-pass",
            "Baseline",
            0,
            "{namespaces: {}}",
            "ingress",
            "[{action: Pass, from: [{namespaces: {matchLabels: {team: blue}}}]}]",
        ),
        &cnp(
            "b1-deny",
            "Baseline",
            1,
            "{namespaces: {}}",
            "ingress",
            "[{action: Deny, from: [{namespaces: {}}]}]",
        ),
    ]);
    // domainNames is not implemented: a Deny rule using it fails closed to "Deny all".
    let domains = cnp(
        "domains",
        "Admin",
        1,
        "{pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: b}}}}",
        "egress",
        "[{action: Deny, to: [{domainNames: [example.com]}]}]",
    );
    // An Accept rule with an unreadable peer ({}): that peer matches nothing, the other works.
    let accept_bad = join(&[
        &cnp(
            "accept-bad",
            "Admin",
            1,
            "{namespaces: {}}",
            "ingress",
            "[{action: Accept, from: [{}, {pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: b}}}}]}]",
        ),
        BASELINE_DENY,
    ]);
    let unknown_action = cnp(
        "drop",
        "Admin",
        1,
        "{namespaces: {matchLabels: {team: blue}}}",
        "ingress",
        "[{action: Drop, from: [{namespaces: {matchLabels: {team: red}}}]}]",
    );
    let rows: Vec<Row<'_>> = vec![
        (pass.clone(), "y/a", "y/c", TCP, 80, true, "default | default-after-pass:b0-pass"),
        (pass, "x/a", "y/c", TCP, 80, false, "default | baseline:b1-deny[0]:Deny"),
        (domains.clone(), "x/b", "y/c", TCP, 80, false, "admin:domains[0]:Deny | default"),
        (domains, "x/a", "y/c", TCP, 80, true, "default | default"),
        (accept_bad.clone(), "x/b", "x/a", TCP, 80, true, "default | admin:accept-bad[0]:Accept"),
        (accept_bad, "y/a", "x/a", TCP, 80, false, "default | baseline:baseline-deny[0]:Deny"),
        // Unknown action: Deny everything, peers and ports included.
        (unknown_action, "x/a", "y/c", UDP, 9, false, "default | admin:drop[0]:Deny"),
    ];
    run(&rows);
}
