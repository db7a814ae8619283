//! BPF_PROG_TEST_RUN tests: every verdict path and drop reason of the TC programs, on crafted
//! packets. Nothing is attached anywhere; each test has its own private bpffs and maps.
//! Privileged (root): run through `cargo xtask test`, or `cargo test -- --ignored` as root.

mod support;

use palisade::dataplane::{Hook, PortBlock};
use palisade_common::{
    conntrack::{TCP_ACK, TCP_SYN},
    craft::{arp, Frame, Quoted, L4},
    endpoint::{Config, EP_EGRESS_ISOLATED, EP_FAIL_CLOSED, EP_INGRESS_ISOLATED, MARK_DEFERRED},
    identity::{IDENTITY_ANY, IDENTITY_HOST},
    proto,
    verdict::DropReason,
};
use support::{v4, Fixture, OK, SHOT};

const POD: &str = "10.244.0.10";
const PEER: &str = "10.244.1.20";
const OTHER: &str = "10.244.1.21";
const PEER_ID: u32 = 400;

/// The pod (ifindex 1) with ingress isolated and PEER allowed on TCP 80.
fn ingress_fixture(label: &str) -> Fixture {
    let mut f = Fixture::new(label);
    f.endpoint(EP_INGRESS_ISOLATED, 1);
    f.identity(&format!("{PEER}/32"), PEER_ID);
    f.allow(
        10,
        PEER_ID,
        Some(proto::TCP),
        Some(PortBlock {
            port: 80,
            prefix_len: 16,
        }),
        7,
    );
    f
}

fn syn(src: &str, dst: &str, sport: u16, dport: u16) -> Vec<u8> {
    Frame::tcp(v4(src), v4(dst), sport, dport, TCP_SYN).build()
}

#[test]
#[ignore = "privileged: needs root (cargo xtask test runs it)"]
fn not_isolated_passes_everything() {
    let mut f = Fixture::new("notiso");
    f.endpoint(0, 1);
    assert_eq!(f.run(Hook::ToPod, &syn(OTHER, POD, 1000, 9999)), OK);
    assert_eq!(f.run(Hook::FromPod, &syn(POD, OTHER, 1000, 9999)), OK);
}

#[test]
#[ignore = "privileged: needs root (cargo xtask test runs it)"]
fn ingress_rule_allows_peer_and_port_only() {
    let mut f = ingress_fixture("ingress");
    assert_eq!(
        f.run(Hook::ToPod, &syn(PEER, POD, 40000, 80)),
        OK,
        "allowed peer and port"
    );
    assert_eq!(
        f.run(Hook::ToPod, &syn(PEER, POD, 40001, 81)),
        SHOT,
        "other port"
    );
    assert_eq!(
        f.run(Hook::ToPod, &syn(OTHER, POD, 40002, 80)),
        SHOT,
        "other peer"
    );
    let udp = Frame::new(
        v4(PEER),
        v4(POD),
        L4::Udp {
            sport: 5,
            dport: 80,
        },
    )
    .build();
    assert_eq!(f.run(Hook::ToPod, &udp), SHOT, "other protocol");
    assert_eq!(f.count(DropReason::IngressPolicyDenied), 3);
    // The pod's egress is not isolated.
    assert_eq!(f.run(Hook::FromPod, &syn(POD, OTHER, 1, 2)), OK);
}

#[test]
#[ignore = "privileged: needs root (cargo xtask test runs it)"]
fn egress_isolation_uses_destination() {
    let mut f = Fixture::new("egress");
    f.endpoint(EP_EGRESS_ISOLATED, 1);
    f.identity(&format!("{PEER}/32"), PEER_ID);
    f.allow(11, PEER_ID, Some(proto::UDP), None, 3);
    let to_peer = Frame::new(
        v4(POD),
        v4(PEER),
        L4::Udp {
            sport: 5,
            dport: 53,
        },
    )
    .build();
    let to_other = Frame::new(
        v4(POD),
        v4(OTHER),
        L4::Udp {
            sport: 5,
            dport: 53,
        },
    )
    .build();
    assert_eq!(f.run(Hook::FromPod, &to_peer), OK);
    assert_eq!(f.run(Hook::FromPod, &to_other), SHOT);
    assert_eq!(f.count(DropReason::EgressPolicyDenied), 1);
}

