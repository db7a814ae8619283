//! `cargo xtask demo`: the classic three-tier exercise, enforced for real.
//!
//! Two test nodes (network namespaces), pods made by the reference CNI plugins, a ClusterIP
//! Service per pod (iptables DNAT), and one Palisade agent per node reading a manifest directory.
//! Policies are applied step by step; after each step every pair is probed with a real TCP
//! connection through the Service, and every cell that changed is explained by `palisade explain`.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use palisade_tests::{
    agent::{node_name, pod_manifest, AgentProcess, Manifests},
    CniMode, Family, IpFamily, Pod, Port, ProbeSpec, Proto, TestCluster,
};
use serde_json::{json, Value};

const NS: &str = "shop";
/// (name, node, port) of the three tiers and the outside client.
const TIERS: [(&str, usize, u16); 4] = [
    ("frontend", 0, 80),
    ("backend", 1, 8080),
    ("database", 0, 5432),
    ("external-client", 1, 80),
];

type Demo = Result<(), Box<dyn std::error::Error>>;

/// Each agent writes a flow log, serves metrics in its node's namespace and answers on a socket.
const AGENT_FLAGS: [&str; 6] = [
    "--flow-log",
    "{root}/flows.jsonl",
    "--socket",
    "{root}/agent.sock",
    "--metrics-addr",
    "127.0.0.1:9090",
];

