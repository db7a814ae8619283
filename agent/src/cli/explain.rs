//! `palisade explain`: the verdict for one connection and why, through the compiled structures.
use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::tiers::{self, SideFacts, TierTrace};
use super::{load, CliError};
use crate::compiler::{
    compile, verdict, CompileOptions, CompiledOutput, Direction, IdentityKey, SideDecision,
    IDENTITY_HOST, IDENTITY_WORLD,
};
use crate::model::{IntOrString, Model, ObjectKey, Pod, Protocol};
use crate::reference::{endpoint_with_ip, SideAnswer};

/// Arguments of `palisade explain --manifests DIR --from A --to B --port P [--protocol P] [--json]`.
#[derive(Debug, Clone)]
pub struct ExplainArgs {
    pub manifests: PathBuf,
    /// `NS/POD` or an IP.
    pub from: String,
    /// `NS/POD` or an IP (a Service ClusterIP is translated to its backends).
    pub to: String,
    pub port: u16,
    pub protocol: Protocol,
    pub json: bool,
}

/// One side of the explanation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SideExplanation {
    /// The pod whose policy decides this side, if the address is a local endpoint.
    pub endpoint: Option<String>,
    pub isolated: bool,
    /// Policies that select the pod for this direction.
    pub isolated_by: Vec<String>,
    pub allowed: bool,
    /// `not_endpoint`, `node_traffic`, `not_isolated`, `allowed` or `denied`.
    pub decision: String,
    /// The policy and rule that allowed it, e.g. `x/allow-a ingress[0]`.
    pub rule: Option<String>,
    /// The identity of the peer address and what it stands for.
    pub peer_identity: Option<u32>,
    pub peer_description: Option<String>,
    /// The walk through the tiers (Admin, NetworkPolicy, Baseline) by the reference evaluator,
    /// checked against the compiled decision above; absent when this side is not a local pod
    /// endpoint (or for an agent too old to send it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tiers: Option<TierTrace>,
}

/// The explanation of one connection (after Service translation).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Explanation {
    pub from: String,
    pub from_ip: IpAddr,
    pub to: String,
    pub to_ip: IpAddr,
    pub protocol: Protocol,
    pub port: u16,
    /// `namespace/name` of the Service the destination was translated through, if any.
    pub service: Option<String>,
    pub allowed: bool,
    /// Who decided the verdict: the denying side's ClusterNetworkPolicy rule or NetworkPolicy
    /// isolation, or the rules that allowed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    /// Whether the compiled lookup (what the dataplane does) agrees with the reference
    /// evaluator on both sides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agrees: Option<bool>,
    /// Whether the model has ClusterNetworkPolicies (the text then shows every tier).
    #[serde(default, skip_serializing_if = "is_false")]
    pub tiered: bool,
    pub egress: SideExplanation,
    pub ingress: SideExplanation,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A translated destination: name, IP and port.
type Target = (String, IpAddr, u16);

/// Resolves `NS/POD` (its first IP) or an IP literal.
fn resolve(model: &Model, text: &str) -> Result<(String, IpAddr), CliError> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        let owner = model.pods.values().find(|p| p.ips.contains(&ip));
        return Ok((
            owner.map_or_else(|| ip.to_string(), |p| p.key().to_string()),
            ip,
        ));
    }
    let key = ObjectKey::parse(text).ok_or_else(|| CliError::BadAddress(text.to_owned()))?;
    let pod = model
        .pods
        .get(&key)
        .ok_or_else(|| CliError::UnknownPod(text.to_owned()))?;
    let ip = pod
        .ips
        .first()
        .ok_or_else(|| CliError::NoIp(text.to_owned()))?;
    Ok((key.to_string(), *ip))
}

