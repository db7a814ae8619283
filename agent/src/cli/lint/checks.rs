//! Per-policy checks: selectors that select or match nothing, the AND/OR peer mistake, named
//! ports that resolve nowhere, ipBlocks over pod IPs, hostNetwork pods, invalid fields.

use super::{
    select::{ip_block, peer_matches, rules, selector, selects, Dir, Rule},
    Finding, Severity,
};
use crate::{
    compiler::{compile, CompileOptions},
    model::{IntOrString, Model, NetworkPolicy, NetworkPolicyPeer, Pod},
};

fn object(policy: &NetworkPolicy) -> String {
    format!("NetworkPolicy/{}", policy.name)
}

fn finding(code: &str, severity: Severity, policy: &NetworkPolicy) -> Finding {
    Finding::new(code, severity, &policy.namespace, object(policy))
}

/// Every per-policy check.
pub fn policies(model: &Model, out: &mut Vec<Finding>) {
    for policy in model.policies.values() {
        selection(model, policy, out);
        for dir in [Dir::Ingress, Dir::Egress] {
            for rule in rules(policy, dir) {
                let field = format!("spec.{}[{}]", dir.name(), rule.index);
                or_confusion(policy, dir, &rule, &field, out);
                peers(model, policy, dir, &rule, &field, out);
                named_ports(model, policy, dir, &rule, &field, out);
            }
        }
    }
}

/// `policy-selects-nothing` and `selects-host-network-pod`.
fn selection(model: &Model, policy: &NetworkPolicy, out: &mut Vec<Finding>) {
    let selected: Vec<&Pod> = model.pods.values().filter(|p| selects(policy, p)).collect();
    // `podSelector: {}` selects hostNetwork pods only in passing; a selector naming labels means it.
    let sel = &policy.spec.pod_selector;
    let names_labels = sel.match_labels.as_ref().is_some_and(|m| !m.is_empty())
        || sel
            .match_expressions
            .as_ref()
            .is_some_and(|e| !e.is_empty());
    let host: Vec<&Pod> = selected
        .iter()
        .copied()
        .filter(|p| p.host_network && names_labels)
        .collect();
    if selected.is_empty() {
        out.push(
            finding("policy-selects-nothing", Severity::Warning, policy)
                .at("spec.podSelector".into())
                .says(
                    format!(
                        "spec.podSelector selects no pod in namespace {}: the policy isolates and allows nothing",
                        policy.namespace
                    ),
                    "fix the podSelector labels (they must match the pods' labels in the policy's own namespace) or delete the policy",
                ),
        );
    }
    for pod in host {
        out.push(
            finding("selects-host-network-pod", Severity::Warning, policy)
                .at("spec.podSelector".into())
                .says(
                    format!(
                        "spec.podSelector selects hostNetwork pod {}: NetworkPolicy does not apply to pods that share the node's network",
                        pod.name
                    ),
                    "protect hostNetwork pods with node firewall rules; narrow the podSelector so it selects only pod-network pods",
                ),
        );
    }
}

fn only_namespace(p: &NetworkPolicyPeer) -> bool {
    p.namespace_selector.is_some() && p.pod_selector.is_none() && p.ip_block.is_none()
}

fn only_pod(p: &NetworkPolicyPeer) -> bool {
    p.pod_selector.is_some() && p.namespace_selector.is_none() && p.ip_block.is_none()
}

/// `selector-or-confusion`: `- namespaceSelector` and `- podSelector` as separate, adjacent
/// peers (OR), where one peer with both (AND) was probably meant.
fn or_confusion(
    policy: &NetworkPolicy,
    dir: Dir,
    rule: &Rule<'_>,
    field: &str,
    out: &mut Vec<Finding>,
) {
    let Some(list) = rule.peers else { return };
    for (i, pair) in list.windows(2).enumerate() {
        let (a, b) = (&pair[0], &pair[1]);
        if !((only_namespace(a) && only_pod(b)) || (only_pod(a) && only_namespace(b))) {
            continue;
        }
        let peers = dir.peers_field();
        out.push(
            finding("selector-or-confusion", Severity::Warning, policy)
                .at(format!("{field}.{peers}[{i}..{}]", i + 1))
                .says(
                    format!(
                        "{field}.{peers}[{i}] and [{}] are separate peers, so they are ORed: every pod of the selected namespaces OR the selected pods of namespace {} (not: the selected pods in the selected namespaces)",
                        i + 1,
                        policy.namespace
                    ),
                    "if you meant pods matching both, put namespaceSelector and podSelector in ONE peer (one list item: `- namespaceSelector: ...` followed by `  podSelector: ...`, no dash before podSelector)",
                ),
        );
    }
}