#[test]
#[ignore = "privileged: needs root (cargo xtask test runs it)"]
fn port_ranges_are_prefix_blocks() {
    let mut f = Fixture::new("ranges");
    f.endpoint(EP_INGRESS_ISOLATED, 1);
    f.identity(&format!("{PEER}/32"), PEER_ID);
    // 8000-8007 is one /13 block.
    f.allow(
        10,
        PEER_ID,
        Some(proto::TCP),
        Some(PortBlock {
            port: 8000,
            prefix_len: 13,
        }),
        1,
    );
    for (port, want) in [
        (7999, SHOT),
        (8000, OK),
        (8005, OK),
        (8007, OK),
        (8008, SHOT),
    ] {
        assert_eq!(
            f.run(Hook::ToPod, &syn(PEER, POD, 1000 + port, port)),
            want,
            "port {port}"
        );
    }
}

#[test]
#[ignore = "privileged: needs root (cargo xtask test runs it)"]
fn any_peer_and_all_protocols() {
    let mut f = Fixture::new("any");
    f.endpoint(EP_INGRESS_ISOLATED, 1);
    f.allow(10, IDENTITY_ANY, None, None, 2);
    let sctp = Frame::new(
        v4(OTHER),
        v4(POD),
        L4::Sctp {
            sport: 9,
            dport: 81,
            chunk: 1,
        },
    )
    .build();
    assert_eq!(f.run(Hook::ToPod, &sctp), OK);
    assert_eq!(f.run(Hook::ToPod, &syn(OTHER, POD, 1, 443)), OK);
}

#[test]
#[ignore = "privileged: needs root (cargo xtask test runs it)"]
fn sctp_ports_are_policed() {
    let mut f = Fixture::new("sctp");
    f.endpoint(EP_INGRESS_ISOLATED, 1);
    f.identity(&format!("{PEER}/32"), PEER_ID);
    f.allow(
        10,
        PEER_ID,
        Some(proto::SCTP),
        Some(PortBlock {
            port: 80,
            prefix_len: 16,
        }),
        1,
    );
    let init = |dport| {
        Frame::new(
            v4(PEER),
            v4(POD),
            L4::Sctp {
                sport: 9,
                dport,
                chunk: 1,
            },
        )
        .build()
    };
    assert_eq!(f.run(Hook::ToPod, &init(80)), OK);
    assert_eq!(f.run(Hook::ToPod, &init(81)), SHOT);
}

#[test]
#[ignore = "privileged: needs root (cargo xtask test runs it)"]
fn replies_pass_through_conntrack_and_unsolicited_do_not() {
    let mut f = Fixture::new("ct");
    f.endpoint(EP_INGRESS_ISOLATED | EP_EGRESS_ISOLATED, 1);
    f.identity(&format!("{PEER}/32"), PEER_ID);
    f.allow(
        11,
        PEER_ID,
        Some(proto::TCP),
        Some(PortBlock {
            port: 80,
            prefix_len: 16,
        }),
        1,
    );
    assert_eq!(
        f.run(Hook::FromPod, &syn(POD, PEER, 40000, 80)),
        OK,
        "allowed egress"
    );
    let synack = Frame::tcp(v4(PEER), v4(POD), 80, 40000, TCP_SYN | TCP_ACK).build();
    assert_eq!(
        f.run(Hook::ToPod, &synack),
        OK,
        "reply passes isolated ingress"
    );
    assert_eq!(
        f.run(Hook::ToPod, &syn(PEER, POD, 80, 40001)),
        SHOT,
        "unsolicited"
    );
    let udp = Frame::new(
        v4(POD),
        v4(PEER),
        L4::Udp {
            sport: 7,
            dport: 53,
        },
    )
    .build();
    assert_eq!(
        f.run(Hook::FromPod, &udp),
        SHOT,
        "UDP not allowed by the TCP rule"
    );
}