/// "Policy applies after Service translation": a ClusterIP destination becomes each backend pod
/// (selector match, with an IP of the same family) at the resolved targetPort.
fn translate(
    model: &Model,
    ip: IpAddr,
    protocol: Protocol,
    port: u16,
) -> Option<(String, Vec<Target>)> {
    let svc = model
        .services
        .values()
        .find(|s| s.cluster_ips.contains(&ip))?;
    let sp = svc
        .ports
        .iter()
        .find(|p| p.port == port && p.protocol == protocol)?;
    let selector = svc.selector.as_ref()?;
    let mut backends = Vec::new();
    for pod in model.pods.values().filter(|p| p.namespace == svc.namespace) {
        if !selector.iter().all(|(k, v)| pod.labels.get(k) == Some(v)) {
            continue;
        }
        let Some(pod_ip) = pod.ips.iter().find(|i| i.is_ipv6() == ip.is_ipv6()) else {
            continue;
        };
        let target = match &sp.target_port {
            IntOrString::Int(n) => u16::try_from(*n).ok(),
            IntOrString::String(name) => pod
                .container_ports
                .iter()
                .find(|c| c.name.as_deref() == Some(name) && c.protocol == protocol)
                .map(|c| c.port),
        };
        if let Some(target) = target {
            backends.push((pod.key().to_string(), *pod_ip, target));
        }
    }
    Some((format!("{}/{}", svc.namespace, svc.name), backends))
}

fn describe_identity(compiled: &CompiledOutput, id: u32) -> String {
    match id {
        IDENTITY_WORLD => "world (no pod, no ipBlock prefix)".to_owned(),
        IDENTITY_HOST => "the endpoint's own node".to_owned(),
        _ => match compiled
            .identities
            .identities
            .get(&id)
            .map(|i| (&i.key, &i.members))
        {
            Some((IdentityKey::Cidr(net), _)) => format!("addresses in {net}"),
            Some((IdentityKey::Pods { .. }, members)) => {
                let names: Vec<String> = members.iter().take(5).map(ToString::to_string).collect();
                let more = members.len().saturating_sub(5);
                let tail = if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                };
                format!("pods {}{tail}", names.join(", "))
            }
            None => "unknown identity".to_owned(),
        },
    }
}

fn side(
    compiled: &CompiledOutput,
    endpoint: Option<&ObjectKey>,
    direction: Direction,
    decision: &SideDecision,
) -> SideExplanation {
    let state = endpoint
        .and_then(|k| compiled.endpoints.get(k))
        .map(|e| e.direction(direction));
    let (name, rule, identity) = match decision {
        SideDecision::NotEndpoint => ("not_endpoint", None, None),
        SideDecision::NodeTraffic => ("node_traffic", None, Some(IDENTITY_HOST)),
        SideDecision::NotIsolated => ("not_isolated", None, None),
        SideDecision::Allowed {
            peer_identity,
            rule,
            rule_id,
            ..
        } => {
            let rule = rule
                .as_ref()
                .map_or_else(|| format!("rule #{rule_id}"), ToString::to_string);
            ("allowed", Some(rule), Some(*peer_identity))
        }
        SideDecision::Denied { peer_identity } => ("denied", None, Some(*peer_identity)),
        SideDecision::DeniedByRule {
            peer_identity,
            rule,
            rule_id,
            ..
        } => {
            let rule = rule
                .as_ref()
                .map_or_else(|| format!("rule #{rule_id}"), ToString::to_string);
            ("denied", Some(rule), Some(*peer_identity))
        }
    };
    SideExplanation {
        endpoint: endpoint.map(ToString::to_string),
        isolated: state.is_some_and(|s| s.isolated),
        isolated_by: state
            .map(|s| s.isolated_by.iter().map(ToString::to_string).collect())
            .unwrap_or_default(),
        allowed: decision.allows(),
        decision: name.to_owned(),
        rule,
        peer_identity: identity,
        peer_description: identity.map(|id| describe_identity(compiled, id)),
        tiers: None,
    }
}

/// The tier walk of one side, when both the compiled output and the reference see a local
/// endpoint there.
fn side_trace(
    model: &Model,
    facts: Option<SideFacts<'_>>,
    answer: &SideAnswer,
    decision: &SideDecision,
) -> Option<TierTrace> {
    let facts = facts?;
    if matches!(decision, SideDecision::NotEndpoint) {
        return None;
    }
    Some(tiers::trace(model, &facts, answer, decision))
}

/// Whether a side without a walk agrees: nothing to compare when the compiled output does not
/// enforce it (a node-local compile), else the verdicts must match.
fn plain_agrees(s: &SideExplanation, answer: &SideAnswer) -> bool {
    s.tiers.as_ref().map_or_else(
        || s.decision == "not_endpoint" || s.allowed == answer.allowed,
        |t| t.agrees,
    )
}

