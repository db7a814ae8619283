//! ClusterNetworkPolicy through the real TC programs (BPF_PROG_TEST_RUN): a model with an Admin
//! Deny, an Admin Accept, a NetworkPolicy and a Baseline Deny is compiled, the server's tables are
//! written to the maps as the syncer writes them, and crafted packets check that an Admin Deny
//! drops with its own reason and rule, an Admin Accept overrides NetworkPolicy isolation, and a
//! Baseline Deny applies where NetworkPolicy does not isolate.
//! Privileged (root): run through `cargo xtask test`, or `cargo test -- --ignored` as root.

mod support;

use std::path::Path;

use palisade::compiler::{compile, AllowTable, CompileOptions, CompiledOutput, Tier};
use palisade::dataplane::{policy_key, policy_value, Hook, PortBlock};
use palisade::model::{Model, ObjectKey};
use palisade::source::load_str;
use palisade_common::{
    conntrack::TCP_SYN,
    craft::{Frame, L4},
    endpoint::{EP_EGRESS_ISOLATED, EP_INGRESS_ISOLATED},
    verdict::{Decision, DropReason},
};
use support::{v4, Fixture, OK, SHOT};

const POD: &str = "10.244.0.10";
const CLIENT: &str = "10.244.1.20";
const OTHER: &str = "10.244.1.21";

const MODEL: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: x, labels: {team: red}}
---
apiVersion: v1
kind: Namespace
metadata: {name: y, labels: {team: blue}}
---
apiVersion: v1
kind: Pod
metadata: {name: server, namespace: x, labels: {app: server}}
spec: {nodeName: node-1, containers: [{name: c}]}
status: {podIP: 10.244.0.10}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: y, labels: {app: client}}
spec: {nodeName: node-1, containers: [{name: c}]}
status: {podIP: 10.244.1.20}
---
apiVersion: v1
kind: Pod
metadata: {name: other, namespace: y, labels: {app: other}}
spec: {nodeName: node-1, containers: [{name: c}]}
status: {podIP: 10.244.1.21}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: server-from-client, namespace: x}
spec:
  podSelector: {matchLabels: {app: server}}
  ingress: [{from: [{namespaceSelector: {}, podSelector: {matchLabels: {app: client}}}], ports: [{port: 80}]}]
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: guard}
spec:
  tier: Admin
  priority: 10
  subject: {namespaces: {matchLabels: {team: red}}}
  ingress:
  - name: no-other
    action: Deny
    from: [{pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: other}}}}]
  - name: client-8080
    action: Accept
    from: [{pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: client}}}}]
    protocols: [{tcp: {destinationPort: {number: 8080}}}]
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: egress-floor}
spec:
  tier: Baseline
  priority: 100
  subject: {namespaces: {}}
  egress:
  - {name: not-other, action: Deny, to: [{networks: [10.244.1.21/32]}]}
"#;

fn model() -> Model {
    let (changes, notes) = load_str(MODEL, Path::new("cnp.yaml"));
    assert!(notes.is_empty(), "{notes:?}");
    let mut m = Model::new();
    for c in changes {
        m.apply(c);
    }
    m
}

/// Writes one compiled table under `id`, as the syncer does.
fn write_table(f: &mut Fixture, id: u32, table: &AllowTable) {
    for (entry, value) in &table.entries {
        let ports = entry.ports.map(|p| PortBlock {
            port: p.port,
            prefix_len: p.prefix_len,
        });
        let protocol = entry.protocol.map(|p| p.number());
        let key = policy_key(id, entry.peer.identity(), protocol, ports);
        f.dp.set_policy(&key, policy_value(value)).expect("policy");
    }
}

/// The server as the test-run endpoint: identities, its two tables (ids 10 and 11, as the
/// fixture's endpoint record names them) and the lookup flags.
fn load(out: &CompiledOutput, label: &str) -> Fixture {
    let mut f = Fixture::new(label);
    for (net, id) in &out.identities.prefixes {
        f.identity(&net.to_string(), *id);
    }
    let server = &out.endpoints[&ObjectKey::new("x", "server")];
    let mut flags = 0;
    for (dir, flag, id) in [
        (&server.ingress, EP_INGRESS_ISOLATED, 10),
        (&server.egress, EP_EGRESS_ISOLATED, 11),
    ] {
        if dir.needs_lookup() {
            flags |= flag;
            write_table(&mut f, id, &out.tables[&dir.table.expect("table")]);
        }
    }
    f.endpoint(flags, 1);
    f
}

