//! End to end through a real API server: pods wired by the reference CNI plugins on two test
//! nodes, their Pod objects (with the status a kubelet would write) and Services in the API,
//! one agent per node on `--source kube`. The agents find the pods' veths themselves
//! (start-up discovery: nothing reports them), and enforce policies created, changed and
//! deleted through the API, probed with real TCP and UDP, directly and through ClusterIPs. The
//! API server stops for a while: the agents keep enforcing (one of them restarted meanwhile)
//! and resync when it is back.

#[path = "support/kube.rs"]
mod kube_support;

use std::time::{Duration, Instant};

use kube_support::{control_plane, TempDir, TestAgent};
use palisade_tests::{
    agent::node_name, kube::TestApi, CniMode, Family, IpFamily, Pod, Port, ProbeSpec, Proto,
    TestCluster,
};
use serde_json::json;

/// (from, to, protocol, port, allowed?)
type Case = (&'static str, &'static str, Proto, u16, bool);

struct World {
    cluster: TestCluster,
    pods: Vec<Pod>,
}

impl World {
    fn pod(&self, name: &str) -> &Pod {
        self.pods.iter().find(|p| p.name() == name).expect("pod")
    }

    /// Every case, at the pod IP and at the Service's ClusterIP; the mismatches.
    fn mismatches(&self, cases: &[Case]) -> Vec<String> {
        let mut specs = Vec::new();
        let mut labels = Vec::new();
        for &(from, to, proto, port, want) in cases {
            let svc = self
                .cluster
                .service("x", &format!("s-x-{to}"))
                .expect("svc");
            for (via, ip) in [
                ("pod", self.pod(to).ip(IpFamily::Ipv4)),
                ("service", svc.cluster_ip(IpFamily::Ipv4)),
            ] {
                specs.push(ProbeSpec {
                    from: self.pod(from),
                    to: (ip.expect("ip"), port).into(),
                    proto,
                    timeout: Duration::from_millis(400),
                });
                labels.push((format!("{from}->{to} {proto:?}/{port} via {via}"), want));
            }
        }
        let got = self.cluster.probe_many(&specs).expect("probe");
        labels
            .into_iter()
            .zip(got)
            .filter(|((_, want), o)| o.allowed != *want)
            .map(|((l, want), o)| format!("{l}: want {want}, got {}", o.allowed))
            .collect()
    }

