//! Templates filled in from runtime pod IPs (`{{podIP ns/pod}}/32`, `{{podNet4 ns/pod}}`,
//! `{{cidrZeroes8 ns/pod}}`, `{{cidrZeroes4 ns/pod}}`) and the IP classes A/B/C that
//! `allowed_by_ip_class` cells depend on.
//!
//! All addresses given to one call are of the family being probed, so `/32` becomes `/128`
//! and the zeroed-bits prefixes become /120 and /124 on IPv6.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::Value;

use super::case::{Action, Case, ExpectedCell};

/// The IP of each pod (`ns/name`), all of one family.
pub type PodIps = BTreeMap<String, IpAddr>;

/// A template or an IP-class cell cannot be resolved.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("unterminated template in {0:?}")]
    Unterminated(String),
    #[error("template {0:?} is not `{{{{function ns/pod}}}}`")]
    Malformed(String),
    #[error("unknown template function {0:?} (known: podIP, podNet4, cidrZeroes8, cidrZeroes4)")]
    UnknownFunction(String),
    #[error("template names pod {0}, which has no IP of this family (does it exist?)")]
    UnknownPod(String),
    #[error("cell {from} -> {to}: allowed is null but there is no allowed_by_ip_class")]
    NullWithoutClasses { from: String, to: String },
    #[error("cell {from} -> {to} depends on IP classes, but the case names no single template pod (found {found:?})")]
    NoReference {
        from: String,
        to: String,
        found: Vec<String>,
    },
    #[error("cell {from} -> {to}: allowed_by_ip_class key {key:?} is not `ns/pod=CLASS[,...]`")]
    BadClassKey {
        from: String,
        to: String,
        key: String,
    },
    #[error("cell {from} -> {to}: no allowed_by_ip_class key holds for classes {classes} (keys: {keys:?})")]
    NoClassKey {
        from: String,
        to: String,
        classes: String,
        keys: Vec<String>,
    },
    #[error("cell {from} -> {to}: allowed_by_ip_class keys that hold disagree ({keys:?})")]
    Ambiguous {
        from: String,
        to: String,
        keys: Vec<String>,
    },
}

/// Where an IP falls relative to the template pod's IP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum IpClass {
    /// Inside cidrZeroes4 (same /28, /124).
    A,
    /// Inside cidrZeroes8 (same /24, /120) but not A.
    B,
    /// Outside cidrZeroes8.
    C,
}

impl IpClass {
    pub fn letter(self) -> char {
        match self {
            IpClass::A => 'A',
            IpClass::B => 'B',
            IpClass::C => 'C',
        }
    }
}

fn host_bits(ip: IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

/// `ip` masked to `len` bits, canonical.
fn masked(ip: IpAddr, len: u8) -> IpNet {
    IpNet::new(ip, len)
        .expect("prefix length within the family's width")
        .trunc()
}

/// The class of `ip` relative to `reference`.
pub fn ip_class(ip: IpAddr, reference: IpAddr) -> IpClass {
    let host = host_bits(reference);
    if masked(reference, host - 4).contains(&ip) {
        IpClass::A
    } else if masked(reference, host - 8).contains(&ip) {
        IpClass::B
    } else {
        IpClass::C
    }
}

/// One template's expansion. `suffix` is a `/N` written right after it, if any; it is
/// consumed (podIP turns `/32` into `/128` on IPv6; the network templates carry their own).
fn expand(func: &str, ip: IpAddr, suffix: Option<u8>) -> Result<String, TemplateError> {
    let host = host_bits(ip);
    Ok(match func {
        "podIP" => match suffix {
            // The case is written for IPv4: /32 is the host prefix, /N is N-32 bits off it.
            Some(n) => format!("{ip}/{}", host.saturating_sub(32u8.saturating_sub(n))),
            None => ip.to_string(),
        },
        "podNet4" => masked(ip, 4).to_string(),
        "cidrZeroes8" => masked(ip, host - 8).to_string(),
        "cidrZeroes4" => masked(ip, host - 4).to_string(),
        other => return Err(TemplateError::UnknownFunction(other.to_owned())),
    })
}

/// Splits `{{func ns/pod}}` contents.
fn parse_inner(inner: &str) -> Result<(&str, &str), TemplateError> {
    let mut words = inner.split_whitespace();
    match (words.next(), words.next(), words.next()) {
        (Some(f), Some(p), None) => Ok((f, p)),
        _ => Err(TemplateError::Malformed(inner.to_owned())),
    }
}

/// A `/N` at the start of `rest`: (N, its length in bytes).
fn leading_prefix(rest: &str) -> Option<(u8, usize)> {
    let digits = rest.strip_prefix('/')?;
    let n = digits.bytes().take_while(u8::is_ascii_digit).count();
    let value = digits.get(..n)?.parse().ok()?;
    Some((value, n + 1))
}

/// Fills in every template of one string.
pub fn fill_str(text: &str, ips: &PodIps) -> Result<String, TemplateError> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| TemplateError::Unterminated(text.to_owned()))?;
        let (func, pod) = parse_inner(&after[..end])?;
        let ip = *ips
            .get(pod)
            .ok_or_else(|| TemplateError::UnknownPod(pod.to_owned()))?;
        rest = &after[end + 2..];
        let suffix = leading_prefix(rest);
        out.push_str(&expand(func, ip, suffix.map(|s| s.0))?);
        rest = &rest[suffix.map_or(0, |s| s.1)..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Fills in every string of a JSON value (a policy).
pub fn fill_value(value: &Value, ips: &PodIps) -> Result<Value, TemplateError> {
    Ok(match value {
        Value::String(s) if s.contains("{{") => Value::String(fill_str(s, ips)?),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| fill_value(v, ips))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), fill_value(v, ips)?)))
                .collect::<Result<_, TemplateError>>()?,
        ),
        other => other.clone(),
    })
}

