//! Audit mode on crafted packets (BPF_PROG_TEST_RUN): with `EP_AUDIT_*` set, a policy deny passes,
//! is reported as `Decision::Audited` with the would-be drop reason, and is counted in the audit
//! counters, not the drop counters. Malformed packets and fail-closed endpoints are never audited.
//! Privileged (root): run through `cargo xtask test`.

mod support;

use palisade::dataplane::{Hook, PortBlock};
use palisade_common::{
    conntrack::{TCP_ACK, TCP_SYN},
    craft::Frame,
    endpoint::{
        EP_AUDIT_EGRESS, EP_AUDIT_INGRESS, EP_EGRESS_ISOLATED, EP_FAIL_CLOSED, EP_INGRESS_ISOLATED,
    },
    proto,
    verdict::{Decision, Direction, DropReason},
};
use support::{v4, Fixture, OK, SHOT};

const POD: &str = "10.244.0.10";
const PEER: &str = "10.244.1.20";
const OTHER: &str = "10.244.1.21";
const PEER_ID: u32 = 400;

fn tcp(src: &str, dst: &str, sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    Frame::tcp(v4(src), v4(dst), sport, dport, flags).build()
}

/// The pod with `flags`; PEER may reach its TCP 80 (ingress table 10) and it may reach PEER's
/// TCP 80 (egress table 11).
fn fixture(label: &str, flags: u32) -> Fixture {
    let mut f = Fixture::new(label);
    f.endpoint(flags, 1);
    f.identity(&format!("{PEER}/32"), PEER_ID);
    let port80 = Some(PortBlock {
        port: 80,
        prefix_len: 16,
    });
    f.allow(10, PEER_ID, Some(proto::TCP), port80, 7);
    f.allow(11, PEER_ID, Some(proto::TCP), port80, 8);
    f
}

fn audited(f: &mut Fixture, reason: DropReason) -> u64 {
    f.dp.audited_counters()
        .expect("audit counters")
        .into_iter()
        .find(|(r, _)| *r == reason)
        .map_or(0, |(_, n)| n)
}

#[test]
#[ignore = "privileged: needs root (cargo xtask test runs it)"]
fn ingress_deny_passes_reported_and_counted_once_per_flow() {
    let mut f = fixture("audit-in", EP_INGRESS_ISOLATED | EP_AUDIT_INGRESS);
    assert_eq!(f.run(Hook::ToPod, &tcp(OTHER, POD, 40000, 80, TCP_SYN)), OK);
    let events = f.dp.drain_events().expect("events");
    assert_eq!(events.len(), 1, "{events:?}");
    let e = events[0];
    assert_eq!(e.decision, Decision::Audited as u8);
    assert_eq!(e.reason, DropReason::IngressPolicyDenied as u32);
    assert_eq!(e.direction, Direction::Ingress as u8);
    assert_eq!((e.sport, e.dport), (40000, 80));
    assert_eq!(audited(&mut f, DropReason::IngressPolicyDenied), 1);
    assert_eq!(f.count(DropReason::IngressPolicyDenied), 0, "not a drop");
    // The flow is tracked: its next packets and replies pass without further events.
    assert_eq!(f.run(Hook::ToPod, &tcp(OTHER, POD, 40000, 80, TCP_ACK)), OK);
    assert_eq!(
        f.run(Hook::FromPod, &tcp(POD, OTHER, 80, 40000, TCP_ACK)),
        OK
    );
    assert!(f.dp.drain_events().expect("events").is_empty());
    assert_eq!(audited(&mut f, DropReason::IngressPolicyDenied), 1);
    // Allowed traffic is not audited.
    assert_eq!(f.run(Hook::ToPod, &tcp(PEER, POD, 40001, 80, TCP_SYN)), OK);
    assert!(f.dp.drain_events().expect("events").is_empty());
}

