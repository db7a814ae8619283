//! The real agent on a test node: pods made by the reference CNI plugins, the agent in the node's
//! namespace on the manifest-directory source, real TCP and UDP probes, directly and through
//! kube-proxy-style ClusterIPs. Privileged (root): run through `cargo xtask test`.

use std::{path::Path, time::Duration};

use palisade_tests::{
    agent::{node_name, pod_manifest, AgentProcess, Manifests},
    CniMode, Family, IpFamily, Pod, Port, ProbeSpec, Proto, TestCluster,
};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(20);
const DENY_TIMEOUT: Duration = Duration::from_millis(400);

struct Setup {
    cluster: TestCluster,
    manifests: Manifests,
    agents: Vec<AgentProcess>,
    pods: Vec<Pod>,
    _tmp: TempDir,
}

struct TempDir(std::path::PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Pods x/a (node 0), x/b (node 0), x/c (node 1), each serving TCP 80 and UDP 81, with a
/// ClusterIP Service each, and one agent per node.
fn setup(label: &str, family: Family, cni: CniMode) -> Setup {
    palisade_tests::cleanup_stale();
    let tmp =
        TempDir(std::env::temp_dir().join(format!("palisade-e2e-{label}-{}", std::process::id())));
    let cluster = TestCluster::builder()
        .family(family)
        .nodes(2)
        .cni(cni)
        .build()
        .expect("cluster");
    let manifests = Manifests::new(tmp.0.join("manifests")).expect("manifests");
    manifests.put("ns-x", &json!({"apiVersion":"v1","kind":"Namespace","metadata":{"name":"x","labels":{"ns":"x"}}})).expect("ns");
    let ports = [Port::tcp(80).named("http"), Port::udp(81).named("dns")];
    let mut pods = Vec::new();
    for (node, name) in [(0, "a"), (0, "b"), (1, "c")] {
        let pod = cluster.add_pod(node, "x", name, &ports).expect("pod");
        manifests
            .put(
                &format!("pod-x-{name}"),
                &pod_manifest(&pod, &node_name(node), &json!({"app": name})),
            )
            .expect("pod manifest");
        let svc = cluster
            .add_service(
                "x",
                &format!("s-x-{name}"),
                &[(80, Proto::Tcp, 80), (81, Proto::Udp, 81)],
                &[&pod],
            )
            .expect("svc");
        let ips: Vec<String> = svc.cluster_ips.iter().map(ToString::to_string).collect();
        manifests.put(&format!("svc-x-{name}"), &json!({
            "apiVersion":"v1","kind":"Service","metadata":{"namespace":"x","name":format!("s-x-{name}")},
            "spec":{"clusterIP": ips[0], "clusterIPs": ips, "selector":{"app":name},
                    "ports":[{"port":80,"targetPort":80,"protocol":"TCP"},{"port":81,"targetPort":81,"protocol":"UDP"}]}})).expect("svc manifest");
        pods.push(pod);
    }
    let bin = Path::new(env!("CARGO_BIN_EXE_palisade"));
    let agents: Vec<AgentProcess> = (0..2)
        .map(|n| {
            AgentProcess::start(&cluster, n, bin, &manifests, tmp.0.join(format!("node{n}")))
                .expect("agent")
        })
        .collect();
    for pod in &pods {
        agents[pod.node()].report_endpoint(pod).expect("report");
    }
    Setup {
        cluster,
        manifests,
        agents,
        pods,
        _tmp: tmp,
    }
}

impl Setup {
    fn apply(&mut self) {
        let rev = self.manifests.commit().expect("commit");
        for (n, agent) in self.agents.iter_mut().enumerate() {
            let local: Vec<String> = self
                .pods
                .iter()
                .filter(|p| p.node() == n)
                .map(Pod::key)
                .collect();
            if let Err(e) = agent.wait_applied(rev, &local, WAIT) {
                panic!("{e}\nagent log:\n{}", agent.log());
            }
        }
    }

    fn pod(&self, name: &str) -> &Pod {
        self.pods.iter().find(|p| p.name() == name).expect("pod")
    }

    /// Probes `from` → `to` on `port`/`proto` at the pod IP or the Service ClusterIP.
    fn probe(
        &self,
        from: &str,
        to: &str,
        proto: Proto,
        port: u16,
        via_service: bool,
        fam: IpFamily,
    ) -> bool {
        let target = if via_service {
            let svc = self
                .cluster
                .service("x", &format!("s-x-{to}"))
                .expect("service");
            svc.cluster_ip(fam).expect("cluster ip")
        } else {
            self.pod(to).ip(fam).expect("pod ip")
        };
        let spec = ProbeSpec {
            from: self.pod(from),
            to: (target, port).into(),
            proto,
            timeout: DENY_TIMEOUT,
        };
        self.cluster.probe_many(&[spec]).expect("probe")[0].allowed
    }

    fn policy(&self, name: &str, spec: Value) {
        self.manifests
            .put(
                &format!("np-{name}"),
                &json!({"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy",
                "metadata":{"namespace":"x","name":name},"spec":spec}),
            )
            .expect("policy");
    }
}

fn check(s: &Setup, fam: IpFamily, cases: &[(&str, &str, Proto, u16, bool)]) {
    let mut wrong = Vec::new();
    for &(from, to, proto, port, want) in cases {
        for via_service in [false, true] {
            let got = s.probe(from, to, proto, port, via_service, fam);
            if got != want {
                wrong.push(format!(
                    "{from}->{to} {proto:?}/{port} service={via_service}: want {want}, got {got}"
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{fam:?} mismatches:\n{}\nagent 0 log:\n{}",
        wrong.join("\n"),
        s.agents[0].log()
    );
}

fn ingress_scenario(label: &str, family: Family, cni: CniMode, fam: IpFamily) {
    let mut s = setup(label, family, cni);
    s.apply();
    check(
        &s,
        fam,
        &[
            ("b", "a", Proto::Tcp, 80, true),
            ("c", "a", Proto::Tcp, 80, true),
        ],
    );
    // a accepts TCP 80 from b only.
    s.policy(
        "a-from-b",
        json!({"podSelector":{"matchLabels":{"app":"a"}},
        "ingress":[{"from":[{"podSelector":{"matchLabels":{"app":"b"}}}],"ports":[{"port":80}]}]}),
    );
    s.apply();
    check(
        &s,
        fam,
        &[
            ("b", "a", Proto::Tcp, 80, true),
            ("c", "a", Proto::Tcp, 80, false),
            ("b", "a", Proto::Udp, 81, false),
            ("a", "b", Proto::Tcp, 80, true),
            ("a", "c", Proto::Udp, 81, true),
        ],
    );
    // Egress isolation of b: only UDP 81 to c; its TCP to a is now closed on b's side.
    s.policy("b-egress", json!({"podSelector":{"matchLabels":{"app":"b"}},"policyTypes":["Egress"],
        "egress":[{"to":[{"podSelector":{"matchLabels":{"app":"c"}}}],"ports":[{"port":"dns","protocol":"UDP"}]}]}));
    s.apply();
    check(
        &s,
        fam,
        &[
            ("b", "a", Proto::Tcp, 80, false),
            ("b", "c", Proto::Udp, 81, true),
            ("b", "c", Proto::Tcp, 80, false),
            ("c", "b", Proto::Tcp, 80, true),
        ],
    );
    // Removing the policies opens everything again.
    s.manifests.remove("np-a-from-b").expect("rm");
    s.manifests.remove("np-b-egress").expect("rm");
    s.apply();
    check(
        &s,
        fam,
        &[
            ("c", "a", Proto::Tcp, 80, true),
            ("b", "a", Proto::Udp, 81, true),
        ],
    );
}

#[test]
#[ignore = "privileged: needs root (cargo xtask test runs it)"]
fn agent_enforces_ingress_and_egress_ipv4_bridge() {
    ingress_scenario("v4br", Family::Ipv4, CniMode::Bridge, IpFamily::Ipv4);
}

#[test]
#[ignore = "privileged: needs root (cargo xtask test runs it)"]
fn agent_enforces_ingress_and_egress_ipv6_ptp() {
    ingress_scenario("v6ptp", Family::Ipv6, CniMode::Ptp, IpFamily::Ipv6);
}
