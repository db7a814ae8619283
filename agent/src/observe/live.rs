//! Live answers computed by the main loop: `explain` against the running agent's model, with a
//! check that the dataplane's maps agree with the model for that pair, and `lint` of the model.

use std::net::IpAddr;

use palisade_common::{
    endpoint::{
        Endpoint, CFG_ALLOW_HOST, EP_AUDIT_EGRESS, EP_AUDIT_INGRESS, EP_EGRESS_ISOLATED,
        EP_FAIL_CLOSED, EP_INGRESS_ISOLATED,
    },
    identity::{IDENTITY_ANY, IDENTITY_HOST, IDENTITY_WORLD},
    policy::{TIER_ADMIN, TIER_BASELINE, TIER_DEFAULT},
};
use serde::Serialize;
use serde_json::Value;

use super::{board::ExplainQuery, View};
use crate::{
    compiler::{verdict, Direction, SideDecision},
    dataplane::{Dataplane, DataplaneError},
    model::Protocol,
};

/// What the maps say for one side of a connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MapSide {
    /// `not_isolated`, `node_traffic`, `allowed`, `denied`, `fail_closed` or `no_record`.
    pub decision: &'static str,
    pub rule_id: Option<u32>,
    pub peer_identity: Option<u32>,
}

/// The model's side (the node's compiled output) next to the maps' side.
#[derive(Debug, Clone, Serialize)]
pub struct SideCheck {
    pub endpoint: String,
    pub direction: String,
    pub ifindex: u32,
    pub model: MapSide,
    pub maps: MapSide,
    pub agrees: bool,
    /// What differs (empty when it agrees).
    pub differences: Vec<String>,
}

/// The dataplane check of one connection.
#[derive(Debug, Clone, Serialize)]
pub struct DataplaneCheck {
    pub from_ip: IpAddr,
    pub to_ip: IpAddr,
    pub port: u16,
    pub agrees: bool,
    /// One entry per side whose endpoint is on this node (none: nothing enforced here).
    pub sides: Vec<SideCheck>,
}

/// Answers `explain` for the live model: the explanations (as offline) and the dataplane check.
pub fn explain(dp: &Dataplane, view: &View<'_>, q: &ExplainQuery) -> Result<Value, String> {
    let explanations = crate::cli::explain_model(view.model, &q.from, &q.to, q.protocol, q.port)
        .map_err(|e| e.to_string())?;
    let mut checks = Vec::new();
    for e in &explanations {
        let c = check_pair(dp, view, e.from_ip, e.to_ip, q.protocol, e.port)
            .map_err(|e| e.to_string())?;
        checks.push(c);
    }
    let agrees = checks.iter().all(|c| c.agrees);
    Ok(serde_json::json!({
        "node": view.node,
        "explanations": explanations,
        "dataplane": {"agrees": agrees, "checks": checks},
    }))
}

/// Compares, for each local side of `from → to`, the node's compiled decision with the one the
/// maps give (endpoint record, identity trie, policy trie, read back from the kernel).
pub fn check_pair(
    dp: &Dataplane,
    view: &View<'_>,
    from: IpAddr,
    to: IpAddr,
    protocol: Protocol,
    port: u16,
) -> Result<DataplaneCheck, DataplaneError> {
    let v = verdict(view.output, from, to, protocol, port);
    let mut sides = Vec::new();
    let pairs = [
        (v.client.as_ref(), Direction::Egress, to, &v.egress),
        (v.server.as_ref(), Direction::Ingress, from, &v.ingress),
    ];
    for (pod, dir, peer, model) in pairs {
        let Some(pod) = pod else { continue };
        let Some(att) = view.attached.get(pod) else {
            continue;
        };
        let record = dp.endpoint_record(att.ifindex)?;
        let maps = map_side(dp, record.as_ref(), dir, peer, protocol, port)?;
        let model = model_side(model);
        let mut differences = differences(&model, &maps);
        if let Some(r) = &record {
            let want = view.audit(pod);
            let flag = match dir {
                Direction::Ingress => EP_AUDIT_INGRESS,
                Direction::Egress => EP_AUDIT_EGRESS,
            };
            if (r.flags & flag != 0) != want && r.flags & EP_FAIL_CLOSED == 0 {
                differences.push(format!("audit mode: model {want}, maps {}", !want));
            }
        }
        sides.push(SideCheck {
            endpoint: pod.to_string(),
            direction: dir.to_string(),
            ifindex: att.ifindex,
            agrees: differences.is_empty(),
            model,
            maps,
            differences,
        });
    }
    Ok(DataplaneCheck {
        from_ip: from,
        to_ip: to,
        port,
        agrees: sides.iter().all(|s| s.agrees),
        sides,
    })
}