fn main() -> Demo {
    // SAFETY: no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(
            "the demo needs root: it creates network namespaces and loads eBPF programs".into(),
        );
    }
    let started = Instant::now();
    let agent_bin = sibling("palisade")?;
    let tmp = TempDir(std::env::temp_dir().join(format!("palisade-demo-{}", std::process::id())));
    palisade_tests::cleanup_stale();
    println!(
        "Setting up two test nodes (network namespaces) and pods with the reference CNI plugins..."
    );
    let cluster = TestCluster::builder()
        .family(Family::Ipv4)
        .nodes(2)
        .cni(CniMode::Bridge)
        .build()?;
    let mut world = World::new(&cluster, &tmp.0, &agent_bin)?;
    world.run_steps()?;
    println!(
        "\nDone in {:.1} s. Cleaning up namespaces, agents and bpffs mounts.",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// A binary next to this one (target/<profile>/).
fn sibling(name: &str) -> Result<PathBuf, Box<dyn std::error::Error>> {
    let exe = std::env::current_exe()?;
    let path = exe.with_file_name(name);
    if !path.is_file() {
        return Err(format!(
            "{} not found: build it first (cargo xtask demo does)",
            path.display()
        )
        .into());
    }
    Ok(path)
}

struct TempDir(PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct World<'c> {
    cluster: &'c TestCluster,
    manifests: Manifests,
    agents: Vec<AgentProcess>,
    pods: Vec<Pod>,
    agent_bin: PathBuf,
    previous: Vec<Vec<bool>>,
}

impl<'c> World<'c> {
    fn new(
        cluster: &'c TestCluster,
        tmp: &Path,
        agent_bin: &Path,
    ) -> Result<Self, Box<dyn std::error::Error>> {
        let manifests = Manifests::new(tmp.join("manifests"))?;
        for ns in [NS, "kube-system"] {
            manifests.put(
                &format!("ns-{ns}"),
                &json!({"apiVersion":"v1","kind":"Namespace","metadata":{"name":ns}}),
            )?;
        }
        let mut pods = Vec::new();
        for (name, node, port) in TIERS {
            pods.push(add_pod(
                cluster,
                &manifests,
                node,
                NS,
                name,
                &[Port::tcp(port)],
                json!({"tier": name}),
            )?);
        }
        let dns = [Port::udp(53).named("dns"), Port::tcp(53).named("dns-tcp")];
        pods.push(add_pod(
            cluster,
            &manifests,
            0,
            "kube-system",
            "coredns",
            &dns,
            json!({"k8s-app": "kube-dns"}),
        )?);
        let agents = (0..2)
            .map(|n| {
                AgentProcess::start_with(
                    cluster,
                    n,
                    agent_bin,
                    &manifests,
                    tmp.join(format!("node-{n}")),
                    &AGENT_FLAGS,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        for pod in &pods {
            agents[pod.node()].report_endpoint(pod)?;
        }
        Ok(Self {
            cluster,
            manifests,
            agents,
            pods,
            agent_bin: agent_bin.to_owned(),
            previous: Vec::new(),
        })
    }

    fn run_steps(&mut self) -> Demo {
        self.step("No policies: every pod reaches every other", &[])?;
        self.step(
            "Default deny: isolate ingress and egress of every pod in namespace shop",
            &[(
                "default-deny",
                json!({"podSelector":{},"policyTypes":["Ingress","Egress"]}),
            )],
        )?;
        self.step(
            "Allow DNS: every pod in shop may query kube-system/coredns on port 53",
            &[("allow-dns", json!({"podSelector":{},"policyTypes":["Egress"],"egress":[{
                "to":[{"namespaceSelector":{"matchLabels":{"kubernetes.io/metadata.name":"kube-system"}},
                       "podSelector":{"matchLabels":{"k8s-app":"kube-dns"}}}],
                "ports":[{"port":53,"protocol":"UDP"},{"port":53,"protocol":"TCP"}]}]}))],
        )?;
        self.dns_check()?;
        self.step(
            "Allow ingress to frontend on port 80 from external-client (server side only)",
            &[("frontend-ingress", json!({"podSelector":{"matchLabels":{"tier":"frontend"}},"ingress":[{
                "from":[{"podSelector":{"matchLabels":{"tier":"external-client"}}}],"ports":[{"port":80}]}]}))],
        )?;
        println!("  external-client -> frontend is STILL closed: the client's egress is isolated too (the classic mistake).");
        self.explain_pair("external-client", "frontend", 80)?;
        self.step(
            "Allow external-client's egress to frontend (the client side)",
            &[("external-client-egress", json!({"podSelector":{"matchLabels":{"tier":"external-client"}},
                "policyTypes":["Egress"],"egress":[{"to":[{"podSelector":{"matchLabels":{"tier":"frontend"}}}],"ports":[{"port":80}]}]}))],
        )?;
        self.step("Allow frontend -> backend on 8080 (backend ingress and frontend egress)", &[
            ("backend-ingress", json!({"podSelector":{"matchLabels":{"tier":"backend"}},"ingress":[{
                "from":[{"podSelector":{"matchLabels":{"tier":"frontend"}}}],"ports":[{"port":8080}]}]})),
            ("frontend-egress", json!({"podSelector":{"matchLabels":{"tier":"frontend"}},"policyTypes":["Egress"],
                "egress":[{"to":[{"podSelector":{"matchLabels":{"tier":"backend"}}}],"ports":[{"port":8080}]}]})),
        ])?;
        self.step("Allow backend -> database on 5432 (database ingress and backend egress)", &[
            ("database-ingress", json!({"podSelector":{"matchLabels":{"tier":"database"}},"ingress":[{
                "from":[{"podSelector":{"matchLabels":{"tier":"backend"}}}],"ports":[{"port":5432}]}]})),
            ("backend-egress", json!({"podSelector":{"matchLabels":{"tier":"backend"}},"policyTypes":["Egress"],
                "egress":[{"to":[{"podSelector":{"matchLabels":{"tier":"database"}}}],"ports":[{"port":5432}]}]})),
        ])?;
        self.verify_final()?;
        self.observe()
    }

    /// What the agents saw: flow log lines, `palisade status`, live `explain`, metrics.
    fn observe(&self) -> Demo {
        println!("\n== Observability: what node-0's agent saw ==");
        std::thread::sleep(Duration::from_millis(1200)); // counters are read every second
        let root = self.agents[0].root();
        let flows = std::fs::read_to_string(root.join("flows.jsonl")).unwrap_or_default();
        let denies: Vec<&str> = flows
            .lines()
            .filter(|l| l.contains(r#""verdict":"deny""#))
            .collect();
        println!(
            "  flow log: {} records, {} denies; the last three:",
            flows.lines().count(),
            denies.len()
        );
        for line in denies.iter().rev().take(3).rev() {
            println!("    {line}");
        }
        let socket = root.join("agent.sock");
        for args in [
            vec!["status"],
            vec![
                "explain",
                "--from",
                "shop/backend",
                "--to",
                "shop/frontend",
                "--port",
                "80",
            ],
        ] {
            println!(
                "\n  $ palisade {} --socket {}",
                args.join(" "),
                socket.display()
            );
            let out = Command::new(&self.agent_bin)
                .args(&args)
                .arg("--socket")
                .arg(&socket)
                .output()?;
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                println!("    {line}");
            }
        }
        let metrics = self
            .cluster
            .run_in_node(0, || -> std::io::Result<String> {
                use std::io::{Read as _, Write as _};
                let mut c = std::net::TcpStream::connect("127.0.0.1:9090")?;
                c.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")?;
                let mut body = String::new();
                c.read_to_string(&mut body)?;
                Ok(body)
            })??;
        println!("\n  $ curl http://127.0.0.1:9090/metrics   (in node-0's namespace; excerpt)");
        let keep = [
            "palisade_verdicts_total",
            "palisade_datapath_packets_total{reason=\"egress",
            "palisade_datapath_packets_total{reason=\"ingress",
            "palisade_map_entries",
            "palisade_endpoints{",
            "palisade_sync_latency_seconds_count",
            "palisade_flow_log_written_total",
        ];
        for line in metrics
            .lines()
            .filter(|l| keep.iter().any(|k| l.starts_with(k)))
        {
            println!("    {line}");
        }
        Ok(())
    }

    /// Applies `policies`, waits for both agents, probes and prints the matrix and its changes.
    fn step(&mut self, title: &str, policies: &[(&str, Value)]) -> Demo {
        println!("\n== {title} ==");
        for (name, spec) in policies {
            self.manifests.put(
                &format!("np-{name}"),
                &json!({"apiVersion":"networking.k8s.io/v1",
                "kind":"NetworkPolicy","metadata":{"namespace":NS,"name":name},"spec":spec}),
            )?;
            println!("  applied NetworkPolicy {NS}/{name}");
        }
        let t = Instant::now();
        let rev = self.manifests.commit()?;
        for (n, agent) in self.agents.iter_mut().enumerate() {
            let local: Vec<String> = self
                .pods
                .iter()
                .filter(|p| p.node() == n)
                .map(Pod::key)
                .collect();
            agent.wait_applied(rev, &local, Duration::from_secs(30))?;
        }
        println!(
            "  both agents enforced revision {rev} after {} ms",
            t.elapsed().as_millis()
        );
        let matrix = self.probe_matrix()?;
        print_matrix(&matrix);
        self.print_changes(&matrix)?;
        self.previous = matrix;
        Ok(())
    }

    fn tier_pods(&self) -> Vec<&Pod> {
        self.pods.iter().filter(|p| p.namespace() == NS).collect()
    }

    /// Real TCP connections from every tier pod to every other's Service, all at once.
    fn probe_matrix(&self) -> Result<Vec<Vec<bool>>, Box<dyn std::error::Error>> {
        let pods = self.tier_pods();
        let mut specs = Vec::new();
        for from in &pods {
            for (to, (_, _, port)) in pods.iter().zip(TIERS) {
                let svc = self
                    .cluster
                    .service(NS, &format!("s-{NS}-{}", to.name()))
                    .ok_or("no service")?;
                let ip = svc.cluster_ip(IpFamily::Ipv4).ok_or("no ClusterIP")?;
                specs.push(ProbeSpec {
                    from,
                    to: (ip, port).into(),
                    proto: Proto::Tcp,
                    timeout: Duration::from_millis(500),
                });
            }
        }
        let outcomes = self.cluster.probe_many(&specs)?;
        Ok(outcomes
            .chunks(pods.len())
            .map(|row| row.iter().map(|o| o.allowed).collect())
            .collect())
    }

    fn print_changes(&self, matrix: &[Vec<bool>]) -> Demo {
        if self.previous.is_empty() {
            return Ok(());
        }
        for (i, row) in matrix.iter().enumerate() {
            for (j, cell) in row.iter().enumerate() {
                if self.previous[i][j] != *cell {
                    let state = if *cell { "opened" } else { "closed" };
                    println!("  {} -> {}: {state}", TIERS[i].0, TIERS[j].0);
                    self.explain_pair(TIERS[i].0, TIERS[j].0, TIERS[j].2)?;
                }
            }
        }
        Ok(())
    }

    /// Prints `palisade explain`'s reasons for one connection.
    fn explain_pair(&self, from: &str, to: &str, port: u16) -> Demo {
        let out = Command::new(&self.agent_bin)
            .args(["explain", "--manifests"])
            .arg(self.manifests.dir())
            .args([
                "--from",
                &format!("{NS}/{from}"),
                "--to",
                &format!("{NS}/{to}"),
                "--port",
                &port.to_string(),
                "--json",
            ])
            .output()?;
        let e: Value = serde_json::from_slice(&out.stdout)?;
        for side in ["egress", "ingress"] {
            let s = &e[side];
            let who = s["endpoint"].as_str().unwrap_or("?");
            let reason = match (s["decision"].as_str(), s["rule"].as_str()) {
                (Some("allowed"), Some(rule)) => format!("allowed by {rule}"),
                (Some("denied"), _) => format!(
                    "denied: isolated by {} and no rule matches",
                    list(&s["isolated_by"])
                ),
                (Some(other), _) => other.replace('_', " "),
                (None, _) => "?".into(),
            };
            println!("      {side} of {who}: {reason}");
        }
        Ok(())
    }

    fn dns_check(&self) -> Demo {
        let dns = self
            .pods
            .iter()
            .find(|p| p.name() == "coredns")
            .ok_or("no dns pod")?;
        let ip = dns.ip(IpFamily::Ipv4).ok_or("no dns ip")?;
        let specs: Vec<ProbeSpec> = self
            .tier_pods()
            .into_iter()
            .map(|from| ProbeSpec {
                from,
                to: (ip, 53).into(),
                proto: Proto::Udp,
                timeout: Duration::from_millis(500),
            })
            .collect();
        let ok = self.cluster.probe_many(&specs)?.iter().all(|o| o.allowed);
        println!(
            "  DNS (UDP 53 to kube-system/coredns) from every pod in shop: {}",
            if ok { "answered" } else { "NOT answered" }
        );
        Ok(())
    }

    fn verify_final(&self) -> Demo {
        let open: Vec<(usize, usize)> = vec![(3, 0), (0, 1), (1, 2)];
        for (i, row) in self.previous.iter().enumerate() {
            for (j, cell) in row.iter().enumerate() {
                if *cell != open.contains(&(i, j)) {
                    return Err(format!(
                        "final matrix is wrong at {} -> {}",
                        TIERS[i].0, TIERS[j].0
                    )
                    .into());
                }
            }
        }
        println!("\nFinal: exactly external-client -> frontend, frontend -> backend and backend -> database are open.");
        Ok(())
    }
}

fn list(v: &Value) -> String {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

fn print_matrix(m: &[Vec<bool>]) {
    let width = TIERS.iter().map(|t| t.0.len()).max().unwrap_or(8) + 2;
    print!("  {:width$}", "from \\ to");
    for t in TIERS {
        print!("{:>width$}", t.0);
    }
    println!();
    for (i, row) in m.iter().enumerate() {
        print!("  {:width$}", TIERS[i].0);
        for cell in row {
            print!("{:>width$}", if *cell { "." } else { "X" });
        }
        println!();
    }
}

fn add_pod(
    cluster: &TestCluster,
    manifests: &Manifests,
    node: usize,
    ns: &str,
    name: &str,
    ports: &[Port],
    labels: Value,
) -> Result<Pod, Box<dyn std::error::Error>> {
    let pod = cluster.add_pod(node, ns, name, ports)?;
    manifests.put(
        &format!("pod-{ns}-{name}"),
        &pod_manifest(&pod, &node_name(node), &labels),
    )?;
    let svc_ports: Vec<(u16, Proto, u16)> =
        ports.iter().map(|p| (p.port, p.proto, p.port)).collect();
    let svc = cluster.add_service(ns, &format!("s-{ns}-{name}"), &svc_ports, &[&pod])?;
    let ips: Vec<String> = svc.cluster_ips.iter().map(ToString::to_string).collect();
    let mports: Vec<Value> = ports
        .iter()
        .map(|p| json!({"port": p.port, "targetPort": p.port, "protocol": p.proto.as_str().to_ascii_uppercase()}))
        .collect();
    manifests.put(
        &format!("svc-{ns}-{name}"),
        &json!({"apiVersion":"v1","kind":"Service",
        "metadata":{"namespace":ns,"name":format!("s-{ns}-{name}")},
        "spec":{"clusterIP":ips[0],"clusterIPs":ips,"selector":labels,"ports":mports}}),
    )?;
    Ok(pod)
}