#[test]
#[ignore = "privileged: needs root (cargo xtask test runs it)"]
fn policy_change_revokes_established_flow_within_one_packet() {
    let mut f = Fixture::new("revoke");
    f.endpoint(EP_INGRESS_ISOLATED, 1);
    f.identity(&format!("{PEER}/32"), PEER_ID);
    f.allow(
        10,
        PEER_ID,
        Some(proto::TCP),
        Some(PortBlock {
            port: 80,
            prefix_len: 16,
        }),
        1,
    );
    assert_eq!(f.run(Hook::ToPod, &syn(PEER, POD, 40000, 80)), OK);
    let ack = Frame::tcp(v4(PEER), v4(POD), 40000, 80, TCP_ACK).build();
    assert_eq!(f.run(Hook::ToPod, &ack), OK, "tracked");
    // New policy: table 20 is empty; the flip bumps the generation.
    let mut ep = f.dp.endpoint(1).expect("read").expect("present");
    ep.ingress_table = 20;
    ep.generation = 2;
    f.dp.set_endpoint(1, &ep).expect("flip");
    assert_eq!(
        f.run(Hook::ToPod, &ack),
        SHOT,
        "first packet after the change is cut"
    );
    assert_eq!(f.count(DropReason::Revoked), 1);
    // A still-allowed flow survives a flip whose new table allows it.
    f.allow(20, PEER_ID, Some(proto::TCP), None, 9);
    assert_eq!(f.run(Hook::ToPod, &syn(PEER, POD, 40010, 80)), OK);
    ep.generation = 3;
    f.dp.set_endpoint(1, &ep).expect("flip");
    let ack2 = Frame::tcp(v4(PEER), v4(POD), 40010, 80, TCP_ACK).build();
    assert_eq!(f.run(Hook::ToPod, &ack2), OK);
}

#[test]
#[ignore = "privileged: needs root (cargo xtask test runs it)"]
fn midstream_flow_older_than_programs_is_picked_up_only_if_allowed() {
    let mut f = ingress_fixture("midstream");
    f.endpoint(EP_INGRESS_ISOLATED | EP_EGRESS_ISOLATED, 1);
    // The pod serves PEER on port 80 (ingress allowed): its mid-stream reply passes its egress.
    let reply = Frame::tcp(v4(POD), v4(PEER), 80, 40000, TCP_ACK).build();
    assert_eq!(f.run(Hook::FromPod, &reply), OK);
    // A mid-stream packet on a port policy never allowed is dropped.
    let bad = Frame::tcp(v4(POD), v4(PEER), 81, 40000, TCP_ACK).build();
    assert_eq!(f.run(Hook::FromPod, &bad), SHOT);
}

#[test]
#[ignore = "privileged: needs root (cargo xtask test runs it)"]
fn arp_and_neighbour_discovery_always_pass() {
    let mut f = Fixture::new("arp");
    f.endpoint(EP_INGRESS_ISOLATED | EP_EGRESS_ISOLATED | EP_FAIL_CLOSED, 1);
    assert_eq!(f.run(Hook::ToPod, &arp()), OK);
    let ns = Frame::new(v4("fd00::1"), v4("fd00::2"), L4::NeighbourSolicitation).build();
    assert_eq!(f.run(Hook::FromPod, &ns), OK);
}

#[test]
#[ignore = "privileged: needs root (cargo xtask test runs it)"]
fn fail_closed_endpoint_drops_with_its_reason() {
    let mut f = Fixture::new("failclosed");
    f.endpoint(EP_FAIL_CLOSED, 1);
    f.allow(10, IDENTITY_ANY, None, None, 1);
    assert_eq!(f.run(Hook::ToPod, &syn(PEER, POD, 1, 80)), SHOT);
    assert_eq!(f.count(DropReason::EndpointFailClosed), 1);
}

#[test]
#[ignore = "privileged: needs root (cargo xtask test runs it)"]
fn malformed_packets_fail_closed_in_isolated_directions() {
    let mut f = Fixture::new("malformed");
    f.endpoint(EP_INGRESS_ISOLATED, 1);
    f.allow(10, IDENTITY_ANY, None, None, 1);
    let mut bad_ihl = syn(PEER, POD, 1, 80);
    bad_ihl[14] = 0x43;
    let truncated = syn(PEER, POD, 1, 80)[..40].to_vec();
    let mut bad_version = syn(PEER, POD, 1, 80);
    bad_version[14] = 0x55;
    let mut deep = Frame::new(v4("fd00::1"), v4("fd00::2"), L4::Udp { sport: 1, dport: 2 });
    deep.ext_headers = vec![60; 9];
    for (name, frame) in [
        ("bad IHL", bad_ihl.clone()),
        ("truncated TCP", truncated.clone()),
        ("bad version", bad_version),
        ("too many IPv6 extension headers", deep.build()),
    ] {
        assert_eq!(f.run(Hook::ToPod, &frame), SHOT, "{name}");
    }
    assert_eq!(f.count(DropReason::Unparseable), 4);
    // The same garbage passes a direction that is not isolated.
    assert_eq!(f.run(Hook::FromPod, &truncated), OK);
}

