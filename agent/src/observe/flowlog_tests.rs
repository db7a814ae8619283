//! Unit tests of the flow log: naming, verdicts, rate limit, rotation.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use palisade_common::{
    event::VerdictEvent,
    verdict::{Decision, Direction, DropReason},
};

use super::*;
use crate::{
    compiler::{Direction as RuleDirection, RuleRef},
    model::ObjectKey,
    observe::names::{EndpointName, Names},
};

fn v4(a: [u8; 4]) -> [u8; 16] {
    palisade_common::v4_mapped(a)
}

fn names() -> Names {
    let mut n = Names {
        node: "node-0".into(),
        ..Names::default()
    };
    n.rules.insert(
        3,
        RuleRef::network_policy(ObjectKey::new("x", "a-from-b"), RuleDirection::Ingress, 0),
    );
    n.endpoints.insert(
        7,
        EndpointName {
            pod: ObjectKey::new("x", "a"),
            ingress_isolated_by: vec![ObjectKey::new("x", "a-from-b")],
            egress_isolated_by: Vec::new(),
        },
    );
    n.pods
        .insert("10.0.0.1".parse().unwrap(), ObjectKey::new("x", "a"));
    n.pods
        .insert("10.0.0.2".parse().unwrap(), ObjectKey::new("x", "b"));
    n
}

fn event(decision: Decision, reason: DropReason, rule_id: u32) -> VerdictEvent {
    VerdictEvent {
        timestamp_ns: 5_000_000_000,
        src: v4([10, 0, 0, 2]),
        dst: v4([10, 0, 0, 1]),
        ifindex: 7,
        rule_id,
        reason: reason as u32,
        peer_identity: 300,
        sport: 40000,
        dport: 80,
        protocol: 6,
        direction: Direction::Ingress as u8,
        decision: decision as u8,
        _pad: 0,
    }
}

fn at_epoch(ns: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(ns)
}