    /// Waits until every case holds (the agents apply API changes asynchronously).
    fn converge(&self, agents: &[TestAgent], step: &str, cases: &[Case]) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let wrong = self.mismatches(cases);
            if wrong.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{step}: still wrong after 30 s:\n{}\nagent 0 log:\n{}",
                wrong.join("\n"),
                agents[0].log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

#[test]
#[ignore = "privileged: needs root and the API server (cargo xtask test runs it)"]
fn kube_agents_enforce_api_policies_bridge_pods_found_by_neighbours() {
    scenario(CniMode::Bridge);
}

#[test]
#[ignore = "privileged: needs root and the API server (cargo xtask test runs it)"]
fn kube_agents_enforce_api_policies_routed_pods_found_by_routes() {
    scenario(CniMode::Ptp);
}

fn scenario(cni: CniMode) {
    palisade_tests::require_root!();
    palisade_tests::cleanup_stale();
    let tmp = TempDir::new(&format!("kube-e2e-{cni:?}"));
    let mut cp = control_plane();
    let api = TestApi::connect(&cp.kubeconfig()).expect("client");
    let cluster = TestCluster::builder()
        .family(Family::Ipv4)
        .nodes(2)
        .cni(cni)
        .build()
        .expect("cluster");
    api.namespace("x", &[("ns", "x")]).expect("ns");
    let ports = [Port::tcp(80).named("http"), Port::udp(81).named("dns")];
    let mut pods = Vec::new();
    for (node, name) in [(0, "a"), (0, "b"), (1, "c")] {
        let pod = cluster.add_pod(node, "x", name, &ports).expect("pod");
        let api_ports = [(80, "TCP", Some("http")), (81, "UDP", Some("dns"))];
        api.pod("x", name, &node_name(node), &[("app", name)], &api_ports)
            .expect("api pod");
        api.pod_status("x", name, pod.ips(), "Running")
            .expect("status");
        let svc_name = format!("s-x-{name}");
        let svc = cluster
            .add_service(
                "x",
                &svc_name,
                &[(80, Proto::Tcp, 80), (81, Proto::Udp, 81)],
                &[&pod],
            )
            .expect("svc");
        api.service(
            "x",
            &svc_name,
            &svc.cluster_ips,
            &[("app", name)],
            &[(80, "TCP", 80), (81, "UDP", 81)],
        )
        .expect("api svc");
        pods.push(pod);
    }
    // The agents run in their nodes' namespaces: relay the API server's port into each.
    let _relays: Vec<_> = (0..2)
        .map(|n| {
            cp.forward_into(cluster.node(n).netns_name())
                .expect("relay")
        })
        .collect();
    let kubeconfig = cp.kubeconfig().display().to_string();
    let args = [
        "--source".to_owned(),
        "kube".to_owned(),
        "--kubeconfig".to_owned(),
        kubeconfig,
    ];
    let mut agents: Vec<TestAgent> = (0..2)
        .map(|n| TestAgent::start(&cluster, n, tmp.0.join(format!("node{n}")), &args))
        .collect();
    // Nothing reports these pods: the agents discover their veths from the nodes' tables.
    let st = agents[0].wait_attached(&["x/a", "x/b"]);
    assert!(st["kube"]["synced"].as_bool().unwrap_or(false), "{st}");
    agents[1].wait_attached(&["x/c"]);
    let w = World { cluster, pods };
    w.converge(
        &agents,
        "no policy",
        &[
            ("b", "a", Proto::Tcp, 80, true),
            ("c", "a", Proto::Udp, 81, true),
        ],
    );

    // a accepts TCP 80 from b only.
    api.policy("x", "a-from-b", json!({"podSelector": {"matchLabels": {"app": "a"}},
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "b"}}}], "ports": [{"port": 80}]}]}))
        .expect("policy");
    w.converge(
        &agents,
        "a-from-b",
        &[
            ("b", "a", Proto::Tcp, 80, true),
            ("c", "a", Proto::Tcp, 80, false),
            ("b", "a", Proto::Udp, 81, false),
            ("a", "c", Proto::Udp, 81, true),
        ],
    );

    // The API server goes away: the agents say so and keep enforcing; an agent restarted during
    // the outage keeps enforcing what its predecessor pinned.
    let during_outage: &[Case] = &[
        ("b", "a", Proto::Tcp, 80, true),
        ("c", "a", Proto::Tcp, 80, false),
    ];
    cp.stop_apiserver();
    for agent in &mut agents {
        agent.wait_status("the outage in the status", |s| {
            s["kube"]["resources"]["pods"]["failing"] == true
        });
    }
    w.converge(&agents, "API server down", during_outage);
    agents[0].restart(&w.cluster);
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        agents[0].status().is_none(),
        "no model yet, nothing applied"
    );
    w.converge(&agents, "agent restarted during the outage", during_outage);
    cp.start_apiserver().expect("API server back");
    agents[0].wait_attached(&["x/a", "x/b"]);

    // A label change through the API: c becomes a client, and a policy admits clients.
    api.policy("x", "a-from-clients", json!({"podSelector": {"matchLabels": {"app": "a"}},
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}], "ports": [{"port": "http"}]}]}))
        .expect("policy 2");
    api.pod(
        "x",
        "c",
        &node_name(1),
        &[("app", "c"), ("role", "client")],
        &[(80, "TCP", Some("http")), (81, "UDP", Some("dns"))],
    )
    .expect("relabel c");
    w.converge(
        &agents,
        "c relabelled",
        &[
            ("c", "a", Proto::Tcp, 80, true),
            ("c", "a", Proto::Udp, 81, false),
        ],
    );

    // Deleting the policies opens everything again.
    api.delete("NetworkPolicy", "x", "a-from-b")
        .expect("delete");
    api.delete("NetworkPolicy", "x", "a-from-clients")
        .expect("delete");
    w.converge(
        &agents,
        "policies deleted",
        &[
            ("c", "a", Proto::Tcp, 80, true),
            ("b", "a", Proto::Udp, 81, true),
        ],
    );
}