#[test]
#[ignore = "privileged: needs root (cargo xtask test runs it)"]
fn ipv6_with_extension_headers_is_policed_on_ports() {
    let mut f = Fixture::new("v6ext");
    f.endpoint(EP_INGRESS_ISOLATED, 1);
    f.identity("fd00:10:244:1::20/128", PEER_ID);
    f.allow(
        10,
        PEER_ID,
        Some(proto::UDP),
        Some(PortBlock {
            port: 81,
            prefix_len: 16,
        }),
        1,
    );
    let mut ok = Frame::new(
        v4("fd00:10:244:1::20"),
        v4("fd00:10:244::10"),
        L4::Udp {
            sport: 5,
            dport: 81,
        },
    );
    ok.ext_headers = vec![0, 60, 43];
    assert_eq!(f.run(Hook::ToPod, &ok.build()), OK);
    let mut bad = ok.clone();
    bad.l4 = L4::Udp {
        sport: 5,
        dport: 82,
    };
    assert_eq!(f.run(Hook::ToPod, &bad.build()), SHOT);
}

#[test]
#[ignore = "privileged: needs root (cargo xtask test runs it)"]
fn later_fragments_follow_their_first_fragment() {
    let mut f = ingress_fixture("frag");
    for (id, dport, want) in [(11, 80, OK), (12, 81, SHOT)] {
        let mut first = Frame::tcp(v4(PEER), v4(POD), 40000, dport, TCP_SYN);
        first.fragment = Some((id, 0, true));
        assert_eq!(
            f.run(Hook::ToPod, &first.build()),
            want,
            "first fragment id {id}"
        );
        let mut later = first.clone();
        later.fragment = Some((id, 3, false));
        assert_eq!(
            f.run(Hook::ToPod, &later.build()),
            want,
            "later fragment id {id}"
        );
    }
    assert_eq!(f.count(DropReason::FragmentUnknown), 1);
}

#[test]
#[ignore = "privileged: needs root (cargo xtask test runs it)"]
fn icmp_errors_pass_only_for_tracked_flows() {
    let mut f = ingress_fixture("icmperr");
    f.endpoint(EP_INGRESS_ISOLATED | EP_EGRESS_ISOLATED, 1);
    f.allow(11, PEER_ID, Some(proto::UDP), None, 4);
    let out = Frame::new(
        v4(POD),
        v4(PEER),
        L4::Udp {
            sport: 5000,
            dport: 53,
        },
    )
    .build();
    assert_eq!(f.run(Hook::FromPod, &out), OK);
    let related = Quoted {
        src: v4(POD),
        dst: v4(PEER),
        protocol: proto::UDP,
        sport: 5000,
        dport: 53,
    };
    let err = Frame::new(v4(PEER), v4(POD), L4::IcmpError { inner: related }).build();
    assert_eq!(f.run(Hook::ToPod, &err), OK, "related error");
    let unrelated = Quoted {
        sport: 5001,
        ..related
    };
    let err2 = Frame::new(v4(PEER), v4(POD), L4::IcmpError { inner: unrelated }).build();
    assert_eq!(f.run(Hook::ToPod, &err2), SHOT, "unrelated error");
    assert_eq!(f.count(DropReason::IcmpUnrelated), 1);
}

#[test]
#[ignore = "privileged: needs root (cargo xtask test runs it)"]
fn node_traffic_is_allowed_by_default_and_can_be_turned_off() {
    let mut f = Fixture::new("host");
    f.endpoint(EP_INGRESS_ISOLATED, 1);
    f.identity("10.244.0.1/32", IDENTITY_HOST);
    assert_eq!(f.run(Hook::ToPod, &syn("10.244.0.1", POD, 1, 8080)), OK);
    f.dp.set_config(Config {
        flags: 0,
        allow_events_per_sec: 0,
    })
    .expect("config");
    assert_eq!(f.run(Hook::ToPod, &syn("10.244.0.1", POD, 2, 8080)), SHOT);
}

