//! Seed inputs: a small cluster and policies using every NetworkPolicy feature (built in), the lint
//! fixtures, and every NetworkPolicy object of the conformance corpus when it is there.

use std::path::{Path, PathBuf};

use serde_json::Value;

/// A seed document: its text and whether it is JSON (else YAML).
#[derive(Debug, Clone)]
pub struct Seed {
    pub text: String,
    pub json: bool,
}

/// The cluster every fuzzed input is loaded on top of: namespaces, nodes, dual-stack pods on two
/// nodes with named ports, a hostNetwork pod, a Service.
pub const BASE: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: x, labels: {team: red}}
---
apiVersion: v1
kind: Namespace
metadata: {name: y, labels: {team: blue, env: prod}, annotations: {palisade.dev/audit: "false"}}
---
apiVersion: v1
kind: Node
metadata: {name: node-1}
status: {addresses: [{type: InternalIP, address: 192.168.1.1}, {type: InternalIP, address: "fd00:198::1"}]}
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
metadata: {name: c, namespace: y, labels: {app: c}}
spec: {nodeName: node-2, containers: [{name: c, ports: [{name: http, containerPort: 81}]}]}
status: {podIP: 10.0.1.3}
---
apiVersion: v1
kind: Pod
metadata: {name: h, namespace: y, labels: {app: h}}
spec: {nodeName: node-1, hostNetwork: true, containers: [{name: c}]}
status: {podIP: 192.168.1.1}
---
apiVersion: v1
kind: Service
metadata: {name: s, namespace: x}
spec:
  clusterIP: 10.96.0.10
  clusterIPs: [10.96.0.10, "fd00:96::10"]
  selector: {app: a}
  ports: [{port: 80, targetPort: http, protocol: TCP}, {port: 53, targetPort: 53, protocol: UDP}]
"#;

/// Policies exercising every field and edge the semantics name.
const POLICIES: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: p1, namespace: x}
spec:
  podSelector: {matchLabels: {app: a}}
  policyTypes: [Ingress, Egress]
  ingress:
  - from:
    - podSelector: {matchLabels: {app: b}}
    - namespaceSelector: {matchExpressions: [{key: team, operator: In, values: [blue, green]}]}
      podSelector: {matchExpressions: [{key: app, operator: Exists}]}
    - ipBlock: {cidr: 10.0.0.0/16, except: [10.0.1.0/24, 10.0.0.2/32]}
    ports: [{port: http}, {port: 8000, endPort: 8100, protocol: UDP}, {protocol: SCTP}]
  egress:
  - to: [{namespaceSelector: {}}]
    ports: [{port: 53, protocol: UDP}, {port: dns, protocol: UDP}]
  - to: [{ipBlock: {cidr: "fd00::/64", except: ["fd00::2/128"]}}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all, namespace: y}
spec: {podSelector: {}, ingress: [], egress: []}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-all, namespace: x}
spec:
  podSelector: {matchExpressions: [{key: tier, operator: NotIn, values: [back]}, {key: app, operator: DoesNotExist}]}
  ingress: [{}]
  egress: [{}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: egress-only, namespace: x}
spec:
  podSelector: {matchLabels: {app: b}}
  policyTypes: [Egress]
  egress:
  - to: [{podSelector: {matchLabels: {app: a}}, namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: x}}}]
    ports: [{port: 80}, {port: 1, endPort: 65535, protocol: TCP}]
---
apiVersion: v1
kind: List
items:
- apiVersion: networking.k8s.io/v1
  kind: NetworkPolicy
  metadata: {name: in-list, namespace: y}
  spec:
    podSelector: {matchLabels: {app: c}}
    ingress: [{from: [{ipBlock: {cidr: 0.0.0.0/0, except: [192.168.0.0/16]}}], ports: [{port: 81}]}]
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: ignored, namespace: y}
"#;

/// The built-in seeds: the base cluster, the policies (YAML and JSON, whole and one document
/// at a time), and the files found on disk.
pub fn seeds() -> Vec<Seed> {
    let mut out = vec![
        Seed {
            text: BASE.to_owned(),
            json: false,
        },
        Seed {
            text: POLICIES.to_owned(),
            json: false,
        },
    ];
    for doc in POLICIES.split("\n---\n").chain(BASE.split("\n---\n")) {
        out.push(Seed {
            text: doc.to_owned(),
            json: false,
        });
        if let Ok(v) = serde_yaml::from_str::<Value>(doc) {
            out.push(Seed {
                text: v.to_string(),
                json: true,
            });
        }
    }
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    for file in files_under(&manifest_dir.join("tests/fixtures")) {
        if let Ok(text) = std::fs::read_to_string(&file) {
            let json = file.extension().is_some_and(|e| e == "json");
            out.push(Seed { text, json });
        }
    }
    let corpus = manifest_dir.join("../../shared/conformance/upstream-e2e.json");
    if let Ok(text) = std::fs::read_to_string(corpus) {
        if let Ok(v) = serde_json::from_str::<Value>(&text) {
            let mut found = Vec::new();
            policies_in(&v, &mut found);
            for p in found.into_iter().take(200) {
                let text = fill_templates(&p.to_string());
                out.push(Seed { text, json: true });
            }
        }
    }
    out
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else if p
            .extension()
            .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
        {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// Every object with `kind: NetworkPolicy` anywhere in `v`.
fn policies_in(v: &Value, out: &mut Vec<Value>) {
    match v {
        Value::Object(m) => {
            if m.get("kind").and_then(Value::as_str) == Some("NetworkPolicy") {
                out.push(v.clone());
            }
            m.values().for_each(|x| policies_in(x, out));
        }
        Value::Array(a) => a.iter().for_each(|x| policies_in(x, out)),
        _ => {}
    }
}

/// The corpus's `{{podIP ns/pod}}`-style templates, filled with a fixed address.
fn fill_templates(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        match rest[start..].find("}}") {
            Some(end) => {
                out.push_str("10.0.0.0");
                rest = &rest[start + end + 2..];
            }
            None => {
                rest = &rest[start..];
                break;
            }
        }
    }
    out.push_str(rest);
    out
}
