//! The compile benchmark behind `cargo xtask bench`: a synthetic cluster (namespaces of
//! replicated apps, a default-deny and per-app allow policies per namespace, egress with ipBlock
//! and named ports), timed for a full compile and for a single pod label change.
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{CompileOptions, Compiler};
use crate::model::{
    ContainerPort, EgressRule, IngressRule, IntOrString, IpBlock, LabelSelector, Labels, Model,
    ModelChange, Namespace, NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec,
    Pod, Protocol,
};

/// Size of the synthetic cluster.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct BenchSize {
    pub namespaces: usize,
    pub apps_per_namespace: usize,
    pub replicas: usize,
    pub policies_per_namespace: usize,
}

impl Default for BenchSize {
    /// 100 namespaces × 10 apps × 10 replicas = 10k pods; 20 policies per namespace = 2k.
    fn default() -> Self {
        Self {
            namespaces: 100,
            apps_per_namespace: 10,
            replicas: 10,
            policies_per_namespace: 20,
        }
    }
}

/// What the benchmark measured.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub size: BenchSize,
    pub pods: usize,
    pub policies: usize,
    pub identities: usize,
    pub trie_prefixes: usize,
    pub tables: usize,
    pub table_entries: usize,
    pub full_compile: Duration,
    /// One pod's labels changed so that it joins another app's existing identity, applied
    /// incrementally (the common case: a pod moves between replica sets).
    pub label_change: Duration,
    pub label_change_endpoints_changed: usize,
    /// One pod's labels changed to a combination no other pod has: a new identity that every
    /// matching peer rule in the cluster must add (here: 500 egress ipBlock rules).
    pub label_change_new_identity: Duration,
    pub new_identity_endpoints_changed: usize,
    /// Reverting the first change.
    pub label_revert: Duration,
}