#[test]
#[ignore = "privileged: needs root (cargo xtask test runs it)"]
fn service_traffic_is_decided_after_translation() {
    let mut f = Fixture::new("svc");
    // Source pod: another endpoint (ifindex 1000, slot 7), egress isolated, may reach PEER_ID:8080.
    let src = palisade_common::endpoint::Endpoint {
        slot: 7,
        ingress_table: 30,
        egress_table: 31,
        flags: EP_EGRESS_ISOLATED,
        generation: 1,
        identity: 500,
        identity6: 500,
        _pad: 0,
    };
    f.dp.set_endpoint(1000, &src).expect("src endpoint");
    f.allow(
        31,
        PEER_ID,
        Some(proto::TCP),
        Some(PortBlock {
            port: 8080,
            prefix_len: 16,
        }),
        5,
    );
    // Destination pod: the test-run endpoint (ifindex 1), identity PEER_ID, ingress open.
    let mut dst = f.endpoint(0, 1);
    dst.identity = PEER_ID;
    dst.identity6 = PEER_ID;
    f.dp.set_endpoint(1, &dst).expect("dst endpoint");
    let cip: std::net::IpAddr = "10.96.0.10".parse().expect("ip");
    f.dp.add_service(cip, 80, proto::TCP).expect("service");
    // At the destination veth, after DNAT, with the source's slot in the mark.
    let mark = MARK_DEFERRED | (7 << 16) | 0x4000;
    let translated = syn(OTHER, POD, 40000, 8080);
    let out =
        f.dp.test_run(Hook::ToPod, &translated, mark, 1)
            .expect("run");
    assert_eq!(out.action, OK, "source egress allows the backend port");
    assert_eq!(
        out.mark, 0x4000,
        "Palisade's bits cleared, kube-proxy's kept"
    );
    let wrong_port = syn(OTHER, POD, 40001, 9090);
    assert_eq!(
        f.dp.test_run(Hook::ToPod, &wrong_port, mark, 1)
            .expect("run")
            .action,
        SHOT
    );
    assert_eq!(f.count(DropReason::EgressPolicyDenied), 1);
}

#[test]
#[ignore = "privileged: needs root (cargo xtask test runs it)"]
fn packets_to_a_cluster_ip_are_deferred_with_the_source_slot() {
    let mut f = Fixture::new("defer");
    let ep = f.endpoint(EP_EGRESS_ISOLATED, 1);
    f.dp.add_service("10.96.0.10".parse().expect("ip"), 80, proto::TCP)
        .expect("service");
    let to_service = syn(POD, "10.96.0.10", 40000, 80);
    let out =
        f.dp.test_run(Hook::FromPod, &to_service, 0x8000, 1)
            .expect("run");
    assert_eq!(out.action, OK);
    assert_eq!(out.mark, 0x8000 | MARK_DEFERRED | (ep.slot << 16));
    // Not a Service port: decided here, and denied.
    assert_eq!(
        f.run(Hook::FromPod, &syn(POD, "10.96.0.10", 40001, 81)),
        SHOT
    );
    // The uplink completes a deferred verdict for traffic leaving the node.
    let leaving = syn(POD, PEER, 40002, 8080);
    let mark = MARK_DEFERRED | (ep.slot << 16);
    assert_eq!(
        f.dp.test_run(Hook::Uplink, &leaving, mark, 1)
            .expect("run")
            .action,
        SHOT
    );
    f.identity(&format!("{PEER}/32"), PEER_ID);
    f.allow(11, PEER_ID, Some(proto::TCP), None, 6);
    assert_eq!(
        f.dp.test_run(Hook::Uplink, &leaving, mark, 1)
            .expect("run")
            .action,
        OK
    );
    assert_eq!(
        f.dp.test_run(Hook::Uplink, &leaving, 0, 1)
            .expect("run")
            .action,
        OK,
        "unmarked"
    );
}

#[test]
#[ignore = "privileged: needs root (cargo xtask test runs it)"]
fn drops_are_reported_as_events_and_allows_only_when_enabled_and_rate_limited() {
    use palisade_common::{
        endpoint::{CFG_ALLOW_EVENTS, CFG_ALLOW_HOST},
        verdict::{Decision, Direction},
    };
    let mut f = ingress_fixture("events");
    assert_eq!(f.run(Hook::ToPod, &syn(OTHER, POD, 40000, 80)), SHOT);
    assert_eq!(f.run(Hook::ToPod, &syn(PEER, POD, 40001, 80)), OK);
    let events = f.dp.drain_events().expect("events");
    assert_eq!(
        events.len(),
        1,
        "only the drop is reported by default: {events:?}"
    );
    let e = events[0];
    assert_eq!(
        (e.ifindex, e.sport, e.dport, e.protocol),
        (1, 40000, 80, proto::TCP)
    );
    assert_eq!(e.direction, Direction::Ingress as u8);
    assert_eq!(e.decision, Decision::Dropped as u8);
    assert_eq!(e.reason, DropReason::IngressPolicyDenied as u32);
    assert_eq!(e.src, palisade_common::v4_mapped([10, 244, 1, 21]));
    // Allow events: on, at most 3 per second per CPU, and only for new flows.
    let cfg = Config {
        flags: CFG_ALLOW_HOST | CFG_ALLOW_EVENTS,
        allow_events_per_sec: 3,
    };
    f.dp.set_config(cfg).expect("config");
    for sport in 41000..41010 {
        assert_eq!(f.run(Hook::ToPod, &syn(PEER, POD, sport, 80)), OK);
    }
    let allows = f.dp.drain_events().expect("events");
    assert_eq!(allows.len(), 3, "rate-limited to 3: {allows:?}");
    assert!(allows
        .iter()
        .all(|e| e.decision == Decision::AllowedByRule as u8 && e.rule_id == 7));
}

