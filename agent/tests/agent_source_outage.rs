//! The manifest directory going away is a source outage, not an empty cluster: the agent keeps
//! running and enforcing the last state it loaded (it used to exit on the read error), applies
//! what changed once the directory is back, and an agent (re)started while the directory is
//! missing leaves the pinned state alone until it can load. Privileged (root): run through
//! `cargo xtask test`.

mod support;

use std::{path::Path, time::Duration};

use palisade_tests::{agent::write_atomic, CniMode, Family, IpFamily, Proto};
use serde_json::json;
use support::nodes::{agent_bin, check, setup, WAIT};

fn policy(allowed: &[&str]) -> serde_json::Value {
    json!({"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy",
           "metadata":{"namespace":"x","name":"a-in"},
           "spec":{"podSelector":{"matchLabels":{"app":"a"}},
                   "ingress":[{"from":[{"podSelector":{"matchExpressions":[{"key":"app","operator":"In","values":allowed}]}}],
                               "ports":[{"port":80}]}]}})
}

fn rename(from: &Path, to: &Path) {
    std::fs::rename(from, to)
        .unwrap_or_else(|e| panic!("{} -> {}: {e}", from.display(), to.display()));
}

#[test]
#[ignore = "privileged: needs root (cargo xtask test runs it)"]
fn manifest_directory_outage_keeps_the_last_state() {
    let mut s = setup("srcout", Family::Ipv4, CniMode::Bridge);
    s.manifests.put("np-a-in", &policy(&["b"])).expect("policy");
    s.apply();
    let fam = IpFamily::Ipv4;
    let before = [
        ("b", "a", Proto::Tcp, 80, true),
        ("c", "a", Proto::Tcp, 80, false),
    ];
    check(&s, fam, &before);
    let local = |n: usize| -> Vec<String> {
        s.pods
            .iter()
            .filter(|p| p.node() == n)
            .map(|p| p.key())
            .collect()
    };
    let (local0, local1) = (local(0), local(1));

    // The directory disappears; the agents keep running and enforcing.
    let dir = s.manifests.dir().to_owned();
    let away = dir.with_extension("away");
    rename(&dir, &away);
    std::thread::sleep(Duration::from_millis(1500));
    for (agent, pods) in s.agents.iter_mut().zip([&local0, &local1]) {
        agent
            .wait_applied(1, pods, Duration::from_secs(2))
            .unwrap_or_else(|e| panic!("agent gone during the outage: {e}\n{}", agent.log()));
        assert!(
            agent
                .log()
                .contains("manifest directory missing or unreadable"),
            "{}",
            agent.log()
        );
    }
    check(&s, fam, &before);

    // A change made while the source is unavailable (c allowed) is not seen yet.
    write_atomic(
        &away.join("np-a-in.json"),
        policy(&["b", "c"]).to_string().as_bytes(),
    )
    .expect("policy");
    std::thread::sleep(Duration::from_millis(500));
    check(&s, fam, &before);

    // Agent 0 restarts during the outage: it adopts the pins and applies nothing.
    s.agents[0].stop(libc::SIGKILL).expect("kill");
    s.agents[0]
        .restart(&s.cluster, agent_bin(), &s.manifests)
        .expect("restart");
    std::thread::sleep(Duration::from_millis(1500));
    check(&s, fam, &before);

    // The directory is back: the change made during the outage applies on both nodes.
    rename(&away, &dir);
    let rev = s.manifests.commit().expect("commit");
    for (agent, pods) in s.agents.iter_mut().zip([&local0, &local1]) {
        agent
            .wait_applied(rev, pods, WAIT)
            .unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
    }
    check(
        &s,
        fam,
        &[
            ("b", "a", Proto::Tcp, 80, true),
            ("c", "a", Proto::Tcp, 80, true),
        ],
    );
}
