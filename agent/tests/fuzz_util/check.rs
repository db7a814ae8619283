//! The invariants every input must keep, whatever it holds:
//! - loading and compiling never panic (checked by the caller);
//! - the output is consistent: every isolated direction has a stored table (an isolated
//!   endpoint without one would be enforced as "no table"), every stored table is referenced and
//!   hashes to its id, every rule and identity an entry names exists, every trie prefix maps to a
//!   known identity, port blocks are aligned, endpoint IPs point at endpoints that hold them;
//! - compiling is deterministic, and applying the same changes incrementally gives the same
//!   result as compiling from scratch;
//! - lookups in the output agree with the reference evaluator (where pod IPs are unambiguous).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use palisade::compiler::{
    compile, verdict, Action, CompileOptions, CompiledOutput, Compiler, DirectionPolicy, Peer,
    Tier, IDENTITY_HOST, IDENTITY_WORLD,
};
use palisade::model::{Model, ModelChange, Protocol};
use palisade::reference::{self, ReferenceOptions};

/// Addresses probed besides pod IPs: node addresses, unused pod-range addresses, the world.
const EXTRA_IPS: [&str; 6] = [
    "192.168.1.1",
    "10.0.0.200",
    "10.0.1.3",
    "8.8.8.8",
    "fd00::99",
    "2001:db8::1",
];
const PORTS: [u16; 5] = [53, 80, 81, 8080, 65535];

fn known_identity(out: &CompiledOutput, id: u32) -> bool {
    id == IDENTITY_WORLD || id == IDENTITY_HOST || out.identities.identities.contains_key(&id)
}

fn side(out: &CompiledOutput, pod: &str, dir: &str, d: &DirectionPolicy) -> Result<(), String> {
    // A direction is looked up in a table when NetworkPolicy isolates it or a
    // ClusterNetworkPolicy applies to it; otherwise it has none (allowed without a lookup).
    let tiered = !d.cluster_policies.is_empty();
    match (d.isolated || tiered, d.table) {
        (true, None) if d.isolated => return Err(format!("{pod} {dir}: isolated without a table")),
        (true, None) => {
            return Err(format!(
                "{pod} {dir}: under a ClusterNetworkPolicy without a table"
            ))
        }
        (false, Some(_)) => {
            return Err(format!(
                "{pod} {dir}: neither isolated nor under a ClusterNetworkPolicy but has a table"
            ))
        }
        (true, Some(t)) if !out.tables.contains_key(&t) => {
            return Err(format!("{pod} {dir}: table {t} is not stored"))
        }
        _ => {}
    }
    if d.isolated && d.isolated_by.is_empty() {
        return Err(format!("{pod} {dir}: isolated by no policy"));
    }
    Ok(())
}

/// Structural consistency of one output.
pub fn consistent(out: &CompiledOutput) -> Result<(), String> {
    for (key, ep) in &out.endpoints {
        let pod = key.to_string();
        side(out, &pod, "ingress", &ep.ingress)?;
        side(out, &pod, "egress", &ep.egress)?;
        for ip in &ep.ips {
            // Two pods may claim one IP (a terminating pod and the new pod that got its
            // address): one of them owns the entry, but a local endpoint's IP is never missing.
            if !out.endpoint_ips.contains_key(ip) {
                return Err(format!("{pod}: IP {ip} missing from endpoint_ips"));
            }
        }
    }
    for (ip, key) in &out.endpoint_ips {
        let ok = out.endpoints.get(key).is_some_and(|e| e.ips.contains(ip));
        if !ok {
            return Err(format!("endpoint_ips {ip} -> {key}: no such endpoint IP"));
        }
    }
    let used: BTreeSet<_> = out
        .endpoints
        .values()
        .flat_map(|e| [e.ingress.table, e.egress.table])
        .flatten()
        .collect();
    let stored: BTreeSet<_> = out.tables.keys().copied().collect();
    if used != stored {
        return Err(format!("tables used {used:?} != stored {stored:?}"));
    }
    for (id, table) in &out.tables {
        if table.content_hash() != *id {
            return Err(format!("table {id} does not hash to its id"));
        }
        for (k, v) in &table.entries {
            // Rule id 0 is "no rule": the tiers' default allow, or NetworkPolicy's implicit
            // deny where a ClusterNetworkPolicy needed an entry.
            let no_rule = matches!(
                (v.action, v.tier),
                (Action::Allow, Tier::Default) | (Action::Deny, Tier::NetworkPolicy)
            );
            if (v.rule_id != 0 || !no_rule) && !out.rules.contains_key(&v.rule_id) {
                return Err(format!("table {id}: rule {} unknown", v.rule_id));
            }
            if let Peer::Identity(i) = k.peer {
                if !known_identity(out, i) {
                    return Err(format!("table {id}: identity {i} unknown"));
                }
            }
            if k.protocol.is_none() && k.ports.is_some() {
                return Err(format!("table {id}: ports without a protocol"));
            }
            if let Some(p) = k.ports {
                let free = 16 - u32::from(p.prefix_len.min(16));
                let aligned = free == 16 && p.port == 0
                    || free < 16 && u32::from(p.port) & ((1u32 << free) - 1) == 0;
                if p.prefix_len > 16 || !aligned {
                    return Err(format!("table {id}: bad port block {p:?}"));
                }
            }
        }
    }
    for (net, id) in &out.identities.prefixes {
        if !known_identity(out, *id) {
            return Err(format!("prefix {net} -> unknown identity {id}"));
        }
    }
    Ok(())
}

