//! `palisade explain`: the verdict for one connection and why, through the compiled structures.
use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{load, CliError};
use crate::compiler::{
    compile, verdict, CompileOptions, CompiledOutput, Direction, IdentityKey, SideDecision,
    IDENTITY_HOST, IDENTITY_WORLD,
};
use crate::model::{IntOrString, Model, ObjectKey, Protocol};

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
    pub egress: SideExplanation,
    pub ingress: SideExplanation,
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
pub fn explain_compiled(
    model: &Model,
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
    let explain = |(to, to_ip, port): Target| {
        let v = verdict(compiled, from_ip, to_ip, protocol, port);
        Explanation {
            from: from_name.clone(),
            from_ip,
            to,
            to_ip,
            protocol,
            port,
            service: service.clone(),
            allowed: v.allowed,
            egress: side(compiled, v.client.as_ref(), Direction::Egress, &v.egress),
            ingress: side(compiled, v.server.as_ref(), Direction::Ingress, &v.ingress),
        }
    };
    Ok(targets.into_iter().map(explain).collect())
}

fn render_side(out: &mut String, label: &str, s: &SideExplanation) {
    let who = s.endpoint.as_deref().unwrap_or("-");
    let peer = match (&s.peer_identity, &s.peer_description) {
        (Some(id), Some(d)) => format!(" (peer identity {id}: {d})"),
        _ => String::new(),
    };
    let why = match s.decision.as_str() {
        "not_endpoint" => "not a local pod endpoint: nothing enforced on this side".to_owned(),
        "node_traffic" => "traffic with the pod's own node is allowed by default".to_owned(),
        "not_isolated" => format!("no policy selects {who} for {label}: allowed"),
        "allowed" => format!(
            "isolated by {}; allowed by {}{peer}",
            s.isolated_by.join(", "),
            s.rule.as_deref().unwrap_or("?")
        ),
        _ => format!(
            "isolated by {}; no rule allows it{peer}",
            s.isolated_by.join(", ")
        ),
    };
    out.push_str(&format!("  {label} of {who}: {why}\n"));
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
        render_side(&mut out, "egress", &e.egress);
        render_side(&mut out, "ingress", &e.ingress);
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