fn model_side(d: &SideDecision) -> MapSide {
    match d {
        SideDecision::NotEndpoint => MapSide {
            decision: "no_record",
            rule_id: None,
            peer_identity: None,
        },
        SideDecision::NodeTraffic => MapSide {
            decision: "node_traffic",
            rule_id: None,
            peer_identity: Some(IDENTITY_HOST),
        },
        SideDecision::NotIsolated => MapSide {
            decision: "not_isolated",
            rule_id: None,
            peer_identity: None,
        },
        SideDecision::Allowed {
            peer_identity,
            rule_id,
            ..
        } => MapSide {
            decision: "allowed",
            rule_id: Some(*rule_id),
            peer_identity: Some(*peer_identity),
        },
        SideDecision::Denied { peer_identity } => MapSide {
            decision: "denied",
            rule_id: None,
            peer_identity: Some(*peer_identity),
        },
        SideDecision::DeniedByRule {
            peer_identity,
            rule_id,
            ..
        } => MapSide {
            decision: "denied",
            rule_id: Some(*rule_id),
            peer_identity: Some(*peer_identity),
        },
    }
}

fn differences(model: &MapSide, maps: &MapSide) -> Vec<String> {
    let mut out = Vec::new();
    if model.decision != maps.decision {
        out.push(format!(
            "decision: model {}, maps {}",
            model.decision, maps.decision
        ));
    }
    if model.rule_id != maps.rule_id {
        out.push(format!(
            "rule id: model {:?}, maps {:?}",
            model.rule_id, maps.rule_id
        ));
    }
    let isolated = matches!(model.decision, "allowed" | "denied");
    if isolated && model.peer_identity != maps.peer_identity {
        out.push(format!(
            "peer identity: model {:?}, maps {:?}",
            model.peer_identity, maps.peer_identity
        ));
    }
    out
}

/// What the programs would decide for a new flow, from the maps (the lookup in
/// `ebpf/src/lookup.rs`, done with map reads).
fn map_side(
    dp: &Dataplane,
    record: Option<&Endpoint>,
    dir: Direction,
    peer: IpAddr,
    protocol: Protocol,
    port: u16,
) -> Result<MapSide, DataplaneError> {
    let side = |decision, rule_id, peer_identity| MapSide {
        decision,
        rule_id,
        peer_identity,
    };
    let Some(ep) = record else {
        return Ok(side("no_record", None, None));
    };
    if ep.flags & EP_FAIL_CLOSED != 0 {
        return Ok(side("fail_closed", None, None));
    }
    let identity = dp.identity_of(peer)?.unwrap_or(IDENTITY_WORLD);
    let allow_host = dp.config()?.flags & CFG_ALLOW_HOST != 0;
    if identity == IDENTITY_HOST && allow_host {
        return Ok(side("node_traffic", None, Some(identity)));
    }
    let (flag, table) = match dir {
        Direction::Ingress => (EP_INGRESS_ISOLATED, ep.ingress_table),
        Direction::Egress => (EP_EGRESS_ISOLATED, ep.egress_table),
    };
    if ep.flags & flag == 0 {
        return Ok(side("not_isolated", None, None));
    }
    for id in [identity, IDENTITY_ANY] {
        if let Some(v) = dp.policy_entry(table, id, protocol.number(), port)? {
            // Read the value as ebpf/src/lookup.rs does: the action, and the tier for who decided.
            let allow = v.action == palisade_common::policy::Action::Allow as u8;
            return Ok(match (allow, v.tier) {
                (true, TIER_DEFAULT) => side("not_isolated", None, None),
                (true, _) => side("allowed", Some(v.rule_id), Some(identity)),
                (false, TIER_ADMIN | TIER_BASELINE) => {
                    side("denied", Some(v.rule_id), Some(identity))
                }
                (false, _) => side("denied", None, Some(identity)),
            });
        }
    }
    Ok(side("denied", None, Some(identity)))
}

/// Answers `lint` for the live model.
pub fn lint(view: &View<'_>) -> Result<Value, String> {
    let findings = crate::cli::lint::lint_model(view.model);
    serde_json::to_value(crate::cli::lint::Report { findings }).map_err(|e| e.to_string())
}
