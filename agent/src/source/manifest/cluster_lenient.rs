//! Lenient reading of a ClusterNetworkPolicy `spec` that does not deserialize as a whole (a type
//! error: `number: "80"`, `from: {}`, a rule that is not an object). Dropping such a policy whole
//! would lose its Deny rules: a fail-open on malformed input. Instead the spec is read part by
//! part and an unreadable rule fails closed the way the API asks for rules it cannot read: "For
//! "Accept" rules, "fail closed" means: "treat the rule as matching no traffic". For "Deny" and
//! "Pass" rules, "fail closed" means: "treat the rule as a 'Deny all' rule"."
//!
//! - a rule that does not read is replaced in place (later rules keep their index and order): an
//!   Accept rule (its `action` read) by an Accept rule with no peers, which matches nothing; any
//!   other rule, or one whose action cannot be read, by a rule with the action `unreadable`,
//!   which the compiler and the reference evaluator read as "Deny all" (an unknown action);
//! - an `ingress`/`egress` that is not a list becomes one such "Deny all" rule, so the direction
//!   stays covered for the policy's subject;
//! - an unreadable `priority` becomes 0 (first in its tier, so the stand-ins are not overridden
//!   by later policies of the tier);
//! - an unreadable `tier` or `subject` (or a `spec` that is not an object) leaves the policy
//!   applying to no pod, as the compiler already treats an invalid tier or subject (reported):
//!   without a subject there is no pod set to fail closed for, and denying every pod of the
//!   cluster would turn one malformed object into an outage.
//!
//! Every stand-in is an ordinary model value the compiler already reports as invalid, so the
//! manifest and API sources, the compiler, the reference evaluator and the CLI read them alike.
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::model::{
    ClusterEgressRule, ClusterIngressRule, ClusterNetworkPolicySpec, ClusterPolicySubject,
};
use crate::source::lenient::{exact, type_name, Unreadable};

/// The action that stands for a rule that could not be read: unknown, so "Deny all".
pub const UNREADABLE_ACTION: &str = "unreadable";

const DENY_RULE: &str = "the rule reads as \"Deny all\" in its place (fail closed)";
const ACCEPT_RULE: &str = "the Accept rule matches no traffic in its place (fail closed)";
const DENY_LIST: &str = "one \"Deny all\" rule stands for the list (fail closed)";
const PRIORITY: &str = "priority 0 (first in its tier)";
const NO_PODS: &str = "the policy applies to no pod (reported as invalid)";

/// Reads `spec` (absent or `null`: the empty spec). The spec is exact when nothing is returned
/// unreadable.
pub fn cluster_spec(spec: Option<&Value>) -> (ClusterNetworkPolicySpec, Vec<Unreadable>) {
    let spec = match exact(spec) {
        Ok(spec) => return (spec, Vec::new()),
        Err(v) => v,
    };
    let mut out = Vec::new();
    let Value::Object(map) = spec else {
        let reason = format!("not an object ({})", type_name(spec));
        out.push(unreadable("spec", reason, NO_PODS));
        return (ClusterNetworkPolicySpec::default(), out);
    };
    let tier = field::<String>(map, "tier", NO_PODS, &mut out)
        .map_or_else(|| UNREADABLE_ACTION.to_owned(), Option::unwrap_or_default);
    let priority =
        field::<i64>(map, "priority", PRIORITY, &mut out).map_or(0, Option::unwrap_or_default);
    let subject = field::<ClusterPolicySubject>(map, "subject", NO_PODS, &mut out)
        .flatten()
        .unwrap_or_default();
    let ingress = rules(map, "ingress", &mut out, |name, accept| {
        ClusterIngressRule {
            name,
            action: stand_in_action(accept),
            from: Some(Vec::new()),
            protocols: None,
        }
    });
    let egress = rules(map, "egress", &mut out, |name, accept| ClusterEgressRule {
        name,
        action: stand_in_action(accept),
        to: Some(Vec::new()),
        protocols: None,
    });
    let spec = ClusterNetworkPolicySpec {
        tier,
        priority,
        subject,
        ingress,
        egress,
    };
    (spec, out)
}

fn unreadable(field: &str, reason: String, instead: &'static str) -> Unreadable {
    Unreadable {
        field: field.to_owned(),
        reason,
        instead,
    }
}

/// `Some(value)` (`None` inside when absent or `null`), or `None` (noted) when it does not read.
fn field<T: DeserializeOwned>(
    map: &Map<String, Value>,
    key: &str,
    instead: &'static str,
    out: &mut Vec<Unreadable>,
) -> Option<Option<T>> {
    match map.get(key) {
        None | Some(Value::Null) => Some(None),
        Some(v) => match serde_json::from_value(v.clone()) {
            Ok(value) => Some(Some(value)),
            Err(e) => {
                out.push(unreadable(&format!("spec.{key}"), e.to_string(), instead));
                None
            }
        },
    }
}

/// An Accept stand-in keeps `Accept` (with no peers it matches nothing); anything else reads as
/// an unknown action, "Deny all".
fn stand_in_action(accept: bool) -> String {
    if accept { "Accept" } else { UNREADABLE_ACTION }.to_owned()
}

/// One direction's rules, each unreadable one replaced in place by `stand_in(name, is_accept)`.
fn rules<T: DeserializeOwned>(
    map: &Map<String, Value>,
    key: &str,
    out: &mut Vec<Unreadable>,
    stand_in: impl Fn(Option<String>, bool) -> T,
) -> Option<Vec<T>> {
    let list = match map.get(key) {
        None | Some(Value::Null) => return None,
        Some(Value::Array(list)) => list,
        Some(other) => {
            let reason = format!("not a list ({})", type_name(other));
            out.push(unreadable(&format!("spec.{key}"), reason, DENY_LIST));
            return Some(vec![stand_in(None, false)]);
        }
    };
    let read = list.iter().enumerate().map(|(i, rule)| {
        serde_json::from_value(rule.clone()).unwrap_or_else(|e| {
            let name = rule.get("name").and_then(Value::as_str).map(str::to_owned);
            let accept = rule.get("action").and_then(Value::as_str) == Some("Accept");
            let instead = if accept { ACCEPT_RULE } else { DENY_RULE };
            out.push(unreadable(
                &format!("spec.{key}[{i}]"),
                e.to_string(),
                instead,
            ));
            stand_in(name, accept)
        })
    });
    Some(read.collect())
}

#[cfg(test)]
#[path = "cluster_lenient_tests.rs"]
mod tests;
