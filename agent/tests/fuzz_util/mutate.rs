//! Mutations: byte-level (flips, inserts of YAML/JSON tokens and field names, deletions,
//! duplications, splices) and structural (any node of a parsed document replaced by a hostile
//! value, keys dropped or renamed, arrays grown, subtrees moved between documents).

use serde_json::{Map, Number, Value};

use super::rng::Rng;

/// Tokens that steer a byte mutation towards the parsers' interesting paths.
const TOKENS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ":",
    ": ",
    ",",
    "-",
    "- ",
    "---\n",
    "...\n",
    "\n",
    "  ",
    "\t",
    "\"",
    "'",
    "&a ",
    "*a",
    "<<: *a",
    "!!binary ",
    "!!str ",
    "!!int ",
    "!!map ",
    "!!seq ",
    "? ",
    "|",
    ">",
    "#",
    "%YAML 1.1\n",
    "null",
    "~",
    "true",
    "no",
    "0",
    "-1",
    "65535",
    "65536",
    "0x50",
    "0o17",
    "1e999",
    "-0",
    ".nan",
    ".inf",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775809",
    "18446744073709551616",
    "3.5",
    "\\u0000",
    "\u{feff}",
    "\u{202e}",
    "kind",
    "apiVersion",
    "metadata",
    "name",
    "namespace",
    "labels",
    "spec",
    "podSelector",
    "namespaceSelector",
    "matchLabels",
    "matchExpressions",
    "key",
    "operator",
    "values",
    "In",
    "NotIn",
    "Exists",
    "DoesNotExist",
    "ingress",
    "egress",
    "from",
    "to",
    "ports",
    "port",
    "endPort",
    "protocol",
    "TCP",
    "UDP",
    "SCTP",
    "ICMP",
    "ipBlock",
    "cidr",
    "except",
    "policyTypes",
    "Ingress",
    "Egress",
    "List",
    "items",
    "NetworkPolicy",
    "Pod",
    "Namespace",
    "Service",
    "Node",
    "networking.k8s.io/v1",
    "status",
    "podIP",
    "podIPs",
    "ip",
    "hostNetwork",
    "nodeName",
    "containers",
    "containerPort",
    "clusterIP",
    "clusterIPs",
    "targetPort",
    "selector",
    "addresses",
    "address",
    "0.0.0.0/0",
    "::/0",
    "10.0.0.1/32",
    "10.0.0.0/33",
    "fd00::/129",
    "::ffff:10.0.0.1/128",
    "10.0.0.1",
    "fd00::1",
    "1.2.3.4/0",
    "256.0.0.1",
    "kubernetes.io/metadata.name",
    "palisade.dev/audit",
];