fn labels(pairs: &[(&str, String)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

fn select(pairs: &[(&str, String)]) -> LabelSelector {
    LabelSelector {
        match_labels: Some(labels(pairs).into_iter().collect::<BTreeMap<_, _>>()),
        match_expressions: None,
    }
}

fn pod(ns: usize, app: usize, replica: usize, size: &BenchSize) -> Pod {
    let index = app * size.replicas + replica;
    let ip = Ipv4Addr::new(
        10,
        u8::try_from(ns / 250).unwrap_or(u8::MAX),
        u8::try_from(ns % 250).unwrap_or(0),
        u8::try_from(index % 250 + 1).unwrap_or(1),
    );
    Pod {
        namespace: format!("ns{ns}"),
        name: format!("app{app}-{replica}"),
        labels: labels(&[
            ("app", format!("app{app}")),
            ("tier", format!("t{}", app % 3)),
        ]),
        ips: vec![IpAddr::V4(ip)],
        node_name: Some(format!("node{}", index % 50)),
        host_network: false,
        container_ports: vec![
            ContainerPort {
                name: Some("http".to_owned()),
                port: 8080,
                protocol: Protocol::Tcp,
            },
            ContainerPort {
                name: Some("metrics".to_owned()),
                port: 9090,
                protocol: Protocol::Tcp,
            },
        ],
    }
}

fn port(protocol: &str, port: IntOrString) -> NetworkPolicyPort {
    NetworkPolicyPort {
        protocol: Some(protocol.to_owned()),
        port: Some(port),
        end_port: None,
    }
}

/// The `k`-th policy of namespace `ns`.
fn policy(ns: usize, k: usize, size: &BenchSize) -> NetworkPolicy {
    let app = k % size.apps_per_namespace;
    let prev = (app + size.apps_per_namespace - 1) % size.apps_per_namespace;
    let spec = match k {
        0 => NetworkPolicySpec {
            pod_selector: LabelSelector::default(),
            policy_types: Some(vec!["Ingress".to_owned()]),
            ..Default::default()
        },
        k if k % 2 == 1 => NetworkPolicySpec {
            pod_selector: select(&[("app", format!("app{app}"))]),
            ingress: Some(vec![
                IngressRule {
                    from: Some(vec![NetworkPolicyPeer {
                        pod_selector: Some(select(&[("app", format!("app{prev}"))])),
                        ..Default::default()
                    }]),
                    ports: Some(vec![port("TCP", IntOrString::String("http".to_owned()))]),
                },
                IngressRule {
                    from: Some(vec![NetworkPolicyPeer {
                        namespace_selector: Some(select(&[("team", format!("team{}", ns % 5))])),
                        pod_selector: Some(select(&[("tier", "t0".to_owned())])),
                        ..Default::default()
                    }]),
                    ports: Some(vec![NetworkPolicyPort {
                        end_port: Some(9100),
                        ..port("TCP", IntOrString::Int(9000))
                    }]),
                },
            ]),
            ..Default::default()
        },
        _ => NetworkPolicySpec {
            pod_selector: select(&[("app", format!("app{app}"))]),
            policy_types: Some(vec!["Egress".to_owned()]),
            egress: Some(vec![
                EgressRule {
                    to: Some(vec![NetworkPolicyPeer {
                        namespace_selector: Some(LabelSelector::default()),
                        pod_selector: Some(select(&[("app", format!("app{prev}"))])),
                        ..Default::default()
                    }]),
                    ports: Some(vec![port("TCP", IntOrString::String("http".to_owned()))]),
                },
                EgressRule {
                    to: Some(vec![NetworkPolicyPeer {
                        ip_block: Some(IpBlock {
                            cidr: "10.0.0.0/8".to_owned(),
                            except: Some(vec![format!("10.0.{}.0/24", ns % 250)]),
                        }),
                        ..Default::default()
                    }]),
                    ports: Some(vec![port("UDP", IntOrString::Int(53))]),
                },
            ]),
            ..Default::default()
        },
    };
    NetworkPolicy {
        namespace: format!("ns{ns}"),
        name: format!("p{k}"),
        spec,
    }
}

/// The synthetic cluster.
pub fn synthetic_model(size: &BenchSize) -> Model {
    let mut model = Model::new();
    for ns in 0..size.namespaces {
        let ns_labels = labels(&[("team", format!("team{}", ns % 5))]);
        model.apply(ModelChange::UpsertNamespace(Namespace::new(
            format!("ns{ns}"),
            ns_labels,
        )));
        for app in 0..size.apps_per_namespace {
            for replica in 0..size.replicas {
                model.apply(ModelChange::UpsertPod(pod(ns, app, replica, size)));
            }
        }
        for k in 0..size.policies_per_namespace {
            model.apply(ModelChange::UpsertPolicy(policy(ns, k, size)));
        }
    }
    model
}

/// Runs the benchmark at `size`.
pub fn run(size: BenchSize) -> BenchReport {
    let model = synthetic_model(&size);
    let mut compiler = Compiler::new(CompileOptions::default());
    let start = Instant::now();
    compiler.apply(model.as_changes());
    let full_compile = start.elapsed();

    let original = pod(0, 1, 0, &size);
    let mut joined = original.clone();
    joined.labels = pod(0, 2, 0, &size).labels;
    let mut unique = original.clone();
    unique.labels.insert("app".to_owned(), "app2".to_owned());
    let mut time = |pod: &Pod| {
        let start = Instant::now();
        let delta = compiler.apply([ModelChange::UpsertPod(pod.clone())]);
        (start.elapsed(), delta.endpoints_changed.len())
    };
    // Medians over several runs: one run is at the mercy of the allocator and the scheduler.
    let (mut join, mut fresh, mut revert) = (Vec::new(), Vec::new(), Vec::new());
    let (mut join_endpoints, mut fresh_endpoints) = (0, 0);
    for _ in 0..RUNS {
        let (t, n) = time(&joined);
        join.push(t);
        join_endpoints = n;
        revert.push(time(&original).0);
    }
    for _ in 0..RUNS {
        let (t, n) = time(&unique);
        fresh.push(t);
        fresh_endpoints = n;
        time(&original);
    }
    let label_change = median(join);
    let label_change_new_identity = median(fresh);
    let label_revert = median(revert);

    let out = compiler.output();
    BenchReport {
        size,
        pods: model.pods.len(),
        policies: model.policies.len(),
        identities: out.identities.identities.len(),
        trie_prefixes: out.identities.prefixes.len(),
        tables: out.tables.len(),
        table_entries: out.tables.values().map(|t| t.entries.len()).sum(),
        full_compile,
        label_change,
        label_change_endpoints_changed: join_endpoints,
        label_change_new_identity,
        new_identity_endpoints_changed: fresh_endpoints,
        label_revert,
    }
}

/// Runs per incremental measurement.
const RUNS: usize = 11;

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times.get(times.len() / 2).copied().unwrap_or_default()
}

/// The benchmark at its default size (10k pods, 2k policies).
pub fn run_default() -> BenchReport {
    run(BenchSize::default())
}

/// What the ClusterNetworkPolicy benchmark measured.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterBenchReport {
    pub pods: usize,
    pub policies: usize,
    pub cluster_policies: usize,
    /// Full compile without the ClusterNetworkPolicies, then with them.
    pub full_compile: Duration,
    pub full_compile_with_cluster_policies: Duration,
    pub tables: usize,
    pub table_entries: usize,
    /// One more Admin policy applied incrementally (median), and the endpoints it changed.
    pub add_cluster_policy: Duration,
    pub add_endpoints_changed: usize,
}

