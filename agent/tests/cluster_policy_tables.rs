//! The flattened tables themselves: where tiers make one identity's verdict differ from the
//! any-peer fallback, the identity's entries cover its whole key space, so the dataplane's ANY
//! lookup never answers for it (an Admin Deny for one identity is not undone by an ANY Allow, and
//! an Admin Accept for one identity is not undone by the ANY miss that means "isolated, no rule").
mod policy_util;

use palisade::compiler::{
    compile, verdict, Action, AllowEntry, AllowTable, CompileOptions, CompiledOutput, EntryValue,
    Peer, PortPrefix, SideDecision, Tier,
};
use palisade::model::{ObjectKey, Protocol};
use policy_util::{addr, cluster};

const ADMIN_ON_C_80: &str = r#"
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: admin}
spec:
  tier: Admin
  priority: 1
  subject: {pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: a}}}}
  ingress:
  - action: ACTION
    from: [{pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: c}}}}]
    protocols: [{tcp: {destinationPort: {number: 80}}}]
"#;

fn ingress_table<'a>(out: &'a CompiledOutput, pod: &str) -> &'a AllowTable {
    let key = ObjectKey::parse(pod).expect("pod");
    let id = out.endpoints[&key].ingress.table.expect("a table");
    &out.tables[&id]
}

fn identity_of(out: &CompiledOutput, pod: &str) -> u32 {
    let key = ObjectKey::parse(pod).expect("pod");
    let (id, _) = out
        .identities
        .identities
        .iter()
        .find(|(_, info)| info.members.contains(&key))
        .expect("identity");
    *id
}

fn entries_of(table: &AllowTable, peer: Peer) -> Vec<(AllowEntry, EntryValue)> {
    let all = table.entries.iter().filter(|(k, _)| k.peer == peer);
    all.map(|(k, v)| (*k, *v)).collect()
}

fn all_protocols(peer: Peer) -> AllowEntry {
    AllowEntry {
        peer,
        protocol: None,
        ports: None,
    }
}

#[test]
fn admin_deny_for_one_identity_shadows_an_any_allow() {
    // NetworkPolicy allows everything from everyone into x/a ({} rule); the Admin tier denies
    // y/c on TCP 80 only.
    let np = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: all, namespace: x}\n\
              spec: {podSelector: {matchLabels: {app: a}}, ingress: [{}]}";
    let model = cluster(&format!(
        "{np}\n---\n{}",
        ADMIN_ON_C_80.replace("ACTION", "Deny")
    ));
    let out = compile(&model, &CompileOptions::default());
    let table = ingress_table(&out, "x/a");
    let c = Peer::Identity(identity_of(&out, "y/c"));
    let any = entries_of(table, Peer::Any);
    assert_eq!(any.len(), 1, "{any:?}");
    assert_eq!(any[0].0, all_protocols(Peer::Any));
    assert_eq!(
        (any[0].1.action, any[0].1.tier),
        (Action::Allow, Tier::NetworkPolicy)
    );
    // y/c: an all-protocols entry (so ANY is never consulted) and the denied port.
    let mine = entries_of(table, c);
    let whole = mine
        .iter()
        .find(|(k, _)| *k == all_protocols(c))
        .expect("all protocols");
    assert_eq!(
        (whole.1.action, whole.1.tier),
        (Action::Allow, Tier::NetworkPolicy)
    );
    let port80 = AllowEntry {
        peer: c,
        protocol: Some(Protocol::Tcp),
        ports: Some(PortPrefix::single(80)),
    };
    let deny = mine.iter().find(|(k, _)| *k == port80).expect("TCP 80");
    assert_eq!((deny.1.action, deny.1.tier), (Action::Deny, Tier::Admin));
    assert_eq!(mine.len(), 2, "{mine:?}");
    // The lookups, as the dataplane does them.
    let (cip, aip, bip) = (
        addr(&model, "y/c"),
        addr(&model, "x/a"),
        addr(&model, "x/b"),
    );
    let v = verdict(&out, cip, aip, Protocol::Tcp, 80);
    assert!(
        matches!(v.ingress, SideDecision::DeniedByRule { .. }),
        "{v:?}"
    );
    assert!(verdict(&out, cip, aip, Protocol::Tcp, 81).allowed);
    assert!(verdict(&out, cip, aip, Protocol::Udp, 80).allowed);
    assert!(verdict(&out, bip, aip, Protocol::Tcp, 80).allowed);
}

#[test]
fn admin_accept_for_one_identity_shadows_an_any_miss() {
    // NetworkPolicy isolates x/a and allows only x/b; the Admin tier accepts y/c on TCP 80.
    let np = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: b-only, namespace: x}\n\
              spec: {podSelector: {matchLabels: {app: a}}, ingress: [{from: [{podSelector: {matchLabels: {app: b}}}]}]}";
    let model = cluster(&format!(
        "{np}\n---\n{}",
        ADMIN_ON_C_80.replace("ACTION", "Accept")
    ));
    let out = compile(&model, &CompileOptions::default());
    let table = ingress_table(&out, "x/a");
    let c = Peer::Identity(identity_of(&out, "y/c"));
    assert!(
        entries_of(table, Peer::Any).is_empty(),
        "ANY: a miss means isolated, no rule"
    );
    let mine = entries_of(table, c);
    let whole = mine
        .iter()
        .find(|(k, _)| *k == all_protocols(c))
        .expect("all protocols");
    // The implicit NetworkPolicy deny, written so that the identity never falls back to ANY.
    assert_eq!(
        whole.1,
        EntryValue {
            action: Action::Deny,
            tier: Tier::NetworkPolicy,
            rule_id: 0
        }
    );
    let accept = mine
        .iter()
        .find(|(k, _)| k.protocol == Some(Protocol::Tcp) && k.ports == Some(PortPrefix::single(80)))
        .expect("TCP 80");
    assert_eq!(
        (accept.1.action, accept.1.tier),
        (Action::Allow, Tier::Admin)
    );
    let (cip, aip) = (addr(&model, "y/c"), addr(&model, "x/a"));
    assert!(verdict(&out, cip, aip, Protocol::Tcp, 80).allowed);
    let v = verdict(&out, cip, aip, Protocol::Tcp, 81);
    assert!(matches!(v.ingress, SideDecision::Denied { .. }), "{v:?}");
}

#[test]
fn networkpolicy_only_tables_are_unchanged() {
    // Without ClusterNetworkPolicies a table is the union of allows and nothing else.
    let np = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: b-only, namespace: x}\n\
              spec: {podSelector: {matchLabels: {app: a}}, ingress: [{from: [{podSelector: {matchLabels: {app: b}}}]}]}";
    let out = compile(&cluster(np), &CompileOptions::default());
    let table = ingress_table(&out, "x/a");
    assert!(table
        .entries
        .values()
        .all(|v| v.action == Action::Allow && v.tier == Tier::NetworkPolicy && v.rule_id != 0));
    let e = &out.endpoints[&ObjectKey::new("x", "a")];
    assert!(e.ingress.cluster_policies.is_empty() && !e.egress.needs_lookup());
}