#[test]
#[ignore = "privileged: needs root (cargo xtask test runs it)"]
fn egress_deny_passes_as_audit() {
    let mut f = fixture("audit-eg", EP_EGRESS_ISOLATED | EP_AUDIT_EGRESS);
    assert_eq!(
        f.run(Hook::FromPod, &tcp(POD, OTHER, 40000, 443, TCP_SYN)),
        OK
    );
    let events = f.dp.drain_events().expect("events");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].decision, Decision::Audited as u8);
    assert_eq!(events[0].reason, DropReason::EgressPolicyDenied as u32);
    assert_eq!(audited(&mut f, DropReason::EgressPolicyDenied), 1);
    assert_eq!(f.count(DropReason::EgressPolicyDenied), 0);
}

#[test]
#[ignore = "privileged: needs root (cargo xtask test runs it)"]
fn audit_of_one_direction_does_not_open_the_other() {
    let mut f = fixture(
        "audit-dir",
        EP_INGRESS_ISOLATED | EP_EGRESS_ISOLATED | EP_AUDIT_EGRESS,
    );
    assert_eq!(
        f.run(Hook::ToPod, &tcp(OTHER, POD, 40000, 80, TCP_SYN)),
        SHOT
    );
    assert_eq!(f.count(DropReason::IngressPolicyDenied), 1);
    assert_eq!(
        f.run(Hook::FromPod, &tcp(POD, OTHER, 40001, 80, TCP_SYN)),
        OK
    );
    let decisions: Vec<u8> =
        f.dp.drain_events()
            .expect("events")
            .iter()
            .map(|e| e.decision)
            .collect();
    assert_eq!(
        decisions,
        vec![Decision::Dropped as u8, Decision::Audited as u8]
    );
}

#[test]
#[ignore = "privileged: needs root (cargo xtask test runs it)"]
fn never_for_fail_closed_or_malformed() {
    let mut f = fixture(
        "audit-fc",
        EP_FAIL_CLOSED | EP_INGRESS_ISOLATED | EP_AUDIT_INGRESS | EP_AUDIT_EGRESS,
    );
    assert_eq!(
        f.run(Hook::ToPod, &tcp(PEER, POD, 40000, 80, TCP_SYN)),
        SHOT
    );
    assert_eq!(f.count(DropReason::EndpointFailClosed), 1);
    let mut g = fixture("audit-bad", EP_INGRESS_ISOLATED | EP_AUDIT_INGRESS);
    let truncated = tcp(PEER, POD, 1, 80, TCP_SYN)[..40].to_vec();
    assert_eq!(g.run(Hook::ToPod, &truncated), SHOT);
    assert_eq!(g.count(DropReason::Unparseable), 1);
    assert_eq!(audited(&mut g, DropReason::Unparseable), 0);
}

#[test]
#[ignore = "privileged: needs root (cargo xtask test runs it)"]
fn leaving_audit_mode_cuts_the_audited_flow() {
    let mut f = fixture("audit-off", EP_INGRESS_ISOLATED | EP_AUDIT_INGRESS);
    assert_eq!(f.run(Hook::ToPod, &tcp(OTHER, POD, 40000, 80, TCP_SYN)), OK);
    // The agent writes the record without the audit flag and with a new generation.
    f.endpoint(EP_INGRESS_ISOLATED, 2);
    assert_eq!(
        f.run(Hook::ToPod, &tcp(OTHER, POD, 40000, 80, TCP_ACK)),
        SHOT
    );
    assert_eq!(f.count(DropReason::Revoked), 1);
    // And entering it again lets the flow go on, reported once more.
    f.endpoint(EP_INGRESS_ISOLATED | EP_AUDIT_INGRESS, 3);
    let _ = f.dp.drain_events();
    assert_eq!(f.run(Hook::ToPod, &tcp(OTHER, POD, 40000, 80, TCP_ACK)), OK);
    let events = f.dp.drain_events().expect("events");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].decision, Decision::Audited as u8);
}