/// ClusterNetworkPolicies over the synthetic cluster: an Admin Pass of one team, an Admin Deny
/// between two teams, an Admin Accept of one app's metrics port from everywhere, and a Baseline
/// default deny (ingress from pods, egress SMTP to anywhere).
pub fn synthetic_cluster_policies() -> Vec<crate::model::ClusterNetworkPolicy> {
    let yaml = r#"
- name: pass-team2
  spec: {tier: Admin, priority: 1, subject: {namespaces: {}},
         ingress: [{action: Pass, from: [{namespaces: {matchLabels: {team: team2}}}]}]}
- name: team1-not-team0
  spec: {tier: Admin, priority: 10, subject: {namespaces: {matchLabels: {team: team0}}},
         ingress: [{action: Deny, from: [{namespaces: {matchLabels: {team: team1}}}]}]}
- name: metrics
  spec: {tier: Admin, priority: 20,
         subject: {pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: app0}}}},
         ingress: [{action: Accept, from: [{namespaces: {}}], protocols: [{tcp: {destinationPort: {number: 9090}}}]}]}
- name: baseline
  spec: {tier: Baseline, priority: 0, subject: {namespaces: {}},
         ingress: [{action: Deny, from: [{namespaces: {}}]}],
         egress: [{action: Deny, to: [{networks: [0.0.0.0/0]}], protocols: [{tcp: {destinationPort: {number: 25}}}]}]}
"#;
    serde_yaml::from_str(yaml).expect("the synthetic ClusterNetworkPolicies parse")
}

/// Runs the ClusterNetworkPolicy benchmark at `size`.
pub fn run_cluster_policies(size: BenchSize) -> ClusterBenchReport {
    let model = synthetic_model(&size);
    let start = Instant::now();
    let mut compiler = Compiler::new(CompileOptions::default());
    compiler.apply(model.as_changes());
    let full_compile = start.elapsed();
    let clusters = synthetic_cluster_policies();
    let mut with = model.clone();
    for c in &clusters {
        with.apply(ModelChange::UpsertClusterPolicy(c.clone()));
    }
    let start = Instant::now();
    let mut compiler = Compiler::new(CompileOptions::default());
    compiler.apply(with.as_changes());
    let full_compile_with_cluster_policies = start.elapsed();
    let mut extra = clusters[0].clone();
    extra.name = "extra".to_owned();
    extra.spec.priority = 2;
    let (mut times, mut changed) = (Vec::new(), 0);
    for _ in 0..RUNS {
        let start = Instant::now();
        let delta = compiler.apply([ModelChange::UpsertClusterPolicy(extra.clone())]);
        times.push(start.elapsed());
        changed = delta.endpoints_changed.len();
        compiler.apply([ModelChange::DeleteClusterPolicy("extra".to_owned())]);
    }
    let out = compiler.output();
    ClusterBenchReport {
        pods: model.pods.len(),
        policies: model.policies.len(),
        cluster_policies: clusters.len(),
        full_compile,
        full_compile_with_cluster_policies,
        tables: out.tables.len(),
        table_entries: out.tables.values().map(|t| t.entries.len()).sum(),
        add_cluster_policy: median(times),
        add_endpoints_changed: changed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_bench_runs() {
        let report = run(BenchSize {
            namespaces: 3,
            apps_per_namespace: 3,
            replicas: 2,
            policies_per_namespace: 4,
        });
        assert_eq!(report.pods, 18);
        assert_eq!(report.policies, 12);
        assert!(report.label_change_endpoints_changed >= 1);
    }

    #[test]
    fn small_cluster_policy_bench_runs() {
        let report = run_cluster_policies(BenchSize {
            namespaces: 3,
            apps_per_namespace: 3,
            replicas: 2,
            policies_per_namespace: 4,
        });
        assert_eq!(report.cluster_policies, 4);
        assert!(report.add_endpoints_changed >= 1);
    }

    /// The default size; run in release: `cargo test --release -p palisade --lib
    /// cluster_policy_bench_default -- --ignored --nocapture`.
    #[test]
    #[ignore = "a benchmark: release build, minutes"]
    fn cluster_policy_bench_default() {
        let report = run_cluster_policies(BenchSize::default());
        println!("{report:#?}");
    }
}
