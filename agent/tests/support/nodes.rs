//! Test nodes with the real agent: the shared setup of the end-to-end tests.

use std::{path::Path, time::Duration};

use palisade_tests::{
    agent::{node_name, pod_manifest, AgentProcess, Manifests},
    CniMode, Family, IpFamily, Pod, Port, ProbeSpec, Proto, TestCluster,
};
use serde_json::{json, Value};

pub const WAIT: Duration = Duration::from_secs(20);
pub const DENY_TIMEOUT: Duration = Duration::from_millis(400);

pub struct Setup {
    pub cluster: TestCluster,
    pub manifests: Manifests,
    pub agents: Vec<AgentProcess>,
    pub pods: Vec<Pod>,
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
pub fn setup(label: &str, family: Family, cni: CniMode) -> Setup {
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
    let bin = agent_bin();
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
    pub fn apply(&mut self) {
        apply_with(&mut self.manifests, &mut self.agents, &self.pods);
    }

    pub fn pod(&self, name: &str) -> &Pod {
        find(&self.pods, name)
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

    pub fn policy(&self, name: &str, spec: Value) {
        put_policy(&self.manifests, name, spec);
    }
}

/// Publishes the manifests and waits until every agent applied them with its pods attached.
pub fn apply_with(manifests: &mut Manifests, agents: &mut [AgentProcess], pods: &[Pod]) {
    let rev = manifests.commit().expect("commit");
    for (n, agent) in agents.iter_mut().enumerate() {
        let local: Vec<String> = pods
            .iter()
            .filter(|p| p.node() == n)
            .map(Pod::key)
            .collect();
        if let Err(e) = agent.wait_applied(rev, &local, WAIT) {
            panic!("{e}\nagent log:\n{}", agent.log());
        }
    }
}

/// Writes NetworkPolicy `x/<name>`.
pub fn put_policy(manifests: &Manifests, name: &str, spec: Value) {
    manifests
        .put(
            &format!("np-{name}"),
            &json!({"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy",
            "metadata":{"namespace":"x","name":name},"spec":spec}),
        )
        .expect("policy");
}

pub fn find<'p>(pods: &'p [Pod], name: &str) -> &'p Pod {
    pods.iter().find(|p| p.name() == name).expect("pod")
}

pub fn check(s: &Setup, fam: IpFamily, cases: &[(&str, &str, Proto, u16, bool)]) {
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

/// The agent binary cargo built for these tests.
pub fn agent_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_palisade"))
}
