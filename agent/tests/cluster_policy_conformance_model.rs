//! The transcribed upstream ClusterNetworkPolicy corpus (`tests/cases/cluster-network-policy.json`)
//! without a dataplane: each case is played step by step through the manifests the conformance
//! runner writes, into one incremental compiler per node (fed the changes the agent's daemon
//! computes), and at every probe step each expected cell is checked three ways: the incremental
//! per-node outputs (client's node for egress, server's node for ingress, as the dataplane splits
//! them), a fresh compile of the same model, and the reference evaluator.
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use palisade::compiler::{compile, verdict, CompileOptions, CompiledOutput, Compiler};
use palisade::model::{Model, Protocol};
use palisade::reference::{self, ReferenceOptions};
use palisade::source::manifest::load_str;
use palisade_tests::conformance::case::{self, Action, Case};
use palisade_tests::conformance::manifests::{self, PodRuntime, Runtime};
use palisade_tests::conformance::template;
use palisade_tests::conformance::world::World;

const NODES: [&str; 2] = ["node-0", "node-1"];

fn corpus() -> Vec<Case> {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/cases/cluster-network-policy.json");
    case::load_all(&[file], &[]).unwrap()
}

/// Pods spread over the two nodes in order, as the runner does; one IPv4 address each.
fn runtime(world: &World) -> Runtime {
    world
        .pods
        .keys()
        .enumerate()
        .map(|(i, k)| {
            let rt = PodRuntime {
                node_name: NODES[i % NODES.len()].to_owned(),
                ips: vec![format!("10.244.0.{}", i + 2).parse().unwrap()],
                cluster_ips: vec![format!("10.96.0.{}", i + 2).parse().unwrap()],
                host_veth: format!("veth{i}"),
            };
            (k.clone(), rt)
        })
        .collect()
}

/// The model the agent reads from the runner's manifest directory.
fn model_of(world: &World, rt: &Runtime) -> Model {
    let mut model = Model::new();
    for (name, doc) in manifests::render(world, rt).unwrap() {
        let (changes, notes) = load_str(&doc.to_string(), Path::new(&name));
        assert!(notes.is_empty(), "{name}: {notes:?}");
        for c in changes {
            model.apply(c);
        }
    }
    model
}

fn fill(action: &Action, ips: &BTreeMap<String, IpAddr>) -> Action {
    let f = |p: &serde_json::Value| template::fill_value(p, ips).unwrap();
    match action {
        Action::CreatePolicy { namespace, policy } => Action::CreatePolicy {
            namespace: namespace.clone(),
            policy: f(policy),
        },
        Action::UpdatePolicy { namespace, policy } => Action::UpdatePolicy {
            namespace: namespace.clone(),
            policy: f(policy),
        },
        Action::CreateClusterPolicy { policy } => Action::CreateClusterPolicy { policy: f(policy) },
        Action::UpdateClusterPolicy { policy } => Action::UpdateClusterPolicy { policy: f(policy) },
        other => other.clone(),
    }
}

fn protocol(name: &str) -> Protocol {
    match name {
        "TCP" => Protocol::Tcp,
        "UDP" => Protocol::Udp,
        _ => Protocol::Sctp,
    }
}

/// Allowed per the two per-node outputs: the client's egress on its node, the server's ingress
/// on its node.
fn per_node(outs: &[CompiledOutput], client: usize, server: usize, cell: Cell) -> bool {
    let (from, to, proto, port) = cell;
    let egress = verdict(&outs[client], from, to, proto, port).egress;
    let ingress = verdict(&outs[server], from, to, proto, port).ingress;
    egress.allows() && ingress.allows()
}

type Cell = (IpAddr, IpAddr, Protocol, u16);

#[test]
fn corpus_cells_agree_incremental_fresh_and_reference() {
    let mut bad = Vec::new();
    let mut checked = 0;
    for c in corpus() {
        let mut world = World::new(&c.initial_state).unwrap();
        let rt = runtime(&world);
        let ips: BTreeMap<String, IpAddr> = rt.iter().map(|(k, r)| (k.clone(), r.ips[0])).collect();
        let node_of = |key: &str| NODES.iter().position(|n| *n == rt[key].node_name).unwrap();
        let mut current = Model::new();
        let mut compilers: Vec<Compiler> = NODES
            .iter()
            .map(|n| {
                Compiler::new(CompileOptions {
                    node: Some((*n).to_owned()),
                    ..CompileOptions::default()
                })
            })
            .collect();
        // The initial state, as the agents read it when they start.
        let sync = |world: &World, current: &mut Model, compilers: &mut Vec<Compiler>| {
            let next = model_of(world, &rt);
            let changes = current.changes_to(&next);
            for comp in compilers.iter_mut() {
                comp.apply(changes.clone());
            }
            *current = next;
        };
        sync(&world, &mut current, &mut compilers);
        for s in &c.steps {
            let Action::Probe(probe) = &s.action else {
                world.apply(&fill(&s.action, &ips)).unwrap();
                sync(&world, &mut current, &mut compilers);
                continue;
            };
            let fresh = compile(&current, &CompileOptions::default());
            let outs: Vec<CompiledOutput> = compilers.iter().map(|c| c.output().clone()).collect();
            let proto = protocol(&probe.protocol.to_string());
            for cell in &probe.expected {
                let (from, to) = (ips[&cell.from], ips[&cell.to]);
                let port = cell.port.or(probe.port).unwrap();
                let want = cell.allowed.unwrap();
                let key = (from, to, proto, port);
                let reference = reference::evaluate(
                    &current,
                    ReferenceOptions::default(),
                    from,
                    to,
                    proto,
                    port,
                )
                .allowed();
                let fresh_v = verdict(&fresh, from, to, proto, port).allowed;
                let inc = per_node(&outs, node_of(&cell.from), node_of(&cell.to), key);
                checked += 1;
                if proto == Protocol::Sctp {
                    continue;
                }
                if (reference, fresh_v, inc) != (want, want, want) {
                    bad.push(format!(
                        "{} step {}: {} -> {}:{port}/{proto}: expected {}, reference {reference}, \
                         fresh {fresh_v}, incremental {inc}",
                        c.id, s.step, cell.from, cell.to, want
                    ));
                }
            }
        }
    }
    assert!(checked > 250, "only {checked} cells checked");
    assert!(
        bad.is_empty(),
        "{} of {checked} cells:\n{}",
        bad.len(),
        bad.join("\n")
    );
}
