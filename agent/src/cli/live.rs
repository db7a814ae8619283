//! The commands that talk to the running agent over its local socket: `status`, `explain
//! --socket` and `lint --socket`.

use std::{io::Write, path::Path, time::Duration};

use serde_json::Value;

use super::{explain::render_text as render_explanations, lint, CliError, Explanation};
use crate::{
    daemon::socket::{request, Request},
    observe::{board::Live, ExplainQuery},
};

/// The agent socket's default path (the one the CNI plugin uses too).
pub const DEFAULT_SOCKET: &str = crate::cni::plugin::DEFAULT_SOCKET;

const TIMEOUT: Duration = Duration::from_secs(30);

/// Sends `req` and returns the response body, or the agent's error.
pub fn ask(socket: &Path, req: &Request) -> Result<Value, CliError> {
    let resp = request(socket, req, TIMEOUT).map_err(|source| CliError::Socket {
        path: socket.to_owned(),
        source,
    })?;
    if resp.ok {
        Ok(resp.body)
    } else {
        Err(CliError::Agent(resp.error.unwrap_or_default()))
    }
}

/// `palisade status [--socket PATH] [--json]`.
pub fn status(socket: &Path, json: bool, out: &mut dyn Write) -> Result<(), CliError> {
    let body = ask(socket, &Request::Status)?;
    let text = if json {
        serde_json::to_string_pretty(&body).map_err(CliError::Json)? + "\n"
    } else {
        render_status(&body)
    };
    write!(out, "{text}").map_err(CliError::Io)
}

fn list(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_owned))
        .collect()
}

/// The human form of a status response.
pub fn render_status(body: &Value) -> String {
    let live: Live = serde_json::from_value(body["dataplane"].clone()).unwrap_or_default();
    let mut s = format!(
        "agent on node {}, started {}\nsource: {} ({}{}), last change seen {}, last sync {} ({} ms, compile {} ms, {} syncs)\n",
        live.node,
        live.started_at,
        live.watch.source,
        if live.watch.healthy { "healthy" } else { "UNHEALTHY" },
        if live.watch.detail.is_empty() { String::new() } else { format!(": {}", live.watch.detail) },
        live.watch.last_change_seen.as_deref().unwrap_or("-"),
        live.watch.last_sync.as_deref().unwrap_or("-"),
        live.watch.last_sync_ms,
        live.watch.last_compile_ms,
        live.watch.syncs,
    );
    s += &format!(
        "applied revision {}, policy generation {}\n",
        body["applied_revision"], live.policy_generation
    );
    s += &format!("endpoints ({}):\n", live.endpoints.len());
    for e in &live.endpoints {
        let audit = if e.audit { "  AUDIT" } else { "" };
        s += &format!(
            "  {:<28} {} (ifindex {}) {} via {}, generation {}{audit}\n      ingress: {}\n      egress:  {}\n",
            e.pod, e.ifname, e.ifindex, e.state, e.attach, e.generation, e.ingress, e.egress
        );
    }
    s += "maps:\n";
    for m in &live.maps {
        s += &format!(
            "  {:<11} {:>8} / {:<8} ({:.1}%)\n",
            m.map, m.entries, m.capacity, m.percent
        );
    }
    let counts = |m: &std::collections::BTreeMap<String, u64>| {
        let v: Vec<String> = m
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        if v.is_empty() {
            "-".to_owned()
        } else {
            v.join(", ")
        }
    };
    s += &format!("datapath packets: {}\n", counts(&live.datapath));
    s += &format!("audited packets: {}\n", counts(&live.audited));
    let audit_ns = if live.audit.namespaces.is_empty() {
        "-".to_owned()
    } else {
        live.audit.namespaces.join(", ")
    };
    s += &format!(
        "audit mode: agent-wide {}, namespaces {audit_ns}\n",
        live.audit.agent
    );
    match &live.flow_log {
        Some(f) => {
            s += &format!(
                "flow log: {} (allows {}, rate {}/s): {} written, {} dropped by the rate limit; {} events received\n",
                f.target, f.allows, f.rate, f.written, f.dropped, live.events_received
            );
        }
        None => s += "flow log: off\n",
    }
    s += &format!(
        "metrics: {}\n",
        live.metrics_addr.as_deref().unwrap_or("off")
    );
    let problems: Vec<String> = list(&body["policy_problems"])
        .into_iter()
        .chain(list(&body["notes"]))
        .collect();
    if !problems.is_empty() {
        s += &format!("policy problems and notes ({}):\n", problems.len());
        for p in problems {
            s += &format!("  {p}\n");
        }
    }
    if live.recent_errors.is_empty() {
        s += "recent errors: none\n";
    } else {
        s += "recent errors:\n";
        for e in &live.recent_errors {
            s += &format!("  {} {}\n", e.time, e.message);
        }
    }
    s
}

/// `palisade explain --socket PATH ...`: prints the explanation and whether the maps agree;
/// returns whether they do.
pub fn explain(
    socket: &Path,
    q: ExplainQuery,
    json: bool,
    out: &mut dyn Write,
) -> Result<bool, CliError> {
    let body = ask(socket, &Request::Explain(q))?;
    let agrees = body["dataplane"]["agrees"].as_bool().unwrap_or(false);
    if json {
        let text = serde_json::to_string_pretty(&body).map_err(CliError::Json)?;
        writeln!(out, "{text}").map_err(CliError::Io)?;
        return Ok(agrees);
    }
    let explanations: Vec<Explanation> =
        serde_json::from_value(body["explanations"].clone()).map_err(CliError::Json)?;
    let mut text = render_explanations(&explanations);
    text += &format!(
        "dataplane of node {}: ",
        body["node"].as_str().unwrap_or("?")
    );
    let checks = body["dataplane"]["checks"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let sides: Vec<&Value> = checks
        .iter()
        .flat_map(|c| c["sides"].as_array().into_iter().flatten())
        .collect();
    if sides.is_empty() {
        text += "neither side is an endpoint on this node (nothing enforced here)\n";
    } else if agrees {
        text += "the maps agree with the model\n";
    } else {
        text += "the maps DISAGREE with the model\n";
    }
    for side in sides {
        text += &format!(
            "  {} of {} (ifindex {}): model {}, maps {}{}\n",
            side["direction"].as_str().unwrap_or("?"),
            side["endpoint"].as_str().unwrap_or("?"),
            side["ifindex"],
            describe(&side["model"]),
            describe(&side["maps"]),
            if side["agrees"].as_bool() == Some(true) {
                String::new()
            } else {
                format!(" -- {}", list(&side["differences"]).join("; "))
            }
        );
    }
    write!(out, "{text}").map_err(CliError::Io)?;
    Ok(agrees)
}

fn describe(side: &Value) -> String {
    let mut s = side["decision"].as_str().unwrap_or("?").replace('_', " ");
    if let Some(r) = side["rule_id"].as_u64() {
        s += &format!(" (rule {r})");
    }
    if let Some(p) = side["peer_identity"].as_u64() {
        s += &format!(" [peer identity {p}]");
    }
    s
}

/// `palisade lint --socket PATH`: lints the running agent's model.
pub fn lint(socket: &Path, json: bool, out: &mut dyn Write) -> Result<bool, CliError> {
    let body = ask(socket, &Request::Lint)?;
    let report: lint::Report = serde_json::from_value(body).map_err(CliError::Json)?;
    lint::print(report.findings, json, out)
}