/// The final verdict's decider: the first denying side (egress is checked first, as the packet
/// leaves the client), or every side that a rule allowed.
fn verdict_decider(e: &Explanation) -> String {
    let sides = [("egress", &e.egress), ("ingress", &e.ingress)];
    let who = |s: &SideExplanation| s.endpoint.clone().unwrap_or_else(|| "-".to_owned());
    let words = |s: &SideExplanation| {
        s.tiers
            .as_ref()
            .map(|t| t.decided_by.clone())
            .or_else(|| s.rule.clone())
            .unwrap_or_else(|| s.decision.replace('_', " "))
    };
    if let Some((dir, s)) = sides.iter().find(|(_, s)| !s.allowed) {
        return format!("{dir} of {}: {}", who(s), words(s));
    }
    let ruled: Vec<String> = sides
        .iter()
        .filter(|(_, s)| s.rule.is_some())
        .map(|(dir, s)| format!("{dir} of {}: {}", who(s), words(s)))
        .collect();
    if ruled.is_empty() {
        "no rule on either side: allowed by default".to_owned()
    } else {
        ruled.join("; ")
    }
}

/// Explains every connection `from → to` stands for (one, or one per Service backend).
pub fn explain_model(
    model: &Model,
    from: &str,
    to: &str,
    protocol: Protocol,
    port: u16,
) -> Result<Vec<Explanation>, CliError> {
    let compiled = compile(model, &CompileOptions::default());
    explain_compiled(model, &compiled, from, to, protocol, port)
}

/// [`explain_model`] over output already compiled from `model`.
pub fn explain_compiled<'a>(
    model: &'a Model,
    compiled: &CompiledOutput,
    from: &str,
    to: &str,
    protocol: Protocol,
    port: u16,
) -> Result<Vec<Explanation>, CliError> {
    let (from_name, from_ip) = resolve(model, from)?;
    let (to_name, to_ip) = resolve(model, to)?;
    let (service, targets) = match translate(model, to_ip, protocol, port) {
        Some((svc, backends)) => (Some(svc), backends),
        None => (None, vec![(to_name, to_ip, port)]),
    };
    let tiered = !model.cluster_policies.is_empty();
    let explain = |(to, to_ip, port): Target| {
        let v = verdict(compiled, from_ip, to_ip, protocol, port);
        let node = compiled.options.allow_node_traffic;
        let r = tiers::reference_answer(model, node, from_ip, to_ip, protocol, port);
        let (client, server) = (
            endpoint_with_ip(model, from_ip),
            endpoint_with_ip(model, to_ip),
        );
        let facts = |pod: Option<&'a Pod>, egress, peer_ip, peer_pod| {
            pod.map(|pod| SideFacts {
                pod,
                egress,
                peer_ip,
                peer_pod,
                protocol,
                port,
            })
        };
        let mut egress = side(compiled, v.client.as_ref(), Direction::Egress, &v.egress);
        let f = facts(client, true, to_ip, server);
        egress.tiers = side_trace(model, f, &r.egress, &v.egress);
        let mut ingress = side(compiled, v.server.as_ref(), Direction::Ingress, &v.ingress);
        let f = facts(server, false, from_ip, client);
        ingress.tiers = side_trace(model, f, &r.ingress, &v.ingress);
        let agrees = plain_agrees(&egress, &r.egress) && plain_agrees(&ingress, &r.ingress);
        let mut e = Explanation {
            from: from_name.clone(),
            from_ip,
            to,
            to_ip,
            protocol,
            port,
            service: service.clone(),
            allowed: v.allowed,
            decided_by: None,
            agrees: Some(agrees),
            tiered,
            egress,
            ingress,
        };
        e.decided_by = Some(verdict_decider(&e));
        e
    };
    Ok(targets.into_iter().map(explain).collect())
}