/// Applies 1 to 8 byte-level mutations to `text`.
pub fn bytes(rng: &mut Rng, text: &str, other: &str) -> String {
    let mut b = text.as_bytes().to_vec();
    for _ in 0..1 + rng.below(8) {
        let len = b.len();
        let at = rng.below(len + 1);
        match rng.below(9) {
            0 if len > 0 => {
                let i = rng.below(len);
                b[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                b[i] = rng.next_u64() as u8;
            }
            2 | 3 => {
                let t = rng.pick(TOKENS).as_bytes();
                b.splice(at..at, t.iter().copied());
            }
            4 if len > 0 => {
                let end = (at + 1 + rng.below(32)).min(len);
                b.drain(at.min(end)..end);
            }
            5 if len > 0 => {
                let start = rng.below(len);
                let end = (start + 1 + rng.below(64)).min(len);
                let chunk = b[start..end].to_vec();
                b.splice(at..at, chunk);
            }
            6 => {
                // Splice in part of another seed.
                let o = other.as_bytes();
                if !o.is_empty() {
                    let start = rng.below(o.len());
                    let end = (start + 1 + rng.below(200)).min(o.len());
                    b.splice(at..at, o[start..end].iter().copied());
                }
            }
            7 => {
                // Re-indent a line (YAML structure changes).
                let spaces = vec![b' '; 1 + rng.below(4)];
                let line = b[..at]
                    .iter()
                    .rposition(|c| *c == b'\n')
                    .map_or(0, |p| p + 1);
                b.splice(line..line, spaces);
            }
            _ => {
                let t = rng.pick(TOKENS).as_bytes();
                let end = (at + t.len()).min(len);
                b.splice(at..end, t.iter().copied());
            }
        }
    }
    // Parsers take &str: keep invalid UTF-8 as replacement characters.
    String::from_utf8_lossy(&b).into_owned()
}

/// A value chosen to break assumptions: out-of-range and negative numbers, floats, wrong types,
/// huge or odd strings, deep nesting.
pub fn hostile(rng: &mut Rng, depth: usize) -> Value {
    match rng.below(16) {
        0 => Value::Null,
        1 => Value::Bool(rng.chance(1, 2)),
        2 => Value::from(*rng.pick(&[
            0i64,
            -1,
            1,
            65535,
            65536,
            -65536,
            i64::MAX,
            i64::MIN,
            80,
            4294967296,
        ])),
        3 => Value::from(u64::MAX),
        4 => Number::from_f64(*rng.pick(&[0.5, -0.0, 1e300, 80.0, -1e-300]))
            .map_or(Value::Null, Value::Number),
        5 => Value::from(*rng.pick(TOKENS)),
        6 => Value::from("x".repeat(rng.below(5000))),
        7 => Value::from(*rng.pick(&[
            "",
            " ",
            "80",
            "-1",
            "http",
            "10.0.0.0/8",
            "::/0",
            "0.0.0.0/0",
            "10.0.0.1/32",
            "a/b/c",
            "1.2.3.4/-1",
            "fd00::1%eth0/64",
            "10.0.0.1/08",
            "TCP",
            "tcp",
            "Sctp",
            "In",
            "in",
            "Exists",
            "\u{0}",
            "ñ",
            "🦀",
            "Ingress",
            "Egress",
            "ingress",
        ])),
        8 if depth < 6 => {
            Value::Array((0..rng.below(4)).map(|_| hostile(rng, depth + 1)).collect())
        }
        9 if depth < 6 => {
            let mut m = Map::new();
            for _ in 0..rng.below(4) {
                let k = (*rng.pick(TOKENS)).to_owned();
                m.insert(k, hostile(rng, depth + 1));
            }
            Value::Object(m)
        }
        10 => nested(rng.below(200)),
        11 => Value::Array(vec![Value::from(80); rng.below(2000)]),
        12 => Value::from(format!(
            "10.{}.{}.0/{}",
            rng.below(300),
            rng.below(256),
            rng.below(40)
        )),
        13 => Value::from(format!("fd00:{:x}::/{}", rng.below(70000), rng.below(140))),
        14 => Value::from(i64::try_from(rng.below(70000)).unwrap_or(0) - 2),
        _ => Value::from(format!("p{}", rng.below(5))),
    }
}

fn nested(depth: usize) -> Value {
    (0..depth).fold(Value::Null, |v, _| Value::Array(vec![v]))
}

/// Applies 1 to 4 structural mutations to a parsed document.
pub fn structure(rng: &mut Rng, doc: &mut Value, donor: &Value) {
    for _ in 0..1 + rng.below(4) {
        let all = paths(doc);
        let path = rng.pick(&all).clone();
        let Some(node) = pointer_mut(doc, &path) else {
            continue;
        };
        match rng.below(7) {
            0 | 1 => *node = hostile(rng, 0),
            2 => {
                if let Value::Object(m) = node {
                    if !m.is_empty() {
                        let k = m
                            .keys()
                            .nth(rng.below(m.len()))
                            .cloned()
                            .unwrap_or_default();
                        if rng.chance(1, 2) {
                            m.remove(&k);
                        } else if let Some(v) = m.remove(&k) {
                            m.insert((*rng.pick(TOKENS)).to_owned(), v);
                        }
                    }
                }
            }
            3 => {
                if let Value::Array(a) = node {
                    if !a.is_empty() {
                        let i = rng.below(a.len());
                        let dup = a[i].clone();
                        for _ in 0..1 + rng.below(3) {
                            a.push(dup.clone());
                        }
                    }
                }
            }
            4 => {
                // Graft a subtree of the donor document.
                let donor_paths = paths(donor);
                let dp = rng.pick(&donor_paths);
                if let Some(v) = donor.pointer(dp) {
                    *node = v.clone();
                }
            }
            5 => {
                if let Value::Object(m) = node {
                    m.insert((*rng.pick(TOKENS)).to_owned(), hostile(rng, 0));
                }
            }
            _ => {
                // Wrap in an array or an object: a type confusion one level up.
                let old = node.take();
                *node = if rng.chance(1, 2) {
                    Value::Array(vec![old])
                } else {
                    let mut m = Map::new();
                    m.insert((*rng.pick(TOKENS)).to_owned(), old);
                    Value::Object(m)
                };
            }
        }
    }
}

/// JSON pointers of every node (the root is "").
fn paths(v: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk(v, String::new(), &mut out);
    out
}

fn walk(v: &Value, here: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                let k = k.replace('~', "~0").replace('/', "~1");
                walk(child, format!("{here}/{k}"), out);
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                walk(child, format!("{here}/{i}"), out);
            }
        }
        _ => {}
    }
    out.push(here);
}

fn pointer_mut<'a>(v: &'a mut Value, path: &str) -> Option<&'a mut Value> {
    v.pointer_mut(path)
}
