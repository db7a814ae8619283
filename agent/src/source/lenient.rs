//! Lenient reading of a NetworkPolicy `spec` that does not deserialize as a whole (a type error:
//! `endPort: "x"`, `port: {}`, a rule that is not an object). Dropping such a policy whole would
//! unisolate the pods it alone selected — a fail-open on malformed input. Instead the spec is read
//! part by part and whatever cannot be read fails **closed**:
//!
//! - a rule that does not read is replaced, in place (later rules keep their index), by a rule
//!   that allows nothing; the policy still isolates its pods in that direction;
//! - an `ingress`/`egress` that is not a list becomes one such rule (the direction stays covered);
//! - unreadable `policyTypes` isolate both directions;
//! - an unreadable `podSelector` (or a `spec` that is not an object) selects every pod of the
//!   namespace, in every direction the document could cover, and allows nothing at all (its rules
//!   are not applied to pods they were not written for).
//!
//! The stand-ins are ordinary model values that the compiler already treats as invalid (and so
//! reports as policy problems, naming the field and the reason, and drops in the direction that
//! allows less), so the manifest and the API source, the compiler, the reference evaluator and
//! the CLI all read them the same way. Each unreadable part is also returned, for a source note.
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::model::{
    EgressRule, IngressRule, IntOrString, IpBlock, LabelSelector, LabelSelectorRequirement,
    NetworkPolicyPeer, NetworkPolicySpec,
};

/// A part of a spec that could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    /// JSON-path-like field, e.g. `spec.ingress[1]`.
    pub field: String,
    /// Why, with the sub-field where it can be found (`ports[0].endPort: invalid type ...`).
    pub reason: String,
    /// What was done instead.
    pub instead: &'static str,
}

const RULE_INSTEAD: &str = "the rule is left out (it allows nothing); the policy still isolates its pods in this direction";
const LIST_INSTEAD: &str =
    "no rule is read (nothing is allowed); the policy still isolates its pods in this direction";
const TYPES_INSTEAD: &str = "the policy isolates its pods for both Ingress and Egress";
const SELECTOR_INSTEAD: &str = "the policy isolates every pod of its namespace and allows nothing";

/// Prefix of the stand-in values, so that a problem reads as what it is.
const MARK: &str = "unreadable";

/// Reads `spec` (absent or `null`: the empty spec). The spec is exact when nothing is returned
/// unreadable.
pub fn policy_spec(spec: Option<&Value>) -> (NetworkPolicySpec, Vec<Unreadable>) {
    let spec = match exact(spec) {
        Ok(spec) => return (spec, Vec::new()),
        Err(v) => v,
    };
    let mut unreadable = Vec::new();
    let Value::Object(map) = spec else {
        unreadable.push(Unreadable {
            field: "spec".to_owned(),
            reason: format!("not an object ({})", type_name(spec)),
            instead: SELECTOR_INSTEAD,
        });
        return (
            isolate_all((true, true), "spec is not an object"),
            unreadable,
        );
    };
    let (policy_types, types_ok) = policy_types(map, &mut unreadable);
    if let Some(reason) = field_error::<LabelSelector>(map, "podSelector") {
        unreadable.push(Unreadable {
            field: "spec.podSelector".to_owned(),
            reason: reason.clone(),
            instead: SELECTOR_INSTEAD,
        });
        let covered = if types_ok {
            covered(map, policy_types.as_deref())
        } else {
            (true, true)
        };
        return (isolate_all(covered, &reason), unreadable);
    }
    let spec = NetworkPolicySpec {
        pod_selector: read(map, "podSelector").unwrap_or_default(),
        policy_types,
        ingress: rules(map, "ingress", "from", &mut unreadable, ingress_rule),
        egress: rules(map, "egress", "to", &mut unreadable, egress_rule),
    };
    (spec, unreadable)
}

/// `policyTypes` as read, and whether it was readable; unreadable ones become Ingress, Egress
/// and a stand-in the compiler reports as an unknown type.
fn policy_types(
    map: &Map<String, Value>,
    unreadable: &mut Vec<Unreadable>,
) -> (Option<Vec<String>>, bool) {
    match field_error::<Vec<String>>(map, "policyTypes") {
        None => (read(map, "policyTypes"), true),
        Some(reason) => {
            let stand_in = format!("{MARK} policyTypes ({reason})");
            unreadable.push(Unreadable {
                field: "spec.policyTypes".to_owned(),
                reason,
                instead: TYPES_INSTEAD,
            });
            let types = vec!["Ingress".to_owned(), "Egress".to_owned(), stand_in];
            (Some(types), false)
        }
    }
}

/// The directions the document covers: its policyTypes (both when none is known), else Ingress,
/// and Egress when egress rules are present in any shape.
fn covered(map: &Map<String, Value>, types: Option<&[String]>) -> (bool, bool) {
    match types {
        Some(types) if !types.is_empty() => {
            let has = |name: &str| types.iter().any(|t| t == name);
            match (has("Ingress"), has("Egress")) {
                (false, false) => (true, true),
                known => known,
            }
        }
        _ => match map.get("egress") {
            None | Some(Value::Null) => (true, false),
            Some(Value::Array(a)) => (true, !a.is_empty()),
            Some(_) => (true, true),
        },
    }
}

/// The spec for an unreadable podSelector: every pod of the namespace, no rule, isolated in the
/// `(ingress, egress)` directions.
fn isolate_all((ingress, egress): (bool, bool), reason: &str) -> NetworkPolicySpec {
    let types = [(ingress, "Ingress"), (egress, "Egress")]
        .into_iter()
        .filter(|(on, _)| *on)
        .map(|(_, name)| name.to_owned())
        .collect();
    NetworkPolicySpec {
        // An unknown operator: the compiler reports it and selects the whole namespace.
        pod_selector: LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "podSelector".to_owned(),
                operator: format!("{MARK} podSelector ({reason})"),
                values: None,
            }]),
        },
        policy_types: Some(types),
        ingress: None,
        egress: None,
    }
}