fn syn(src: &str, dst: &str, sport: u16, dport: u16) -> Vec<u8> {
    Frame::tcp(v4(src), v4(dst), sport, dport, TCP_SYN).build()
}

fn udp(src: &str, dst: &str, dport: u16) -> Vec<u8> {
    Frame::new(v4(src), v4(dst), L4::Udp { sport: 5353, dport }).build()
}

fn rule_id(out: &CompiledOutput, policy: &str, index: u32) -> u32 {
    let found = out.rules.iter().find(|(_, r)| {
        r.policy.name == policy && r.index == index && r.tier != Tier::NetworkPolicy
    });
    *found.expect("rule").0
}

#[test]
#[ignore = "privileged: needs root (cargo xtask test runs it)"]
fn admin_deny_drops_with_its_reason_and_admin_accept_overrides_isolation() {
    let out = compile(&model(), &CompileOptions::default());
    let server = &out.endpoints[&ObjectKey::new("x", "server")];
    assert!(
        server.ingress.isolated,
        "NetworkPolicy isolates the server's ingress"
    );
    assert!(!server.egress.isolated && server.egress.needs_lookup());
    let mut f = load(&out, "cnp");

    // NetworkPolicy allows the client on 80 (the Admin tier has no rule for it there).
    assert_eq!(
        f.run(Hook::ToPod, &syn(CLIENT, POD, 40000, 80)),
        OK,
        "NP allow"
    );
    // The Admin Accept on 8080 overrides NetworkPolicy's isolation.
    assert_eq!(
        f.run(Hook::ToPod, &syn(CLIENT, POD, 40001, 8080)),
        OK,
        "Admin Accept"
    );
    // Isolated, no rule: NetworkPolicy's deny.
    assert_eq!(
        f.run(Hook::ToPod, &syn(CLIENT, POD, 40002, 81)),
        SHOT,
        "NP deny"
    );
    assert_eq!(f.count(DropReason::IngressPolicyDenied), 1);
    // The Admin Deny drops "other" on every protocol and port, with its own reason.
    assert_eq!(
        f.run(Hook::ToPod, &syn(OTHER, POD, 40003, 80)),
        SHOT,
        "Admin Deny"
    );
    assert_eq!(
        f.run(Hook::ToPod, &udp(OTHER, POD, 53)),
        SHOT,
        "Admin Deny UDP"
    );
    assert_eq!(f.count(DropReason::AdminPolicyDenied), 2);

    // Egress is not isolated by NetworkPolicy: the Baseline Deny applies, the rest is allowed.
    assert_eq!(
        f.run(Hook::FromPod, &udp(POD, OTHER, 53)),
        SHOT,
        "Baseline Deny"
    );
    assert_eq!(f.count(DropReason::BaselinePolicyDenied), 1);
    assert_eq!(
        f.run(Hook::FromPod, &udp(POD, CLIENT, 53)),
        OK,
        "default allow"
    );

    // Drop events carry the deciding rule, which maps back to the policy and rule.
    let events = f.dp.drain_events().expect("events");
    let admin = events
        .iter()
        .find(|e| e.reason == DropReason::AdminPolicyDenied as u32)
        .expect("admin deny event");
    assert_eq!(admin.decision, Decision::Dropped as u8);
    assert_eq!(admin.rule_id, rule_id(&out, "guard", 0));
    let rule = &out.rules[&admin.rule_id];
    assert_eq!(rule.rule_name.as_deref(), Some("no-other"));
    let baseline = events
        .iter()
        .find(|e| e.reason == DropReason::BaselinePolicyDenied as u32)
        .expect("baseline deny event");
    assert_eq!(baseline.rule_id, rule_id(&out, "egress-floor", 0));
    let np = events
        .iter()
        .find(|e| e.reason == DropReason::IngressPolicyDenied as u32)
        .expect("np deny event");
    assert_eq!(
        np.rule_id, 0,
        "an implicit NetworkPolicy deny names no rule"
    );
}