#[test]
#[ignore = "privileged: needs root (cargo xtask test runs it)"]
fn a_full_conntrack_table_evicts_and_never_fails_open() {
    use palisade::dataplane::{Dataplane, LoadOptions, PrivateBpffs};
    let fs = PrivateBpffs::new("ctfull").expect("bpffs");
    let opts = LoadOptions {
        conntrack_entries: Some(8),
        ..LoadOptions::default()
    };
    let dp = Dataplane::load_with(fs.path(), &opts).expect("load");
    let mut f = Fixture::from_parts(dp, fs);
    f.endpoint(EP_INGRESS_ISOLATED | EP_EGRESS_ISOLATED, 1);
    f.identity(&format!("{PEER}/32"), PEER_ID);
    f.allow(
        11,
        PEER_ID,
        Some(proto::TCP),
        Some(PortBlock {
            port: 80,
            prefix_len: 16,
        }),
        1,
    );
    // Forty allowed flows through an eight-entry table.
    for sport in 30000..30040 {
        assert_eq!(
            f.run(Hook::FromPod, &syn(POD, PEER, sport, 80)),
            OK,
            "new allowed flow {sport}"
        );
    }
    // The newest flows are tracked: their replies pass.
    let synack = |sport| Frame::tcp(v4(PEER), v4(POD), 80, sport, TCP_SYN | TCP_ACK).build();
    assert_eq!(f.run(Hook::ToPod, &synack(30039)), OK);
    // An evicted flow is checked again: its reply is picked up only because policy allows it.
    assert_eq!(f.run(Hook::ToPod, &synack(30000)), OK);
    // Nothing unsolicited gets in, and denied flows stay denied, with the table full.
    assert_eq!(f.run(Hook::ToPod, &syn(PEER, POD, 80, 50000)), SHOT);
    assert_eq!(f.run(Hook::FromPod, &syn(POD, OTHER, 50001, 80)), SHOT);
    assert_eq!(f.run(Hook::FromPod, &syn(POD, PEER, 50002, 81)), SHOT);
}

#[test]
#[ignore = "privileged: needs root (cargo xtask test runs it)"]
fn portless_protocols_are_denied_unless_a_rule_allows_all_protocols() {
    let mut f = ingress_fixture("gre");
    let gre = Frame::new(v4(PEER), v4(POD), L4::Raw(47)).build();
    assert_eq!(f.run(Hook::ToPod, &gre), SHOT);
    assert_eq!(f.count(DropReason::ProtocolDenied), 1);
    f.allow(10, PEER_ID, None, None, 8);
    assert_eq!(
        f.run(Hook::ToPod, &gre),
        OK,
        "a rule without ports allows every protocol"
    );
}

#[test]
#[ignore = "privileged: needs root (cargo xtask test runs it)"]
fn uninstall_removes_every_pin() {
    use palisade::dataplane::{Dataplane, PrivateBpffs};
    let fs = PrivateBpffs::new("uninstall").expect("bpffs");
    let dp = Dataplane::load(fs.path()).expect("load");
    let root = dp.pin_root().to_owned();
    assert!(
        root.join("maps").join("PAL_EP_V1").exists(),
        "maps are pinned"
    );
    dp.uninstall().expect("uninstall");
    assert!(!root.exists(), "{} still exists", root.display());
    // A new load starts from empty maps.
    let mut dp = Dataplane::load(fs.path()).expect("reload");
    assert!(dp.existing().expect("existing").endpoints.is_empty());
}
