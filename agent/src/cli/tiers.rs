//! The tier walk behind `explain` and `matrix`: for one side of a connection, every matching
//! ClusterNetworkPolicy rule of the Admin and Baseline tiers in evaluation order, who decided
//! according to the reference evaluator, and whether the compiled lookup (what the dataplane
//! does) agrees with it.
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::compiler::{SideDecision, Tier};
use crate::model::{Model, Pod, Protocol};
use crate::reference::{
    self, tier_matches, ClusterAction, ClusterMatch, ClusterTier, Decider, SideAnswer,
};

/// One ClusterNetworkPolicy rule that matches the connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierRule {
    pub policy: String,
    pub priority: i64,
    /// `ingress` or `egress`.
    pub direction: String,
    pub index: u32,
    /// The rule's optional `name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `Accept`, `Deny` or `Pass` (an unreadable Deny/Pass rule fails closed as `Deny`).
    pub action: String,
    /// Whether evaluation reached the rule: only the first match of a tier counts, and the
    /// Baseline tier is evaluated only when nothing before it decided.
    pub reached: bool,
}

impl TierRule {
    fn new(m: &ClusterMatch, reached: bool) -> Self {
        Self {
            policy: m.policy.clone(),
            priority: m.priority,
            direction: direction(m.direction_egress).to_owned(),
            index: m.index,
            name: m.rule_name.clone(),
            action: action(m.action).to_owned(),
            reached,
        }
    }

    /// `ClusterNetworkPolicy NAME (priority P) ingress[I] "rule": Action`.
    pub fn describe(&self) -> String {
        let name = self
            .name
            .as_ref()
            .map(|n| format!(" {n:?}"))
            .unwrap_or_default();
        format!(
            "ClusterNetworkPolicy {} (priority {}) {}[{}]{name}: {}",
            self.policy, self.priority, self.direction, self.index, self.action
        )
    }
}

/// One side walked tier by tier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierTrace {
    /// Matching Admin rules in evaluation order (priority, then policy name, then rule order).
    pub admin: Vec<TierRule>,
    /// Whether the NetworkPolicy tier was evaluated (no Admin Accept or Deny decided).
    pub network_policy_evaluated: bool,
    /// Matching Baseline rules in evaluation order.
    pub baseline: Vec<TierRule>,
    /// Whether the Baseline tier was evaluated (NetworkPolicy does not isolate this direction).
    pub baseline_evaluated: bool,
    /// The tier that decided per the reference evaluator: `Admin`, `NetworkPolicy`,
    /// `Baseline` or `Default` (nothing decided: allowed); absent for node traffic.
    pub tier: Option<String>,
    /// The reference evaluator's decider, in words.
    pub decided_by: String,
    pub reference_allowed: bool,
    /// Whether the compiled lookup gives the same verdict and tier and, for a
    /// ClusterNetworkPolicy, the same policy and rule.
    pub agrees: bool,
    /// What the compiled lookup said, when it does not agree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compiled: Option<String>,
}

fn direction(egress: bool) -> &'static str {
    if egress {
        "egress"
    } else {
        "ingress"
    }
}

fn action(a: ClusterAction) -> &'static str {
    match a {
        ClusterAction::Accept => "Accept",
        ClusterAction::Deny => "Deny",
        ClusterAction::Pass => "Pass",
    }
}

fn tier_name(t: ClusterTier) -> &'static str {
    match t {
        ClusterTier::Admin => "Admin",
        ClusterTier::Baseline => "Baseline",
    }
}

/// `ClusterNetworkPolicy NAME (Tier) ingress[I] "rule": Action`.
pub fn describe_match(m: &ClusterMatch) -> String {
    let name = m
        .rule_name
        .as_ref()
        .map(|n| format!(" {n:?}"))
        .unwrap_or_default();
    format!(
        "ClusterNetworkPolicy {} ({}) {}[{}]{name}: {}",
        m.policy,
        tier_name(m.tier),
        direction(m.direction_egress),
        m.index,
        action(m.action)
    )
}

