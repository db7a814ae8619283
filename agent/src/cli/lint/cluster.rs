//! ClusterNetworkPolicy checks: subjects that select nothing, rules shadowed by an earlier rule
//! of the same tier, same-priority policies whose overlapping rules disagree (the API leaves
//! their order open), Pass in the Baseline tier, Baseline rules that NetworkPolicy isolation
//! always pre-empts, and named ports that resolve nowhere.

use super::cluster_select::{
    peer_cover, port_specs, ports_cover, ports_overlap, subject_pods, tier, PeerCover, PortSpec,
};
use super::select::{has_type, selects, Dir};
use super::{Finding, Severity};
use crate::model::{ClusterNetworkPolicy, ClusterRuleView, Model, Pod};

fn object(policy: &ClusterNetworkPolicy) -> String {
    format!("ClusterNetworkPolicy/{}", policy.name)
}

/// Cluster-scoped: no namespace.
fn finding(code: &str, severity: Severity, policy: &ClusterNetworkPolicy) -> Finding {
    Finding::new(code, severity, "", object(policy))
}

/// One readable rule with what it covers.
struct Rule<'a> {
    policy: &'a ClusterNetworkPolicy,
    dir: Dir,
    index: usize,
    action: &'a str,
    peers: PeerCover,
    ports: Option<Vec<PortSpec>>,
}

impl Rule<'_> {
    fn field(&self) -> String {
        format!("spec.{}[{}]", self.dir.name(), self.index)
    }

    /// `NAME spec.ingress[0] (Deny, priority 10)`.
    fn describe(&self) -> String {
        format!(
            "{} {} ({}, priority {})",
            self.policy.name,
            self.field(),
            self.action,
            self.policy.spec.priority
        )
    }
}

fn dir_of(view: &ClusterRuleView<'_>) -> Dir {
    if view.egress {
        Dir::Egress
    } else {
        Dir::Ingress
    }
}

/// The readable rules of one direction of `policy` (known action, readable peers and ports).
fn readable<'a>(model: &Model, policy: &'a ClusterNetworkPolicy, egress: bool) -> Vec<Rule<'a>> {
    let mut out = Vec::new();
    for (index, view) in policy.rules(egress).into_iter().enumerate() {
        if !matches!(view.action, "Accept" | "Deny" | "Pass") {
            continue;
        }
        let (Some(peers), Some(ports)) = (peer_cover(model, &view), port_specs(view.protocols))
        else {
            continue;
        };
        out.push(Rule {
            policy,
            dir: dir_of(&view),
            index,
            action: view.action,
            peers,
            ports,
        });
    }
    out
}

/// Every ClusterNetworkPolicy check.
pub fn policies(model: &Model, out: &mut Vec<Finding>) {
    let mut by_order: Vec<&ClusterNetworkPolicy> = model.cluster_policies.values().collect();
    by_order.sort_by(|a, b| (a.spec.priority, &a.name).cmp(&(b.spec.priority, &b.name)));
    for policy in &by_order {
        let subject = subject_pods(model, policy);
        if subject.is_empty() {
            out.push(selects_nothing(policy));
        }
        baseline_pass(policy, out);
        baseline_unreachable(model, policy, &subject, out);
        named_ports(model, policy, &subject, out);
    }
    for tier_name in ["Admin", "Baseline"] {
        let tier: Vec<&ClusterNetworkPolicy> = by_order
            .iter()
            .copied()
            .filter(|p| tier(p) == Some(tier_name))
            .collect();
        shadowed(model, &tier, out);
        same_priority(model, &tier, out);
    }
}

fn selects_nothing(policy: &ClusterNetworkPolicy) -> Finding {
    finding("policy-selects-nothing", Severity::Warning, policy)
        .at("spec.subject".into())
        .says(
            "spec.subject selects no pod: the ClusterNetworkPolicy applies to nothing".to_owned(),
            "fix the subject's namespace and pod selectors (namespaces carry kubernetes.io/metadata.name=<name>) or delete the policy",
        )
}