fn render_side(out: &mut String, label: &str, s: &SideExplanation, tiered: bool) {
    let who = s.endpoint.as_deref().unwrap_or("-");
    let peer = match (&s.peer_identity, &s.peer_description) {
        (Some(id), Some(d)) => format!(" (peer identity {id}: {d})"),
        _ => String::new(),
    };
    let why = match s.decision.as_str() {
        "not_endpoint" => "not a local pod endpoint: nothing enforced on this side".to_owned(),
        "node_traffic" => "traffic with the pod's own node is allowed by default".to_owned(),
        "not_isolated" => format!("no policy selects {who} for {label}: allowed"),
        "allowed" if s.isolated_by.is_empty() => {
            format!("allowed by {}{peer}", s.rule.as_deref().unwrap_or("?"))
        }
        "allowed" => format!(
            "isolated by {}; allowed by {}{peer}",
            s.isolated_by.join(", "),
            s.rule.as_deref().unwrap_or("?")
        ),
        _ if s.rule.is_some() => format!("denied by {}{peer}", s.rule.as_deref().unwrap_or("?")),
        _ => format!(
            "isolated by {}; no rule allows it{peer}",
            s.isolated_by.join(", ")
        ),
    };
    let Some(t) = s.tiers.as_ref().filter(|_| tiered) else {
        out.push_str(&format!("  {label} of {who}: {why}\n"));
        return;
    };
    let headline = match (s.allowed, t.tier.as_deref()) {
        (true, Some("Default")) => format!("allowed, {}", t.decided_by),
        (true, _) => format!("allowed by {}", t.decided_by),
        (false, _) => format!("DENIED by {}", t.decided_by),
    };
    out.push_str(&format!("  {label} of {who}: {headline}{peer}\n"));
    let isolated = if s.isolated_by.is_empty() {
        format!("no policy selects {who} for {label}")
    } else {
        format!("isolated by {}", s.isolated_by.join(", "))
    };
    let np = match t.tier.as_deref() {
        Some("NetworkPolicy") if s.allowed => format!("{isolated}; allowed by {}", t.decided_by),
        Some("NetworkPolicy") => format!("{isolated}; no rule allows it"),
        _ => format!("{isolated}: no decision, on to the next tier"),
    };
    tiers::render(out, t, &np);
}

/// The check line: does the compiled lookup agree with the reference evaluator?
fn render_check(out: &mut String, e: &Explanation) {
    match e.agrees {
        None => {}
        Some(true) => out.push_str(
            "  check: the compiled lookup (what the dataplane does) agrees with the reference evaluator\n",
        ),
        Some(false) => {
            let mut diffs = Vec::new();
            for (dir, s) in [("egress", &e.egress), ("ingress", &e.ingress)] {
                if let Some(t) = s.tiers.as_ref().filter(|t| !t.agrees) {
                    diffs.push(format!(
                        "{dir}: reference {} by {}, compiled {}",
                        if t.reference_allowed { "allowed" } else { "denied" },
                        t.decided_by,
                        t.compiled.as_deref().unwrap_or("?")
                    ));
                }
            }
            out.push_str(&format!(
                "  check: MISMATCH between the compiled lookup and the reference evaluator: {}\n",
                diffs.join("; ")
            ));
        }
    }
}

/// Renders explanations as text.
pub fn render_text(explanations: &[Explanation]) -> String {
    let mut out = String::new();
    for e in explanations {
        let via = e
            .service
            .as_ref()
            .map(|s| format!(" via Service {s}"))
            .unwrap_or_default();
        let verdict = if e.allowed { "ALLOWED" } else { "DENIED" };
        out.push_str(&format!(
            "{} ({}) -> {} ({}) {}/{}{via}: {verdict}\n",
            e.from, e.from_ip, e.to, e.to_ip, e.protocol, e.port
        ));
        if e.tiered {
            if let Some(d) = &e.decided_by {
                out.push_str(&format!("  decided by {d}\n"));
            }
        }
        render_side(&mut out, "egress", &e.egress, e.tiered);
        render_side(&mut out, "ingress", &e.ingress, e.tiered);
        render_check(&mut out, e);
    }
    out
}

/// `palisade explain`: prints the explanation to `out` (text, or with `json` one JSON object for
/// a single connection and an array for a Service with several backends).
pub fn explain(
    args: &ExplainArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), CliError> {
    let model = load(&args.manifests, err)?;
    let explanations = explain_model(&model, &args.from, &args.to, args.protocol, args.port)?;
    if args.json {
        let text = match explanations.as_slice() {
            [one] => serde_json::to_string_pretty(one),
            many => serde_json::to_string_pretty(many),
        };
        writeln!(out, "{}", text.map_err(CliError::Json)?).map_err(CliError::Io)?;
    } else {
        write!(out, "{}", render_text(&explanations)).map_err(CliError::Io)?;
    }
    Ok(())
}
