//! Unreadable parts of a policy fail closed: a model whose policies hold stand-ins for rules
//! that could not be read (`palisade::source::lenient`) never allows more, in either direction,
//! than the same model with those rules removed (and each policy's effective policyTypes
//! written out, so that removing a rule cannot change what the policy isolates).

use std::net::IpAddr;

use palisade::compiler::{compile, verdict, CompileOptions};
use palisade::model::{Model, NetworkPolicySpec, Protocol};
use palisade::source::lenient::is_stand_in_rule;

use super::check::probe_ips;

const PORTS: [u16; 4] = [53, 80, 8080, 65535];

/// The spec without its stand-in rules, with its effective policyTypes explicit; `None` when it
/// has no stand-in.
fn without_stand_ins(spec: &NetworkPolicySpec) -> Option<NetworkPolicySpec> {
    let ingress = spec.ingress.iter().flatten();
    let egress = spec.egress.iter().flatten();
    let has = ingress.clone().any(|r| is_stand_in_rule(r.from.as_deref()))
        || egress.clone().any(|r| is_stand_in_rule(r.to.as_deref()));
    if !has {
        return None;
    }
    let types = match spec.policy_types.as_deref() {
        Some(t) if !t.is_empty() => t.to_vec(),
        _ => {
            let mut t = vec!["Ingress".to_owned()];
            if spec.egress.as_ref().is_some_and(|e| !e.is_empty()) {
                t.push("Egress".to_owned());
            }
            t
        }
    };
    Some(NetworkPolicySpec {
        pod_selector: spec.pod_selector.clone(),
        policy_types: Some(types),
        ingress: spec.ingress.as_ref().map(|rules| {
            let kept = rules
                .iter()
                .filter(|r| !is_stand_in_rule(r.from.as_deref()));
            kept.cloned().collect()
        }),
        egress: spec.egress.as_ref().map(|rules| {
            let kept = rules.iter().filter(|r| !is_stand_in_rule(r.to.as_deref()));
            kept.cloned().collect()
        }),
    })
}

/// Checks the invariant for `model`; whether it had anything to check.
pub fn never_more_than_removed(model: &Model, options: &CompileOptions) -> Result<bool, String> {
    let mut removed = model.clone();
    let mut any = false;
    for policy in removed.policies.values_mut() {
        if let Some(spec) = without_stand_ins(&policy.spec) {
            policy.spec = spec;
            any = true;
        }
    }
    if !any {
        return Ok(false);
    }
    let (got, bound) = (compile(model, options), compile(&removed, options));
    let ips: Vec<IpAddr> = probe_ips(model);
    for from in &ips {
        for to in &ips {
            for protocol in Protocol::ALL {
                for port in PORTS {
                    let g = verdict(&got, *from, *to, protocol, port);
                    let b = verdict(&bound, *from, *to, protocol, port);
                    let more = (g.egress.allows() && !b.egress.allows())
                        || (g.ingress.allows() && !b.ingress.allows());
                    if more {
                        return Err(format!(
                            "{from} -> {to} {protocol}/{port}: allowed with the unreadable rules' stand-ins but not without them"
                        ));
                    }
                }
            }
        }
    }
    Ok(true)
}
