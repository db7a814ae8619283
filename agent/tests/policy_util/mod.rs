//! Helpers for table-driven policy tests: a small base cluster written as manifests, and a check
//! that runs a connection through the compiled lookup and the reference evaluator.
#![allow(dead_code, reason = "each test binary uses a different part")]

use std::net::IpAddr;
use std::path::Path;

use palisade::compiler::{compile, verdict, CompileOptions, CompiledOutput};
use palisade::model::{Model, ObjectKey, Protocol};
use palisade::reference::{self, ReferenceOptions};
use palisade::source::load_str;

/// Namespaces x (team=red) and y (team=blue, no name label written: the store adds it); pods
/// x/a, x/b, y/a, y/c on node-1 except y/c on node-2; a hostNetwork pod kube-system/h on node-1.
pub const BASE: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: x, labels: {team: red, kubernetes.io/metadata.name: x}}
---
apiVersion: v1
kind: Namespace
metadata: {name: y, labels: {team: blue}}
---
apiVersion: v1
kind: Namespace
metadata: {name: kube-system}
---
apiVersion: v1
kind: Node
metadata: {name: node-1}
status: {addresses: [{type: InternalIP, address: 192.168.1.1}]}
---
apiVersion: v1
kind: Node
metadata: {name: node-2}
status: {addresses: [{type: InternalIP, address: 192.168.1.2}]}
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: x, labels: {app: a, tier: front}}
spec:
  nodeName: node-1
  containers: [{name: c, ports: [{name: http, containerPort: 80}, {name: dns, containerPort: 53, protocol: UDP}]}]
status: {podIP: 10.0.0.1, podIPs: [{ip: 10.0.0.1}, {ip: "fd00::1"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: x, labels: {app: b}}
spec:
  nodeName: node-1
  containers: [{name: c, ports: [{name: http, containerPort: 8080}, {name: assoc, containerPort: 80, protocol: SCTP}]}]
status: {podIP: 10.0.0.2, podIPs: [{ip: 10.0.0.2}, {ip: "fd00::2"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: y, labels: {app: a}}
spec:
  nodeName: node-1
  containers: [{name: c, ports: [{name: http, containerPort: 80}]}]
status: {podIP: 10.0.1.1}
---
apiVersion: v1
kind: Pod
metadata: {name: c, namespace: y, labels: {app: c, tier: back}}
spec: {nodeName: node-2, containers: [{name: c}]}
status: {podIP: 10.0.1.3}
---
apiVersion: v1
kind: Pod
metadata: {name: h, namespace: kube-system, labels: {app: h}}
spec: {nodeName: node-1, hostNetwork: true, containers: [{name: c}]}
status: {podIP: 192.168.1.1}
"#;

/// The base cluster plus `policies` (YAML documents).
pub fn cluster(policies: &str) -> Model {
    let text = format!("{BASE}\n---\n{policies}");
    let (changes, notes) = load_str(&text, Path::new("test.yaml"));
    assert!(notes.is_empty(), "manifest notes: {notes:?}");
    let mut model = Model::new();
    for c in changes {
        model.apply(c);
    }
    model
}

/// An address: `ns/pod` (first IP, or the IPv6 one with a `6` suffix: `x/a6`) or an IP.
pub fn addr(model: &Model, text: &str) -> IpAddr {
    if let Ok(ip) = text.parse() {
        return ip;
    }
    let (text, v6) = match text.strip_suffix('6') {
        Some(t) => (t, true),
        None => (text, false),
    };
    let key = ObjectKey::parse(text).unwrap_or_else(|| panic!("bad address {text}"));
    let pod = &model.pods[&key];
    *pod.ips
        .iter()
        .find(|ip| ip.is_ipv6() == v6)
        .unwrap_or_else(|| panic!("{text} has no such IP"))
}

/// Whether `from` may connect to `to`; asserts that the compiled lookup and the reference agree.
pub fn allowed(
    model: &Model,
    out: &CompiledOutput,
    from: &str,
    to: &str,
    protocol: Protocol,
    port: u16,
) -> bool {
    let (f, t) = (addr(model, from), addr(model, to));
    let got = verdict(out, f, t, protocol, port);
    let want = reference::evaluate(model, ReferenceOptions::default(), f, t, protocol, port);
    assert_eq!(
        got.allowed,
        want.allowed(),
        "{from} -> {to} {protocol}/{port}: compiled {got:?}, reference {want:?}"
    );
    got.allowed
}

/// One expectation: from, to, protocol, port, allowed.
pub type Case<'a> = (&'a str, &'a str, Protocol, u16, bool);

/// Compiles the base cluster with `policies` and checks every case.
pub fn check(policies: &str, cases: &[Case<'_>]) -> CompiledOutput {
    let model = cluster(policies);
    let out = compile(&model, &CompileOptions::default());
    let mut bad = Vec::new();
    for (from, to, protocol, port, want) in cases {
        if allowed(&model, &out, from, to, *protocol, *port) != *want {
            bad.push(format!("{from} -> {to} {protocol}/{port}: want {want}"));
        }
    }
    assert!(bad.is_empty(), "mismatches:\n{}", bad.join("\n"));
    out
}

pub const TCP: Protocol = Protocol::Tcp;
pub const UDP: Protocol = Protocol::Udp;
pub const SCTP: Protocol = Protocol::Sctp;