#[test]
fn deny_names_pods_and_isolating_policies() {
    let r = record(
        &event(Decision::Dropped, DropReason::IngressPolicyDenied, 0),
        &names(),
        &at_epoch,
    );
    assert_eq!(r.verdict, "deny");
    assert_eq!(r.direction, "ingress");
    assert_eq!(r.endpoint.as_deref(), Some("x/a"));
    assert_eq!(r.src_pod.as_deref(), Some("x/b"));
    assert_eq!(r.dst_pod.as_deref(), Some("x/a"));
    assert_eq!(r.protocol, "TCP");
    assert_eq!(r.reason, "ingress_policy_denied");
    assert_eq!(r.policies, vec!["x/a-from-b".to_owned()]);
    assert_eq!(r.rule, None);
    assert_eq!(r.time, "1970-01-01T00:00:05.000Z");
    let line = serde_json::to_string(&r).unwrap();
    assert!(line.contains(r#""src_ip":"10.0.0.2""#), "{line}");
}

#[test]
fn allow_names_the_rule_and_audit_keeps_the_reason() {
    let r = record(
        &event(Decision::AllowedByRule, DropReason::None, 3),
        &names(),
        &at_epoch,
    );
    assert_eq!(r.verdict, "allow");
    assert_eq!(r.rule.as_deref(), Some("x/a-from-b ingress[0]"));
    assert_eq!(r.allowed_by, Some("rule"));
    let a = record(
        &event(Decision::Audited, DropReason::IngressPolicyDenied, 0),
        &names(),
        &at_epoch,
    );
    assert_eq!(a.verdict, "audit");
    assert_eq!(a.reason, "ingress_policy_denied");
    assert_eq!(a.policies, vec!["x/a-from-b".to_owned()]);
}

#[test]
fn unknown_endpoint_and_ipv6_addresses() {
    let mut ev = event(Decision::Dropped, DropReason::EgressPolicyDenied, 0);
    ev.ifindex = 99;
    ev.src = "fd00::1".parse::<std::net::Ipv6Addr>().unwrap().octets();
    ev.protocol = 58;
    let r = record(&ev, &names(), &at_epoch);
    assert_eq!(r.endpoint, None);
    assert!(r.policies.is_empty());
    assert_eq!(r.src_ip.to_string(), "fd00::1");
    assert_eq!(r.protocol, "ICMPv6");
}

#[test]
fn rate_limiter_refills() {
    let mut l = RateLimiter::new(2);
    let t = Instant::now();
    assert!(l.allow(t));
    assert!(l.allow(t));
    assert!(!l.allow(t));
    assert!(l.allow(t + Duration::from_millis(600)));
    assert!(RateLimiter::new(0).allow(t), "0 = unlimited");
}

#[test]
fn file_rotates_by_size_and_counts_drops() {
    let dir = std::env::temp_dir().join(format!("palisade-flowlog-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let path = dir.join("flows.jsonl");
    let target = Target::File {
        path: path.clone(),
        max_bytes: 600,
        keep: 2,
    };
    let mut log = FlowLog::new(target, 5).unwrap();
    let rec = record(
        &event(Decision::Dropped, DropReason::IngressPolicyDenied, 0),
        &names(),
        &at_epoch,
    );
    let now = Instant::now();
    let written = (0..8).filter(|_| log.log(&rec, now).unwrap()).count();
    log.flush().unwrap();
    assert_eq!(written, 5);
    assert_eq!(log.stats.dropped, 3);
    let current = std::fs::read_to_string(&path).unwrap();
    let rotated = std::fs::read_to_string(dir.join("flows.jsonl.1")).unwrap();
    assert!(current.len() <= 600 && rotated.len() <= 600);
    let lines = current.lines().count()
        + rotated.lines().count()
        + std::fs::read_to_string(dir.join("flows.jsonl.2")).map_or(0, |s| s.lines().count());
    assert_eq!(lines, 5);
    for line in current.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["verdict"], "deny");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn with_cluster_rules() -> Names {
    let mut n = names();
    let cluster = |tier, index, rule_name: Option<&str>| RuleRef {
        policy: ObjectKey::new("", "admin-guard"),
        direction: RuleDirection::Ingress,
        index,
        tier,
        rule_name: rule_name.map(str::to_owned),
    };
    n.rules
        .insert(11, cluster(crate::compiler::Tier::Admin, 1, Some("no-b")));
    n.rules
        .insert(12, cluster(crate::compiler::Tier::Baseline, 0, None));
    n
}

#[test]
fn cluster_policy_deny_and_accept_name_the_policy_and_rule() {
    let n = with_cluster_rules();
    let d = record(
        &event(Decision::Dropped, DropReason::AdminPolicyDenied, 11),
        &n,
        &at_epoch,
    );
    assert_eq!(d.verdict, "deny");
    assert_eq!(d.reason, "admin_policy_denied");
    assert_eq!(
        d.policies,
        vec!["ClusterNetworkPolicy/admin-guard".to_owned()]
    );
    assert_eq!(
        d.rule.as_deref(),
        Some(r#"ClusterNetworkPolicy admin-guard (Admin) ingress[1] "no-b""#)
    );
    assert_eq!(d.tier, Some("admin"));
    let a = record(
        &event(Decision::AllowedByRule, DropReason::None, 12),
        &n,
        &at_epoch,
    );
    assert_eq!(a.verdict, "allow");
    assert_eq!(
        a.policies,
        vec!["ClusterNetworkPolicy/admin-guard".to_owned()]
    );
    assert_eq!(
        a.rule.as_deref(),
        Some("ClusterNetworkPolicy admin-guard (Baseline) ingress[0]")
    );
    assert_eq!(a.tier, Some("baseline"));
    // A NetworkPolicy deny (no rule) still names the isolating policies and no rule.
    let np = record(
        &event(Decision::Dropped, DropReason::IngressPolicyDenied, 0),
        &n,
        &at_epoch,
    );
    assert_eq!(np.policies, vec!["x/a-from-b".to_owned()]);
    assert_eq!((np.rule, np.tier), (None, None));
}

#[test]
fn metrics_count_cluster_policy_verdicts_by_rule() {
    let n = with_cluster_rules();
    let m = crate::observe::metrics::Metrics::new();
    m.cluster_verdict(&n.rules[&11], "deny");
    m.cluster_verdict(&n.rules[&12], "allow");
    let text = m.render();
    assert!(
        text.contains(r#"palisade_cluster_policy_verdicts_total{tier="admin",policy="admin-guard",direction="ingress",rule="no-b",verdict="deny"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"palisade_cluster_policy_verdicts_total{tier="baseline",policy="admin-guard",direction="ingress",rule="ingress[0]",verdict="allow"} 1"#),
        "{text}"
    );
}