/// The reference's decider in words, and its tier.
fn decider_words(d: &Decider, egress: bool) -> (Option<&'static str>, String) {
    match d {
        Decider::NotEndpoint => (None, "not a local pod endpoint".to_owned()),
        Decider::NodeTraffic => (None, "traffic with the pod's own node".to_owned()),
        Decider::Cluster(m) => (Some(tier_name(m.tier)), describe_match(m)),
        Decider::NetworkPolicy { policy, index } => (
            Some("NetworkPolicy"),
            format!("NetworkPolicy {policy} {}[{index}]", direction(egress)),
        ),
        Decider::NetworkPolicyIsolated { isolated_by } => {
            let list: Vec<String> = isolated_by.iter().map(ToString::to_string).collect();
            (
                Some("NetworkPolicy"),
                format!(
                    "NetworkPolicy isolation ({}): no rule allows it",
                    list.join(", ")
                ),
            )
        }
        Decider::Default { passed: None } => (
            Some("Default"),
            "no tier decided (default allow)".to_owned(),
        ),
        Decider::Default { passed: Some(m) } => (
            Some("Default"),
            format!(
                "{} ended the Baseline tier (default allow)",
                describe_match(m)
            ),
        ),
    }
}

/// The compiled decision's tier, policy name and rule index (for ClusterNetworkPolicy rules).
fn compiled_key(d: &SideDecision) -> (Option<&'static str>, Option<(String, u32)>) {
    let tier = d.tier().map(Tier::as_str);
    let rule = d
        .rule()
        .filter(|r| r.is_cluster())
        .map(|r| (r.policy.name.clone(), r.index));
    (tier, rule)
}

/// The peer endpoint, if the peer address is one, and the side's own pod.
pub struct SideFacts<'a> {
    pub pod: &'a Pod,
    pub egress: bool,
    pub peer_ip: IpAddr,
    pub peer_pod: Option<&'a Pod>,
    pub protocol: Protocol,
    pub port: u16,
}

/// Walks one side: the matching rules of both tiers, the reference's answer, and the check
/// against the compiled `decision`.
pub fn trace(
    model: &Model,
    facts: &SideFacts<'_>,
    answer: &SideAnswer,
    decision: &SideDecision,
) -> TierTrace {
    let walk = matches!(
        answer.decider,
        Decider::Cluster(_)
            | Decider::NetworkPolicy { .. }
            | Decider::NetworkPolicyIsolated { .. }
            | Decider::Default { .. }
    );
    let list = |tier| {
        if !walk {
            return Vec::new();
        }
        let f = facts;
        tier_matches(
            model, tier, f.pod, f.egress, f.peer_ip, f.peer_pod, f.protocol, f.port,
        )
    };
    let admin = list(ClusterTier::Admin);
    let baseline = list(ClusterTier::Baseline);
    let admin_decided =
        matches!(&answer.decider, Decider::Cluster(m) if m.tier == ClusterTier::Admin);
    let baseline_evaluated = matches!(
        &answer.decider,
        Decider::Cluster(m) if m.tier == ClusterTier::Baseline
    ) || matches!(answer.decider, Decider::Default { .. });
    let (tier, decided_by) = decider_words(&answer.decider, facts.egress);
    let (ctier, crule) = compiled_key(decision);
    let rrule = match &answer.decider {
        Decider::Cluster(m) => Some((m.policy.clone(), m.index)),
        _ => None,
    };
    let agrees = decision.allows() == answer.allowed && ctier == tier && crule == rrule;
    let compiled = (!agrees).then(|| {
        let rule = decision
            .rule()
            .map(|r| format!(" by {r}"))
            .unwrap_or_default();
        let verdict = if decision.allows() {
            "allowed"
        } else {
            "denied"
        };
        format!("{verdict} (tier {}){rule}", ctier.unwrap_or("none"))
    });
    TierTrace {
        admin: mark(&admin, walk),
        network_policy_evaluated: walk && !admin_decided,
        baseline: mark(&baseline, baseline_evaluated),
        baseline_evaluated,
        tier: tier.map(str::to_owned),
        decided_by,
        reference_allowed: answer.allowed,
        agrees,
        compiled,
    }
}

/// The first match of a tier is reached when the tier is evaluated; the rest never are.
fn mark(list: &[ClusterMatch], evaluated: bool) -> Vec<TierRule> {
    list.iter()
        .enumerate()
        .map(|(i, m)| TierRule::new(m, evaluated && i == 0))
        .collect()
}

