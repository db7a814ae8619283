//! Observability end to end: the real agent on test nodes with its flow log, metrics endpoint and
//! socket. A deny shows up in the flow log with the policy's name, the metrics move, `status`,
//! live `explain` (with the maps agreeing) and live `lint` answer over the socket, and audit mode
//! lets denied traffic through while logging it. Privileged (root): run through `cargo xtask test`.

mod support;

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use palisade_tests::{
    agent::{node_name, pod_manifest, AgentProcess, Manifests},
    CniMode, Family, IpFamily, Pod, Port, ProbeSpec, Proto, TestCluster,
};
use serde_json::{json, Value};
use support::nodes::{agent_bin, apply_with, put_policy};

const FLAGS: [&str; 7] = [
    "--flow-log",
    "{root}/flows.jsonl",
    "--flow-log-allows",
    "--socket",
    "{root}/agent.sock",
    "--metrics-addr",
    "127.0.0.1:9090",
];

struct World {
    cluster: TestCluster,
    manifests: Manifests,
    agents: Vec<AgentProcess>,
    pods: Vec<Pod>,
    tmp: PathBuf,
}

impl Drop for World {
    fn drop(&mut self) {
        self.agents.clear();
        let _ = std::fs::remove_dir_all(&self.tmp);
    }
}

/// Pods x/a, x/b (node 0) and x/c (node 1) serving TCP 80; one agent per node with `FLAGS`.
fn world(label: &str, namespace: Value) -> World {
    palisade_tests::cleanup_stale();
    let tmp = std::env::temp_dir().join(format!("palisade-obs-{label}-{}", std::process::id()));
    let cluster = TestCluster::builder()
        .family(Family::Ipv4)
        .nodes(2)
        .cni(CniMode::Bridge)
        .build()
        .expect("cluster");
    let manifests = Manifests::new(tmp.join("manifests")).expect("manifests");
    manifests.put("ns-x", &namespace).expect("ns");
    let mut pods = Vec::new();
    for (node, name) in [(0, "a"), (0, "b"), (1, "c")] {
        let pod = cluster
            .add_pod(node, "x", name, &[Port::tcp(80).named("http")])
            .expect("pod");
        let m = pod_manifest(&pod, &node_name(node), &json!({"app": name}));
        manifests.put(&format!("pod-x-{name}"), &m).expect("pod");
        pods.push(pod);
    }
    let agents: Vec<AgentProcess> = (0..2)
        .map(|n| {
            let root = tmp.join(format!("node{n}"));
            AgentProcess::start_with(&cluster, n, agent_bin(), &manifests, root, &FLAGS)
                .expect("agent")
        })
        .collect();
    for pod in &pods {
        agents[pod.node()].report_endpoint(pod).expect("report");
    }
    World {
        cluster,
        manifests,
        agents,
        pods,
        tmp,
    }
}

impl World {
    fn apply(&mut self) {
        apply_with(&mut self.manifests, &mut self.agents, &self.pods);
    }

    fn pod(&self, name: &str) -> &Pod {
        self.pods.iter().find(|p| p.name() == name).expect("pod")
    }

    fn connects(&self, from: &str, to: &str) -> bool {
        let ip = self.pod(to).ip(IpFamily::Ipv4).expect("ip");
        let spec = ProbeSpec {
            from: self.pod(from),
            to: (ip, 80).into(),
            proto: Proto::Tcp,
            timeout: Duration::from_millis(400),
        };
        self.cluster.probe_many(&[spec]).expect("probe")[0].allowed
    }

    fn socket(&self, node: usize) -> PathBuf {
        self.agents[node].root().join("agent.sock")
    }