/// `baseline-pass`: Pass in the Baseline tier hands over to nothing but the default allow.
fn baseline_pass(policy: &ClusterNetworkPolicy, out: &mut Vec<Finding>) {
    if tier(policy) != Some("Baseline") {
        return;
    }
    for egress in [false, true] {
        for (i, view) in policy.rules(egress).into_iter().enumerate() {
            if view.action != "Pass" {
                continue;
            }
            let field = format!("spec.{}[{i}]", dir_of(&view).name());
            out.push(
                finding("baseline-pass", Severity::Warning, policy)
                    .at(format!("{field}.action"))
                    .says(
                        format!("{field} is a Pass rule in the Baseline tier: there is no tier after Baseline, so it allows the traffic (by default) and skips the Baseline rules after it"),
                        "use Accept if the traffic should be allowed, Deny if not; Pass belongs in the Admin tier (hand over to NetworkPolicy)",
                    ),
            );
        }
    }
}

/// `baseline-unreachable`: NetworkPolicy isolates every subject pod in a direction, so the
/// Baseline tier is never evaluated there ("Further evaluation only happens for Pods not
/// selected by a v1.NetworkPolicy").
fn baseline_unreachable(
    model: &Model,
    policy: &ClusterNetworkPolicy,
    subject: &[&Pod],
    out: &mut Vec<Finding>,
) {
    if tier(policy) != Some("Baseline") || subject.is_empty() {
        return;
    }
    for (egress, dir) in [(false, Dir::Ingress), (true, Dir::Egress)] {
        if policy.rules(egress).is_empty() {
            continue;
        }
        let isolated = |pod: &&Pod| {
            model
                .policies
                .values()
                .any(|np| selects(np, pod) && has_type(np, dir))
        };
        if !subject.iter().all(isolated) {
            continue;
        }
        let field = format!("spec.{}", dir.name());
        out.push(
            finding("baseline-unreachable", Severity::Warning, policy)
                .at(field.clone())
                .says(
                    format!(
                        "NetworkPolicy isolates all {} subject pods for {}, so the Baseline tier is never evaluated for them: {field} never applies",
                        subject.len(),
                        dir.name()
                    ),
                    "move the rules to the Admin tier if they must hold whatever NetworkPolicy says, or delete them",
                ),
        );
    }
}

/// `named-port-unresolved` for `destinationNamedPort`: ingress resolves on the subject pods,
/// egress on the pods the rule's peers match (any pod for networks and nodes peers).
fn named_ports(
    model: &Model,
    policy: &ClusterNetworkPolicy,
    subject: &[&Pod],
    out: &mut Vec<Finding>,
) {
    for egress in [false, true] {
        for (i, view) in policy.rules(egress).into_iter().enumerate() {
            let dests: Vec<&Pod> = if egress {
                match peer_cover(model, &view) {
                    Some(c) if c.networks.is_empty() && c.nodes.is_empty() => model
                        .pods
                        .values()
                        .filter(|p| c.pods.contains(&p.key()))
                        .collect(),
                    _ => model.pods.values().filter(|p| !p.host_network).collect(),
                }
            } else {
                subject.to_vec()
            };
            for (j, entry) in view.protocols.into_iter().flatten().enumerate() {
                let Some(name) = &entry.destination_named_port else {
                    continue;
                };
                let declared = dests.iter().any(|p| {
                    p.container_ports
                        .iter()
                        .any(|c| c.name.as_deref() == Some(name.as_str()))
                });
                if declared {
                    continue;
                }
                let field = format!("spec.{}[{i}].protocols[{j}]", dir_of(&view).name());
                let whose = if egress {
                    "the pods this rule's peers match"
                } else {
                    "the subject pods"
                };
                out.push(
                    finding("named-port-unresolved", Severity::Warning, policy)
                        .at(field)
                        .says(
                            format!("destinationNamedPort {name:?} is declared by none of {whose}: the entry matches nothing"),
                            "use the containerPort name declared by the destination pods, or a port number",
                        ),
                );
            }
        }
    }
}

/// The subject pods of a policy, as keys.
fn subject_keys(model: &Model, p: &ClusterNetworkPolicy) -> std::collections::BTreeSet<String> {
    subject_pods(model, p)
        .iter()
        .map(|p| p.key().to_string())
        .collect()
}

