//! Property tests: lookups in the compiled structures agree with the reference evaluator on
//! every address pair, protocol and port of random clusters (NetworkPolicies and
//! ClusterNetworkPolicies of both tiers); incremental compilation equals a full recompile. Cases
//! per property: `PROPTEST_CASES` (default 256).
mod policy_gen;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use palisade::compiler::{
    compile, verdict, Action, CompileOptions, CompiledOutput, Compiler, IdentityKey, Peer,
    PortPrefix, RuleRef, Tier,
};
use palisade::model::{Model, ObjectKey, Protocol};
use palisade::reference::{self, ReferenceOptions};
use policy_gen::{change, cluster, probe_ips, PORTS};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

/// Checks every (from, to, protocol, port); `local` restricts the enforcing sides to one node.
fn agree(
    model: &Model,
    out: &CompiledOutput,
    options: ReferenceOptions,
    local: Option<&str>,
) -> Result<(), TestCaseError> {
    let ips = probe_ips(model);
    let is_local = |ip: IpAddr| {
        let pod = reference::endpoint_with_ip(model, ip);
        pod.is_some_and(|p| local.is_none_or(|n| p.node_name.as_deref() == Some(n)))
    };
    for from in &ips {
        for to in &ips {
            for protocol in Protocol::ALL {
                for port in PORTS {
                    let got = verdict(out, *from, *to, protocol, port);
                    let want = reference::evaluate(model, options, *from, *to, protocol, port);
                    let want = (
                        want.egress || !is_local(*from),
                        want.ingress || !is_local(*to),
                    );
                    prop_assert_eq!(
                        (got.egress.allows(), got.ingress.allows()),
                        want,
                        "{} -> {} {}/{}: compiled {:?} / {:?}",
                        from,
                        to,
                        protocol,
                        port,
                        got.egress,
                        got.ingress
                    );
                }
            }
        }
    }
    Ok(())
}

/// An entry with identities and rule ids replaced by what they stand for (rule id 0: none).
type NormalEntry = (
    Option<IdentityKey>,
    Option<Protocol>,
    Option<PortPrefix>,
    (Action, Tier, Option<RuleRef>),
);
type NormalSide = (bool, Vec<ObjectKey>, Vec<String>, BTreeSet<NormalEntry>);

/// The output with allocation-dependent numbers replaced by keys, for comparing two compiles.
#[derive(Debug, PartialEq)]
struct Normal {
    prefixes: BTreeMap<IpNet, IdentityKey>,
    members: BTreeMap<IdentityKey, BTreeSet<ObjectKey>>,
    endpoints: BTreeMap<ObjectKey, (Vec<IpAddr>, NormalSide, NormalSide)>,
    endpoint_ips: BTreeMap<IpAddr, ObjectKey>,
    host: BTreeMap<String, BTreeSet<IpAddr>>,
    problems: Vec<String>,
}

fn normalize(out: &CompiledOutput) -> Normal {
    let key = |id: u32| out.identities.identities[&id].key.clone();
    let side = |d: &palisade::compiler::DirectionPolicy| -> NormalSide {
        let table = d.table.map(|t| &out.tables[&t]);
        let entries = table.into_iter().flat_map(|t| &t.entries).map(|(k, v)| {
            let peer = match k.peer {
                Peer::Any => None,
                Peer::Identity(id) => Some(key(id)),
            };
            let rule = (v.rule_id != 0).then(|| out.rules[&v.rule_id].clone());
            (peer, k.protocol, k.ports, (v.action, v.tier, rule))
        });
        let clusters = d.cluster_policies.clone();
        (
            d.isolated,
            d.isolated_by.clone(),
            clusters,
            entries.collect(),
        )
    };
    let mut problems: Vec<String> = out.problems.iter().map(ToString::to_string).collect();
    problems.sort();
    Normal {
        prefixes: out
            .identities
            .prefixes
            .iter()
            .map(|(p, id)| (*p, key(*id)))
            .collect(),
        members: out
            .identities
            .identities
            .values()
            .map(|i| (i.key.clone(), i.members.clone()))
            .collect(),
        endpoints: out
            .endpoints
            .iter()
            .map(|(k, e)| {
                (
                    k.clone(),
                    (e.ips.clone(), side(&e.ingress), side(&e.egress)),
                )
            })
            .collect(),
        endpoint_ips: out.endpoint_ips.clone(),
        host: out.identities.host.clone(),
        problems,
    }
}

/// Every table referenced exists and every stored table is referenced (no leaks).
fn tables_consistent(out: &CompiledOutput) -> Result<(), TestCaseError> {
    let used: BTreeSet<_> = out
        .endpoints
        .values()
        .flat_map(|e| [e.ingress.table, e.egress.table])
        .flatten()
        .collect();
    let stored: BTreeSet<_> = out.tables.keys().copied().collect();
    prop_assert_eq!(used, stored);
    for (id, table) in &out.tables {
        prop_assert_eq!(table.content_hash(), *id);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::default())]

    #[test]
    fn compiled_lookup_agrees_with_reference(model in cluster()) {
        let out = compile(&model, &CompileOptions::default());
        agree(&model, &out, ReferenceOptions::default(), None)?;
        tables_consistent(&out)?;
    }

    #[test]
    fn node_local_compile_agrees_with_reference(model in cluster(), node_traffic in any::<bool>()) {
        let options = CompileOptions { node: Some("node-0".to_owned()), allow_node_traffic: node_traffic };
        let out = compile(&model, &options);
        let reference = ReferenceOptions { allow_node_traffic: node_traffic };
        agree(&model, &out, reference, Some("node-0"))?;
    }

    #[test]
    fn incremental_equals_full_recompile(model in cluster(), changes in vec(change(), 1..10)) {
        let options = CompileOptions::default();
        let mut compiler = Compiler::new(options.clone());
        compiler.apply(model.as_changes());
        let mut expected = model.clone();
        for c in changes {
            compiler.apply([c.clone()]);
            expected.apply(c);
            tables_consistent(compiler.output())?;
        }
        let full = compile(&expected, &options);
        prop_assert_eq!(normalize(compiler.output()), normalize(&full));
        agree(&expected, compiler.output(), ReferenceOptions::default(), None)?;
    }
}