    /// The flow log records of node `node` matching `want`, waiting up to 5 s for one.
    fn flows(&self, node: usize, want: impl Fn(&Value) -> bool) -> Vec<Value> {
        let path = self.agents[node].root().join("flows.jsonl");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let found: Vec<Value> = text
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .filter(|v| want(v))
                .collect();
            if !found.is_empty() || Instant::now() > deadline {
                return found;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Metrics of node `node` once `ready` holds for them (counters are read every second), or
    /// after 5 s.
    fn metrics_when(&self, node: usize, ready: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let m = self.metrics(node);
            if ready(&m) || Instant::now() > deadline {
                return m;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `GET /metrics` from inside node `node`'s namespace.
    fn metrics(&self, node: usize) -> String {
        self.cluster
            .run_in_node(node, || {
                let mut c = TcpStream::connect("127.0.0.1:9090").expect("metrics endpoint");
                c.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
                    .expect("request");
                let mut body = String::new();
                c.read_to_string(&mut body).expect("response");
                body
            })
            .expect("in node")
    }
}

/// The value of the first sample whose line starts with `prefix`.
fn sample(metrics: &str, prefix: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

fn palisade(args: &[&str], socket: &Path) -> (Option<i32>, Value, String) {
    let out = Command::new(agent_bin())
        .args(args)
        .arg("--socket")
        .arg(socket)
        .output()
        .expect("palisade");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    (out.status.code(), json, text)
}

#[test]
#[ignore = "privileged: needs root (cargo xtask test runs it)"]
fn deny_in_flow_log_metrics_status_explain_lint() {
    let mut w = world(
        "deny",
        json!({"apiVersion":"v1","kind":"Namespace","metadata":{"name":"x"}}),
    );
    put_policy(
        &w.manifests,
        "a-from-b",
        json!({"podSelector":{"matchLabels":{"app":"a"}},
        "ingress":[{"from":[{"podSelector":{"matchLabels":{"app":"b"}}}],"ports":[{"port":80}]}]}),
    );
    w.apply();
    let before = w.metrics(0);
    assert!(!w.connects("c", "a"), "c -> a is denied");
    assert!(w.connects("b", "a"), "b -> a is allowed");

    let denies = w.flows(0, |v| v["verdict"] == "deny" && v["src_pod"] == "x/c");
    let d = denies
        .first()
        .unwrap_or_else(|| panic!("no deny logged; log:\n{}", w.agents[0].log()));
    assert_eq!(d["endpoint"], "x/a");
    assert_eq!(d["dst_pod"], "x/a");
    assert_eq!(d["direction"], "ingress");
    assert_eq!(d["dst_port"], 80);
    assert_eq!(d["protocol"], "TCP");
    assert_eq!(d["reason"], "ingress_policy_denied");
    assert_eq!(d["policies"], json!(["x/a-from-b"]));
    assert_eq!(d["node"], "node-0");
    let allows = w.flows(0, |v| {
        v["verdict"] == "allow" && v["src_pod"] == "x/b" && v["dst_pod"] == "x/a"
    });
    assert!(
        allows.iter().any(|a| a["rule"] == "x/a-from-b ingress[0]"),
        "allow with its rule: {allows:?}"
    );

    let dropped = r#"palisade_datapath_packets_total{reason="ingress_policy_denied"}"#;
    let after = w.metrics_when(0, |m| sample(m, dropped) > sample(&before, dropped));
    let deny_metric = r#"palisade_verdicts_total{direction="ingress",verdict="deny",reason="ingress_policy_denied",namespace="x"}"#;
    assert!(sample(&after, deny_metric) >= 1.0, "{after}");
    let dropped = r#"palisade_datapath_packets_total{reason="ingress_policy_denied"}"#;
    assert!(
        sample(&after, dropped) > sample(&before, dropped),
        "{after}"
    );
    assert!(sample(&after, "palisade_sync_latency_seconds_count") >= 1.0);
    assert!(sample(&after, r#"palisade_endpoints{state="attached"}"#) >= 2.0);

    let socket = w.socket(0);
    let (code, st, _) = palisade(&["status", "--json"], &socket);
    assert_eq!(code, Some(0));
    let eps = st["dataplane"]["endpoints"].as_array().expect("endpoints");
    assert_eq!(eps.len(), 2, "{st}");
    assert!(
        eps.iter()
            .all(|e| e["attach"] == support::expected_attach() && e["state"] == "attached"),
        "{st}"
    );
    assert!(
        st["dataplane"]["maps"]
            .as_array()
            .is_some_and(|m| m.len() == 5),
        "{st}"
    );
    let (_, _, text) = palisade(&["status"], &socket);
    assert!(
        text.contains("endpoints (2):") && text.contains("isolated by x/a-from-b"),
        "{text}"
    );

    let args = [
        "explain", "--from", "x/c", "--to", "x/a", "--port", "80", "--json",
    ];
    let (code, ex, _) = palisade(&args, &socket);
    assert_eq!(code, Some(0), "the maps agree: {ex}");
    assert_eq!(ex["explanations"][0]["allowed"], false);
    assert_eq!(ex["dataplane"]["agrees"], true);
    let side = &ex["dataplane"]["checks"][0]["sides"][0];
    assert_eq!(side["endpoint"], "x/a");
    assert_eq!(side["maps"]["decision"], "denied");

    let (code, lint, _) = palisade(&["lint", "--json"], &socket);
    assert_eq!(code, Some(1), "x is not isolated for egress: {lint}");
    let codes: Vec<&str> = lint["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter_map(|f| f["code"].as_str())
        .collect();
    assert!(codes.contains(&"unisolated-egress"), "{lint}");
}

#[test]
#[ignore = "privileged: needs root (cargo xtask test runs it)"]
fn audit_namespace_passes_and_logs_denies() {
    let audited = json!({"apiVersion":"v1","kind":"Namespace",
        "metadata":{"name":"x","annotations":{"palisade.dev/audit":"true"}}});
    let mut w = world("audit", audited);
    put_policy(
        &w.manifests,
        "deny-a",
        json!({"podSelector":{"matchLabels":{"app":"a"}},"policyTypes":["Ingress"]}),
    );
    w.apply();
    assert!(w.connects("c", "a"), "audit mode does not enforce");
    let audits = w.flows(0, |v| v["verdict"] == "audit" && v["src_pod"] == "x/c");
    let a = audits
        .first()
        .unwrap_or_else(|| panic!("no audit record; log:\n{}", w.agents[0].log()));
    println!("audit record: {a}");
    assert_eq!(a["reason"], "ingress_policy_denied");
    assert_eq!(a["policies"], json!(["x/deny-a"]));
    let audited = r#"palisade_datapath_audited_packets_total{reason="ingress_policy_denied"}"#;
    let m = w.metrics_when(0, |m| sample(m, audited) >= 1.0);
    assert!(
        sample(
            &m,
            r#"palisade_datapath_audited_packets_total{reason="ingress_policy_denied"}"#
        ) >= 1.0,
        "{m}"
    );
    assert!(
        sample(
            &m,
            r#"palisade_verdicts_total{direction="ingress",verdict="audit",reason="ingress_policy_denied",namespace="x"}"#
        ) >= 1.0,
        "{m}"
    );
    // Without the annotation the same policy is enforced.
    w.manifests
        .put(
            "ns-x",
            &json!({"apiVersion":"v1","kind":"Namespace","metadata":{"name":"x"}}),
        )
        .expect("ns");
    w.apply();
    assert!(!w.connects("c", "a"), "enforced again");
    assert!(!w
        .flows(0, |v| v["verdict"] == "deny" && v["src_pod"] == "x/c")
        .is_empty());
}