/// `cluster-rule-shadowed`: an earlier rule of the same tier (a lower priority value, or earlier
/// in the same policy) applies to every subject pod of this one and matches every peer and port
/// it matches, so this rule is never reached.
fn shadowed(model: &Model, tier: &[&ClusterNetworkPolicy], out: &mut Vec<Finding>) {
    for (pi, policy) in tier.iter().enumerate() {
        let subject = subject_keys(model, policy);
        if subject.is_empty() {
            continue;
        }
        for egress in [false, true] {
            let rules = readable(model, policy, egress);
            for rule in rules.iter().filter(|r| !r.peers.is_empty()) {
                let earlier_here = rules.iter().filter(|e| e.index < rule.index);
                let earlier_policies = tier[..pi]
                    .iter()
                    .filter(|q| q.spec.priority < policy.spec.priority)
                    .filter(|q| subject.is_subset(&subject_keys(model, q)));
                let mut candidates: Vec<Rule<'_>> = Vec::new();
                for q in earlier_policies {
                    candidates.extend(readable(model, q, egress));
                }
                let by = earlier_here
                    .chain(candidates.iter())
                    .find(|e| e.peers.covers(&rule.peers) && ports_cover(&e.ports, &rule.ports));
                if let Some(by) = by {
                    out.push(shadow_finding(rule, by));
                }
            }
        }
    }
}

fn shadow_finding(rule: &Rule<'_>, by: &Rule<'_>) -> Finding {
    let same = if by.action == rule.action {
        " (same action: the rule is redundant)"
    } else {
        ""
    };
    finding("cluster-rule-shadowed", Severity::Warning, rule.policy)
        .at(rule.field())
        .says(
            format!(
                "{} is never reached: {} comes first in the tier and matches every peer and port it matches, for every pod it applies to{same}",
                rule.field(),
                by.describe()
            ),
            "delete the rule, narrow the earlier one, or give this policy a lower priority value (rules within a policy apply top to bottom)",
        )
}

/// `cluster-priority-overlap`: two policies of one tier with the same priority, a common
/// subject pod, and rules with different actions that match common traffic. "If two
/// ClusterNetworkPolicies of the same tier have the same priority ... the order is undefined"
/// upstream; Palisade orders them by name.
fn same_priority(model: &Model, tier: &[&ClusterNetworkPolicy], out: &mut Vec<Finding>) {
    for (i, a) in tier.iter().enumerate() {
        for b in tier[i + 1..]
            .iter()
            .filter(|b| b.spec.priority == a.spec.priority)
        {
            if subject_keys(model, a).is_disjoint(&subject_keys(model, b)) {
                continue;
            }
            if let Some((ra, rb)) = conflict(model, a, b) {
                out.push(priority_finding(b, &ra, &rb));
            }
        }
    }
}

/// The first pair of rules, one of each policy, with different actions and common traffic.
fn conflict<'a>(
    model: &Model,
    a: &'a ClusterNetworkPolicy,
    b: &'a ClusterNetworkPolicy,
) -> Option<(Rule<'a>, Rule<'a>)> {
    for egress in [false, true] {
        let rb_all = readable(model, b, egress);
        for ra in readable(model, a, egress) {
            let hit = rb_all.iter().position(|rb| {
                rb.action != ra.action
                    && rb.peers.overlaps(&ra.peers)
                    && ports_overlap(&rb.ports, &ra.ports)
            });
            if let Some(k) = hit {
                let rb = readable(model, b, egress).into_iter().nth(k)?;
                return Some((ra, rb));
            }
        }
    }
    None
}

fn priority_finding(b: &ClusterNetworkPolicy, ra: &Rule<'_>, rb: &Rule<'_>) -> Finding {
    finding("cluster-priority-overlap", Severity::Warning, b)
        .at("spec.priority".into())
        .says(
            format!(
                "{} and {} have the same priority {} in the {} tier and rules with different actions match the same traffic ({} vs {}): the API leaves their order undefined, so implementations may disagree (Palisade applies {} first, by name)",
                ra.policy.name,
                b.name,
                b.spec.priority,
                b.spec.tier,
                ra.describe(),
                rb.describe(),
                ra.policy.name
            ),
            "give one of them a different priority so the order is explicit",
        )
}