/// Addresses to probe: every pod IP (at most 8) and the extras.
pub fn probe_ips(model: &Model) -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = model
        .pods
        .values()
        .flat_map(|p| p.ips.iter().copied())
        .take(8)
        .collect();
    ips.extend(EXTRA_IPS.iter().filter_map(|s| s.parse::<IpAddr>().ok()));
    ips.sort();
    ips.dedup();
    ips
}

/// Whether each endpoint IP belongs to one pod only (else the reference and the compiler may
/// legitimately pick different pods for it).
pub fn unambiguous(model: &Model) -> bool {
    let mut seen = BTreeSet::new();
    let mut hosts = BTreeSet::new();
    for n in model.nodes.values() {
        hosts.extend(n.addresses.iter().copied());
    }
    for p in model.pods.values() {
        if p.host_network {
            hosts.extend(p.ips.iter().copied());
        }
    }
    model
        .pods
        .values()
        .filter(|p| !p.host_network)
        .flat_map(|p| p.ips.iter())
        .all(|ip| seen.insert(*ip) && !hosts.contains(ip))
}

/// Lookups in `out` agree with the reference evaluator on every probe.
pub fn agrees(model: &Model, out: &CompiledOutput, options: &CompileOptions) -> Result<(), String> {
    let ips = probe_ips(model);
    let reference_options = ReferenceOptions {
        allow_node_traffic: options.allow_node_traffic,
    };
    let is_local = |ip: IpAddr| {
        reference::endpoint_with_ip(model, ip).is_some_and(|p| {
            options
                .node
                .as_deref()
                .is_none_or(|n| p.node_name.as_deref() == Some(n))
        })
    };
    for from in &ips {
        for to in &ips {
            for protocol in Protocol::ALL {
                for port in PORTS {
                    let got = verdict(out, *from, *to, protocol, port);
                    let want =
                        reference::evaluate(model, reference_options, *from, *to, protocol, port);
                    let want = (
                        want.egress || !is_local(*from),
                        want.ingress || !is_local(*to),
                    );
                    let got = (got.egress.allows(), got.ingress.allows());
                    if got != want {
                        return Err(format!(
                            "{from} -> {to} {protocol}/{port}: compiled (egress, ingress) = {got:?}, reference {want:?}"
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

/// What two outputs must agree on, without allocation-dependent numbers.
type Shape = (
    BTreeMap<String, (bool, bool, Vec<String>, Vec<String>)>,
    BTreeMap<IpAddr, String>,
    Vec<String>,
    BTreeMap<(IpAddr, IpAddr, u8, u16), (bool, bool)>,
    BTreeMap<String, BTreeSet<IpAddr>>,
);

fn shape(model: &Model, out: &CompiledOutput) -> Shape {
    let endpoints = out
        .endpoints
        .iter()
        .map(|(k, e)| {
            let names =
                |d: &DirectionPolicy| d.isolated_by.iter().map(ToString::to_string).collect();
            (
                k.to_string(),
                (
                    e.ingress.isolated,
                    e.egress.isolated,
                    names(&e.ingress),
                    names(&e.egress),
                ),
            )
        })
        .collect();
    let ips = out
        .endpoint_ips
        .iter()
        .map(|(ip, k)| (*ip, k.to_string()))
        .collect();
    let mut problems: Vec<String> = out.problems.iter().map(ToString::to_string).collect();
    problems.sort();
    let mut verdicts = BTreeMap::new();
    let probes = probe_ips(model);
    for from in &probes {
        for to in &probes {
            for protocol in Protocol::ALL {
                for port in PORTS {
                    let v = verdict(out, *from, *to, protocol, port);
                    verdicts.insert(
                        (*from, *to, protocol.number(), port),
                        (v.egress.allows(), v.ingress.allows()),
                    );
                }
            }
        }
    }
    (
        endpoints,
        ips,
        problems,
        verdicts,
        out.identities.host.clone(),
    )
}

/// Applying `changes` one at a time to a compiler that holds `base` gives what compiling the
/// resulting model from scratch gives; the compiler's model is that model.
pub fn incremental(
    base: &Model,
    changes: &[ModelChange],
    options: &CompileOptions,
) -> Result<(), String> {
    let mut compiler = Compiler::new(options.clone());
    compiler.apply(base.as_changes());
    let mut model = base.clone();
    for c in changes {
        compiler.apply([c.clone()]);
        model.apply(c.clone());
        consistent(compiler.output()).map_err(|e| format!("after {c:?}: {e}"))?;
    }
    if compiler.model() != &model {
        return Err("the compiler's model differs from the model the changes give".into());
    }
    let full = compile(&model, options);
    let (mut a, mut b) = (shape(&model, compiler.output()), shape(&model, &full));
    if !unambiguous(&model) {
        // Which pod owns an IP that two pods claim depends on the order they arrived in (a
        // known, documented ambiguity): compare everything else.
        (a.1, a.3, b.1, b.3) = Default::default();
    }
    if a != b {
        let diff = if a.0 != b.0 {
            format!("endpoints {:?} vs {:?}", a.0, b.0)
        } else if a.1 != b.1 {
            format!("endpoint IPs {:?} vs {:?}", a.1, b.1)
        } else if a.2 != b.2 {
            format!("problems {:?} vs {:?}", a.2, b.2)
        } else if a.4 != b.4 {
            format!("node (HOST) addresses {:?} vs {:?}", a.4, b.4)
        } else {
            let first = a.3.iter().find(|(k, v)| b.3.get(k) != Some(v));
            format!("verdict {first:?} differs")
        };
        return Err(format!("incremental != full recompile: {diff}"));
    }
    Ok(())
}