/// Every `(function, pod)` template of a string.
fn templates_of(text: &str, out: &mut Vec<(String, String)>) {
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            return;
        };
        if let Ok((f, p)) = parse_inner(&after[..end]) {
            out.push((f.to_owned(), p.to_owned()));
        }
        rest = &after[end + 2..];
    }
}

/// The pods a case's IP classes are relative to: those named in its `cidrZeroes` templates,
/// or, when it has none, in any template.
pub fn reference_pods(case: &Case) -> Vec<String> {
    let mut all = Vec::new();
    for step in &case.steps {
        if let Action::CreatePolicy { policy, .. }
        | Action::UpdatePolicy { policy, .. }
        | Action::CreateClusterPolicy { policy }
        | Action::UpdateClusterPolicy { policy } = &step.action
        {
            templates_of(&policy.to_string(), &mut all);
        }
    }
    let zeroes: BTreeSet<String> = all
        .iter()
        .filter(|(f, _)| f.starts_with("cidrZeroes"))
        .map(|(_, p)| p.clone())
        .collect();
    if zeroes.is_empty() {
        all.into_iter().map(|(_, p)| p).collect::<BTreeSet<_>>()
    } else {
        zeroes
    }
    .into_iter()
    .collect()
}

/// The expected value of one cell for these pod IPs.
pub fn resolve(
    cell: &ExpectedCell,
    ips: &PodIps,
    references: &[String],
) -> Result<bool, TemplateError> {
    if let Some(allowed) = cell.allowed {
        return Ok(allowed);
    }
    let (from, to) = (cell.from.clone(), cell.to.clone());
    let table =
        cell.allowed_by_ip_class
            .as_ref()
            .ok_or_else(|| TemplateError::NullWithoutClasses {
                from: from.clone(),
                to: to.clone(),
            })?;
    let reference = match references {
        [one] => ips.get(one).copied(),
        _ => None,
    }
    .ok_or_else(|| TemplateError::NoReference {
        from: from.clone(),
        to: to.clone(),
        found: references.to_vec(),
    })?;
    let class_of = |pod: &str| ips.get(pod).map(|ip| ip_class(*ip, reference));
    let mut holding: Vec<(&String, bool)> = Vec::new();
    for (key, value) in table {
        if key_holds(key, &class_of).ok_or_else(|| TemplateError::BadClassKey {
            from: from.clone(),
            to: to.clone(),
            key: key.clone(),
        })? {
            holding.push((key, *value));
        }
    }
    match holding.as_slice() {
        [] => Err(TemplateError::NoClassKey {
            classes: describe_classes(ips, reference),
            keys: table.keys().cloned().collect(),
            from,
            to,
        }),
        [(_, v), rest @ ..] if rest.iter().all(|(_, w)| w == v) => Ok(*v),
        _ => Err(TemplateError::Ambiguous {
            keys: holding.iter().map(|(k, _)| (*k).clone()).collect(),
            from,
            to,
        }),
    }
}

/// Whether every `ns/pod=CLASS` term of a key holds (`CLASS` may list several letters).
/// `None` when the key is malformed or names a pod without an IP.
fn key_holds(key: &str, class_of: &dyn Fn(&str) -> Option<IpClass>) -> Option<bool> {
    let mut holds = true;
    for term in key.split(',') {
        let (pod, classes) = term.trim().split_once('=')?;
        let class = class_of(pod.trim())?;
        holds &= classes.trim().contains(class.letter());
    }
    Some(holds)
}

fn describe_classes(ips: &PodIps, reference: IpAddr) -> String {
    let terms: Vec<String> = ips
        .iter()
        .map(|(pod, ip)| format!("{pod}={}", ip_class(*ip, reference).letter()))
        .collect();
    terms.join(",")
}