/// One direction's rules: absent stays absent; each rule that does not read is replaced by a
/// stand-in; a value that is not a list becomes a single stand-in.
fn rules<R>(
    map: &Map<String, Value>,
    key: &str,
    peers: &str,
    unreadable: &mut Vec<Unreadable>,
    make: fn(NetworkPolicyPeer) -> R,
) -> Option<Vec<R>>
where
    R: DeserializeOwned,
{
    let field = format!("spec.{key}");
    match map.get(key) {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) => Some(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| match serde_json::from_value(item.clone()) {
                    Ok(rule) => rule,
                    Err(e) => {
                        let reason = rule_error(item, peers).unwrap_or_else(|| e.to_string());
                        let rule = make(stand_in_peer(&reason));
                        unreadable.push(Unreadable {
                            field: format!("{field}[{i}]"),
                            reason,
                            instead: RULE_INSTEAD,
                        });
                        rule
                    }
                })
                .collect(),
        ),
        Some(other) => {
            let reason = format!("not a list ({})", type_name(other));
            let rule = make(stand_in_peer(&reason));
            unreadable.push(Unreadable {
                field,
                reason,
                instead: LIST_INSTEAD,
            });
            Some(vec![rule])
        }
    }
}

fn ingress_rule(peer: NetworkPolicyPeer) -> IngressRule {
    IngressRule {
        from: Some(vec![peer]),
        ports: None,
    }
}

fn egress_rule(peer: NetworkPolicyPeer) -> EgressRule {
    EgressRule {
        to: Some(vec![peer]),
        ports: None,
    }
}

/// Whether a rule with these peers is the stand-in for a rule that could not be read (for tests
/// and tools that compare a policy with the same policy without its unreadable rules).
pub fn is_stand_in_rule(peers: Option<&[NetworkPolicyPeer]>) -> bool {
    let prefix = format!("{MARK} rule (");
    matches!(peers, Some([peer]) if peer.pod_selector.is_none()
        && peer.namespace_selector.is_none()
        && peer.ip_block.as_ref().is_some_and(|b| b.cidr.starts_with(&prefix)))
}

/// A peer that matches nothing: an ipBlock whose CIDR text says why (the compiler reports an
/// invalid CIDR and drops the peer; a rule whose every peer is invalid matches nothing).
fn stand_in_peer(reason: &str) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        ip_block: Some(IpBlock {
            cidr: format!("{MARK} rule ({reason})"),
            except: None,
        }),
        ..NetworkPolicyPeer::default()
    }
}

/// The first sub-field of a rule that does not read, as `ports[0].endPort: reason`.
fn rule_error(rule: &Value, peers: &str) -> Option<String> {
    let Value::Object(map) = rule else {
        return Some(format!("not an object ({})", type_name(rule)));
    };
    let peer_fields: &[(&str, Check)] = &[
        ("podSelector", field_error::<LabelSelector>),
        ("namespaceSelector", field_error::<LabelSelector>),
        ("ipBlock", field_error::<IpBlock>),
    ];
    let port_fields: &[(&str, Check)] = &[
        ("protocol", field_error::<String>),
        ("port", field_error::<IntOrString>),
        ("endPort", field_error::<i64>),
    ];
    list_error(map, peers, peer_fields).or_else(|| list_error(map, "ports", port_fields))
}

type Check = fn(&Map<String, Value>, &str) -> Option<String>;

/// The first entry of the list `key` (or field of an entry) that does not read.
fn list_error(map: &Map<String, Value>, key: &str, fields: &[(&str, Check)]) -> Option<String> {
    let items = match map.get(key) {
        None | Some(Value::Null) => return None,
        Some(Value::Array(items)) => items,
        Some(other) => return Some(format!("{key}: not a list ({})", type_name(other))),
    };
    items.iter().enumerate().find_map(|(i, item)| {
        let Value::Object(entry) = item else {
            return Some(format!("{key}[{i}]: not an object ({})", type_name(item)));
        };
        fields
            .iter()
            .find_map(|(name, check)| check(entry, name).map(|e| format!("{key}[{i}].{name}: {e}")))
    })
}

/// Why `map[key]` does not read as a `T` (`None`: absent, `null` or fine).
fn field_error<T: DeserializeOwned>(map: &Map<String, Value>, key: &str) -> Option<String> {
    match map.get(key) {
        None | Some(Value::Null) => None,
        Some(v) => serde_json::from_value::<T>(v.clone())
            .err()
            .map(|e| e.to_string()),
    }
}

fn read<T: DeserializeOwned>(map: &Map<String, Value>, key: &str) -> Option<T> {
    map.get(key)
        .filter(|v| !v.is_null())
        .and_then(|v| serde_json::from_value(v.clone()).ok())
}

/// A spec that needs no lenient reading: absent or `null` (the empty spec), or exact. Otherwise
/// the value, to be read part by part.
pub(crate) fn exact<T: DeserializeOwned + Default>(spec: Option<&Value>) -> Result<T, &Value> {
    match spec {
        None | Some(Value::Null) => Ok(T::default()),
        Some(v) => serde_json::from_value(v.clone()).map_err(|_| v),
    }
}

/// What kind of JSON value `v` is, for a reason that says what was found.
pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
#[path = "lenient_tests.rs"]
mod tests;
