//! Capacity: a full policy map or endpoint table fails the affected endpoint closed, is reported,
//! and recovers once space returns. The syncer and the real programs run in a network namespace of
//! this test's own (two veths, nothing else); packets are verdicts from BPF_PROG_TEST_RUN on those
//! veths. Privileged (root): run through `cargo xtask test`.

mod support;

use std::{collections::BTreeMap, path::Path};

use palisade::{
    compiler::{compile, CompileOptions},
    dataplane::{ifindex, Dataplane, Hook, LoadOptions, PrivateBpffs},
    model::{Model, ObjectKey},
    source::load_str,
    sync::{Attachment, EndpointState, SyncReport, Syncer},
};
use palisade_common::{conntrack::TCP_SYN, craft::Frame};
use palisade_tests::{names::RunId, netns::Netns};
use support::{v4, OK, SHOT};

const PODS: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: x}
---
apiVersion: v1
kind: Pod
metadata: {namespace: x, name: a, labels: {app: a}}
spec: {nodeName: n}
status: {podIP: 10.9.0.2}
---
apiVersion: v1
kind: Pod
metadata: {namespace: x, name: b, labels: {app: b}}
spec: {nodeName: n}
status: {podIP: 10.9.0.3}
"#;

/// A policy on pod `app` allowing TCP from anywhere on `ports`, one map entry per port.
fn policy(app: &str, ports: &[u16]) -> String {
    let ports: Vec<String> = ports.iter().map(|p| format!("{{port: {p}}}")).collect();
    format!(
        "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{namespace: x, name: p-{app}}}\n\
         spec: {{podSelector: {{matchLabels: {{app: {app}}}}}, ingress: [{{ports: [{}]}}]}}\n",
        ports.join(", ")
    )
}

fn model(text: &str) -> Model {
    let (changes, notes) = load_str(text, Path::new("capacity.yaml"));
    assert!(notes.iter().all(|n| !n.malformed), "{notes:?}");
    let mut m = Model::new();
    for c in changes {
        m.apply(c);
    }
    m
}

struct World {
    dp: Dataplane,
    syncer: Syncer,
    attached: BTreeMap<ObjectKey, Attachment>,
}

impl World {
    fn sync(&mut self, text: &str) -> SyncReport {
        let m = model(text);
        let out = compile(
            &m,
            &CompileOptions {
                node: Some("n".into()),
                allow_node_traffic: true,
            },
        );
        self.syncer.sync(&mut self.dp, &out, &m, &self.attached)
    }

    /// The verdict of a TCP SYN from 10.9.0.99 to `pod`'s `port`, at `pod`'s host veth.
    fn syn_to(&mut self, pod: &str, port: u16, sport: u16) -> u32 {
        let key = ObjectKey::new("x", pod);
        let ip = if pod == "a" { "10.9.0.2" } else { "10.9.0.3" };
        let frame = Frame::tcp(v4("10.9.0.99"), v4(ip), sport, port, TCP_SYN).build();
        let idx = self.attached[&key].ifindex;
        self.dp
            .test_run_on(Hook::ToPod, &frame, 0, idx, 1)
            .expect("run")
            .action
    }
}

fn state(r: &SyncReport, pod: &str) -> EndpointState {
    r.endpoints[&format!("x/{pod}")]
}

/// Runs `f` in a fresh network namespace with veths `va` and `vb` (pods a and b's host sides).
fn in_namespace(label: &str, f: impl FnOnce(BTreeMap<ObjectKey, Attachment>) + Send) {
    let ns = Netns::create(&RunId::fresh().name(label)).expect("netns");
    for (host, peer) in [("va", "pa"), ("vb", "pb")] {
        let status = ns
            .command("ip")
            .expect("cmd")
            .args(["link", "add", host, "type", "veth", "peer", "name", peer])
            .status();
        assert!(status.is_ok_and(|s| s.success()), "creating veth {host}");
        let _ = ns
            .command("ip")
            .expect("cmd")
            .args(["link", "set", host, "up"])
            .status();
    }
    ns.run(move || {
        let attached = [("a", "va"), ("b", "vb")]
            .into_iter()
            .map(|(pod, ifname)| {
                let att = Attachment {
                    ifname: ifname.into(),
                    ifindex: ifindex(ifname).expect("ifindex"),
                };
                (ObjectKey::new("x", pod), att)
            })
            .collect();
        f(attached);
    })
    .expect("run in netns");
}

