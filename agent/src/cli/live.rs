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
    [
        header(body, &live),
        endpoints(&live),
        counters(&live),
        problems(body, &live),
    ]
    .concat()
}

fn header(body: &Value, live: &Live) -> String {
    let w = &live.watch;
    let health = if w.healthy { "healthy" } else { "UNHEALTHY" };
    let detail = if w.detail.is_empty() {
        String::new()
    } else {
        format!(": {}", w.detail)
    };
    format!(
        "agent on node {}, started {}\nsource: {} ({health}{detail}), last change seen {}, last sync {} ({} ms, compile {} ms, {} syncs)\napplied revision {}, policy generation {}\n",
        live.node,
        live.started_at,
        w.source,
        w.last_change_seen.as_deref().unwrap_or("-"),
        w.last_sync.as_deref().unwrap_or("-"),
        w.last_sync_ms,
        w.last_compile_ms,
        w.syncs,
        body["applied_revision"],
        live.policy_generation
    )
}

fn endpoints(live: &Live) -> String {
    let mut s = format!("endpoints ({}):\n", live.endpoints.len());
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
    s
}

fn nonzero(m: &std::collections::BTreeMap<String, u64>) -> String {
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
}

fn counters(live: &Live) -> String {
    let audit_ns = if live.audit.namespaces.is_empty() {
        "-".to_owned()
    } else {
        live.audit.namespaces.join(", ")
    };
    let flow = match &live.flow_log {
        Some(f) => format!(
            "flow log: {} (allows {}, rate {}/s): {} written, {} dropped by the rate limit; {} events received\n",
            f.target, f.allows, f.rate, f.written, f.dropped, live.events_received
        ),
        None => "flow log: off\n".to_owned(),
    };
    format!(
        "datapath packets: {}\naudited packets: {}\naudit mode: agent-wide {}, namespaces {audit_ns}\n{flow}metrics: {}\n",
        nonzero(&live.datapath),
        nonzero(&live.audited),
        live.audit.agent,
        live.metrics_addr.as_deref().unwrap_or("off")
    )
}

fn problems(body: &Value, live: &Live) -> String {
    let mut s = String::new();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::board::{EndpointView, ErrorEntry, MapUsage};

    #[test]
    fn status_text_has_every_section() {
        let mut live = Live {
            node: "node-0".into(),
            policy_generation: 4,
            ..Live::default()
        };
        live.watch.source = "manifests /m".into();
        live.watch.healthy = true;
        live.endpoints.push(EndpointView {
            pod: "x/a".into(),
            ifname: "veth1".into(),
            ifindex: 7,
            state: "attached".into(),
            attach: "tcx".into(),
            ingress: "isolated by x/p".into(),
            egress: "open".into(),
            audit: true,
            generation: 4,
        });
        live.maps.push(MapUsage {
            map: "policy".into(),
            entries: 3,
            capacity: 100,
            percent: 3.0,
        });
        live.datapath.insert("none".into(), 9);
        live.recent_errors.push_back(ErrorEntry {
            time: "t".into(),
            message: "boom".into(),
        });
        let mut body =
            serde_json::json!({"applied_revision": 2, "policy_problems": ["bad"], "notes": []});
        body["dataplane"] = serde_json::to_value(&live).unwrap();
        let text = render_status(&body);
        for want in [
            "agent on node node-0",
            "source: manifests /m (healthy)",
            "applied revision 2, policy generation 4",
            "endpoints (1):",
            "x/a",
            "attached via tcx, generation 4  AUDIT",
            "ingress: isolated by x/p",
            "policy             3 / 100      (3.0%)",
            "datapath packets: none 9",
            "audited packets: -",
            "flow log: off",
            "metrics: off",
            "policy problems and notes (1):",
            "  t boom",
        ] {
            assert!(text.contains(want), "{want:?} missing from:\n{text}");
        }
    }
}