/// The reference's answer for both sides of `from → to`.
pub fn reference_answer(
    model: &Model,
    allow_node_traffic: bool,
    from: IpAddr,
    to: IpAddr,
    protocol: Protocol,
    port: u16,
) -> reference::DetailedVerdict {
    let options = reference::ReferenceOptions { allow_node_traffic };
    reference::evaluate_detailed(model, options, from, to, protocol, port)
}

/// Renders the tier lines of one side (under the side's headline), `np_line` being the
/// NetworkPolicy tier's own explanation.
pub fn render(out: &mut String, t: &TierTrace, np_line: &str) {
    let admin_pass = "  <- decides: Pass, on to NetworkPolicy";
    render_tier(out, "1. Admin tier", &t.admin, true, admin_pass);
    let np = if t.network_policy_evaluated {
        np_line.to_owned()
    } else {
        "not evaluated (the Admin tier decided)".to_owned()
    };
    out.push_str(&format!("    2. NetworkPolicy: {np}\n"));
    let baseline_pass = "  <- decides: Pass ends the tier, nothing after it (default allow)";
    let (rules, evaluated) = (&t.baseline, t.baseline_evaluated);
    render_tier(out, "3. Baseline tier", rules, evaluated, baseline_pass);
}

fn render_tier(
    out: &mut String,
    label: &str,
    rules: &[TierRule],
    evaluated: bool,
    pass_note: &str,
) {
    let state = if evaluated { "" } else { " (not evaluated)" };
    if rules.is_empty() {
        out.push_str(&format!("    {label}{state}: no rule matches\n"));
        return;
    }
    out.push_str(&format!("    {label}{state}:\n"));
    for r in rules {
        let note = match (r.reached, r.action.as_str()) {
            (true, "Pass") => pass_note,
            (true, _) => "  <- decides",
            (false, _) => "  (not reached)",
        };
        out.push_str(&format!("       {}{note}\n", r.describe()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(tier: ClusterTier, policy: &str, action: ClusterAction) -> ClusterMatch {
        ClusterMatch {
            tier,
            policy: policy.to_owned(),
            priority: 10,
            direction_egress: false,
            index: 1,
            rule_name: Some("r".to_owned()),
            action,
        }
    }

    #[test]
    fn only_the_first_match_of_an_evaluated_tier_is_reached() {
        let list = [
            m(ClusterTier::Admin, "a", ClusterAction::Pass),
            m(ClusterTier::Admin, "b", ClusterAction::Deny),
        ];
        let marked = mark(&list, true);
        assert!(marked[0].reached && !marked[1].reached);
        assert!(mark(&list, false).iter().all(|r| !r.reached));
        assert_eq!(
            marked[1].describe(),
            "ClusterNetworkPolicy b (priority 10) ingress[1] \"r\": Deny"
        );
    }

    #[test]
    fn rendering_names_the_deciding_rule_and_unevaluated_tiers() {
        let admin = [
            m(ClusterTier::Admin, "deny", ClusterAction::Deny),
            m(ClusterTier::Admin, "later", ClusterAction::Accept),
        ];
        let t = TierTrace {
            admin: mark(&admin, true),
            network_policy_evaluated: false,
            baseline: Vec::new(),
            baseline_evaluated: false,
            tier: Some("Admin".into()),
            decided_by: describe_match(&admin[0]),
            reference_allowed: false,
            agrees: true,
            compiled: None,
        };
        let mut out = String::new();
        render(&mut out, &t, "unused");
        assert!(
            out.contains("deny (priority 10) ingress[1] \"r\": Deny  <- decides"),
            "{out}"
        );
        assert!(out.contains("later (priority 10) ingress[1] \"r\": Accept  (not reached)"));
        assert!(out.contains("2. NetworkPolicy: not evaluated (the Admin tier decided)"));
        assert!(out.contains("3. Baseline tier (not evaluated): no rule matches"));
        assert_eq!(
            t.decided_by,
            "ClusterNetworkPolicy deny (Admin) ingress[1] \"r\": Deny"
        );
    }
}