#[test]
#[ignore = "privileged: needs root (cargo xtask test runs it)"]
fn a_full_policy_map_fails_the_endpoint_closed_and_recovers_when_space_returns() {
    in_namespace("cap-pol", |attached| {
        let fs = PrivateBpffs::new("cap-pol").expect("bpffs");
        let opts = LoadOptions {
            policy_entries: Some(6),
            ..LoadOptions::default()
        };
        let dp = Dataplane::load_with(fs.path(), &opts).expect("load");
        let mut w = World {
            dp,
            syncer: Syncer::new(),
            attached,
        };
        // The two tables need 4 + 3 entries and the map holds 6: one cannot be written.
        let policies = [("a", vec![80, 81, 82]), ("b", vec![1, 2, 3, 4])];
        let text = |which: &[&str]| {
            let mut t = PODS.to_owned();
            for (app, ports) in policies.iter().filter(|(a, _)| which.contains(a)) {
                t.push_str(&policy(app, ports));
            }
            t
        };
        let r = w.sync(&text(&["a", "b"]));
        let states = [state(&r, "a"), state(&r, "b")];
        assert!(
            states.contains(&EndpointState::FailClosed)
                && states.contains(&EndpointState::Attached),
            "{r:?}"
        );
        assert!(
            r.problems.iter().any(|p| p.message.contains("allow table")),
            "reported: {r:?}"
        );
        let (full, ok) = if states[0] == EndpointState::FailClosed {
            ("a", "b")
        } else {
            ("b", "a")
        };
        let port_of = |pod: &str| if pod == "a" { 80 } else { 1 };
        assert_eq!(
            w.syn_to(full, port_of(full), 1000),
            SHOT,
            "fail closed, even on an allowed port"
        );
        assert_eq!(
            w.syn_to(ok, port_of(ok), 1001),
            OK,
            "the other endpoint keeps its policy"
        );
        // Space returns when the other policy goes away; the retry (every second in the agent)
        // then writes the missing table.
        let _first = w.sync(&text(&[full]));
        let r = w.sync(&text(&[full]));
        assert_eq!(state(&r, full), EndpointState::Attached, "{r:?}");
        assert_eq!(w.syn_to(full, port_of(full), 1002), OK);
        assert_eq!(w.syn_to(full, 83, 1003), SHOT);
        drop(fs);
    });
}

#[test]
#[ignore = "privileged: needs root (cargo xtask test runs it)"]
fn a_full_endpoint_table_fails_the_new_endpoint_closed_and_recovers() {
    in_namespace("cap-ep", |attached| {
        let fs = PrivateBpffs::new("cap-ep").expect("bpffs");
        let opts = LoadOptions {
            endpoint_entries: Some(1),
            ..LoadOptions::default()
        };
        let dp = Dataplane::load_with(fs.path(), &opts).expect("load");
        let mut w = World {
            dp,
            syncer: Syncer::new(),
            attached: attached.clone(),
        };
        let r = w.sync(PODS);
        let states = [state(&r, "a"), state(&r, "b")];
        assert!(
            states.contains(&EndpointState::Attached) && states.contains(&EndpointState::Error),
            "{r:?}"
        );
        let (full, ok) = if states[0] == EndpointState::Error {
            ("a", "b")
        } else {
            ("b", "a")
        };
        assert_eq!(
            w.syn_to(full, 80, 2000),
            SHOT,
            "a pod without a record fails closed"
        );
        assert_eq!(w.syn_to(ok, 80, 2001), OK, "not isolated");
        // The other pod goes away: space returns and the retry writes the waiting record.
        w.attached.remove(&ObjectKey::new("x", ok));
        let _first = w.sync(PODS);
        let r = w.sync(PODS);
        assert_eq!(state(&r, full), EndpointState::Attached, "{r:?}");
        assert_eq!(w.syn_to(full, 80, 2002), OK);
        drop(fs);
    });
}