/// `peer-matches-nothing` for selector peers, `ipblock-covers-pods` for ipBlocks.
fn peers(
    model: &Model,
    policy: &NetworkPolicy,
    dir: Dir,
    rule: &Rule<'_>,
    field: &str,
    out: &mut Vec<Finding>,
) {
    let peers_field = dir.peers_field();
    for (i, peer) in rule.peers.into_iter().flatten().enumerate() {
        let at = format!("{field}.{peers_field}[{i}]");
        let pods: Vec<&Pod> = model
            .pods
            .values()
            .filter(|p| peer_matches(model, policy, peer, p))
            .collect();
        if let Some(block) = &peer.ip_block {
            if pods.is_empty() || ip_block(block).is_none() {
                continue;
            }
            let list: Vec<String> = pods.iter().take(5).map(|p| p.key().to_string()).collect();
            out.push(
                finding("ipblock-covers-pods", Severity::Warning, policy)
                    .at(format!("{at}.ipBlock"))
                    .says(
                        format!(
                            "ipBlock {} covers the IPs of {} pods ({}): pod IPs change when pods restart, and many dataplanes see pod traffic after SNAT",
                            block.cidr,
                            pods.len(),
                            list.join(", ")
                        ),
                        "select pods with podSelector/namespaceSelector; keep ipBlock for addresses outside the cluster and put the pod CIDR in `except`",
                    ),
            );
            continue;
        }
        if pods.is_empty() {
            out.push(nothing(model, policy, peer, at));
        }
    }
}

fn nothing(model: &Model, policy: &NetworkPolicy, peer: &NetworkPolicyPeer, at: String) -> Finding {
    let no_namespace = peer.namespace_selector.as_ref().is_some_and(|sel| {
        !model
            .namespaces
            .keys()
            .any(|ns| selector(sel, &model.namespace_labels(ns)) == Some(true))
    });
    let why = if no_namespace {
        "its namespaceSelector matches no namespace".to_owned()
    } else if peer.namespace_selector.is_none() {
        format!(
            "its podSelector matches no pod in namespace {}",
            policy.namespace
        )
    } else {
        "no pod matches it".to_owned()
    };
    finding("peer-matches-nothing", Severity::Warning, policy)
        .at(at.clone())
        .says(
            format!("peer {at} matches no pod: {why}; the rule allows nothing from it"),
            "check the labels against the pods' and namespaces' labels (namespaces carry kubernetes.io/metadata.name=<name>); a podSelector alone only looks in the policy's namespace",
        )
}

/// `named-port-unresolved`: a named port that no destination pod declares (ingress: the pods the
/// policy selects; egress: the pods the rule's peers match, or any pod).
fn named_ports(
    model: &Model,
    policy: &NetworkPolicy,
    dir: Dir,
    rule: &Rule<'_>,
    field: &str,
    out: &mut Vec<Finding>,
) {
    let dests: Vec<&Pod> = match dir {
        Dir::Ingress => model.pods.values().filter(|p| selects(policy, p)).collect(),
        Dir::Egress => model
            .pods
            .values()
            .filter(|p| match rule.peers {
                Some(list) if !list.is_empty() => {
                    list.iter().any(|peer| peer_matches(model, policy, peer, p))
                }
                _ => !p.host_network,
            })
            .collect(),
    };
    for (i, entry) in rule.ports.into_iter().flatten().enumerate() {
        let Some(IntOrString::String(name)) = &entry.port else {
            continue;
        };
        let Some(protocol) =
            crate::model::Protocol::parse(entry.protocol.as_deref().unwrap_or("TCP"))
        else {
            continue;
        };
        let resolves = dests.iter().any(|p| {
            p.container_ports
                .iter()
                .any(|c| c.name.as_deref() == Some(name.as_str()) && c.protocol == protocol)
        });
        if resolves {
            continue;
        }
        let whose = match dir {
            Dir::Ingress => "the pods this policy selects",
            Dir::Egress => "the pods this rule allows",
        };
        out.push(
            finding("named-port-unresolved", Severity::Warning, policy)
                .at(format!("{field}.ports[{i}]"))
                .says(
                    format!(
                        "named port {name:?} ({protocol}) is declared by none of {whose}: the entry allows nothing"
                    ),
                    "use the containerPort name declared in the destination pods' spec (name and protocol must match) or a port number",
                ),
        );
    }
}

/// `invalid-policy`: fields the compiler rejected (errors) or doubts (warnings).
pub fn invalid(model: &Model, out: &mut Vec<Finding>) {
    let compiled = compile(model, &CompileOptions::default());
    for p in &compiled.problems {
        if p.message.contains("named port") {
            continue; // reported as named-port-unresolved
        }
        let severity = match p.severity {
            crate::compiler::Severity::Error => Severity::Error,
            crate::compiler::Severity::Warning => Severity::Warning,
        };
        // ClusterNetworkPolicies are cluster-scoped: their problems carry an empty namespace.
        let kind = if p.policy.namespace.is_empty() {
            "ClusterNetworkPolicy"
        } else {
            "NetworkPolicy"
        };
        out.push(
            Finding::new(
                "invalid-policy",
                severity,
                &p.policy.namespace,
                format!("{kind}/{}", p.policy.name),
            )
            .at(p.field.clone())
            .says(
                format!("{}: {}", p.field, p.message),
                "fix the field; Palisade drops the invalid part and fails closed (it allows less, never more)",
            ),
        );
    }
}
