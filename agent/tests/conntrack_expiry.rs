//! The agent's conntrack sweep: flows whose timeout has passed are removed from the table (the
//! programs only drop an expired entry when a packet of its flow looks it up), live flows stay.
//! BPF_PROG_TEST_RUN on crafted packets, private bpffs; privileged (root).

mod support;

use palisade::dataplane::Hook;
use palisade_common::{
    conntrack::{TCP_ACK, TCP_SYN},
    craft::{Frame, L4},
    endpoint::{EP_EGRESS_ISOLATED, EP_INGRESS_ISOLATED},
};
use support::{v4, Fixture, OK};

const POD: &str = "10.244.0.10";
const PEER: &str = "10.244.1.20";
const PEER_ID: u32 = 400;
const SEC: u64 = 1_000_000_000;

/// `CLOCK_MONOTONIC`, the clock the programs stamp flows with.
fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid, writable timespec.
    assert_eq!(
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) },
        0
    );
    u64::try_from(ts.tv_sec).unwrap() * SEC + u64::try_from(ts.tv_nsec).unwrap()
}

#[test]
#[ignore = "privileged: needs root (cargo xtask test runs it)"]
fn the_sweep_removes_timed_out_flows_and_keeps_live_ones() {
    let mut f = Fixture::new("ctsweep");
    f.endpoint(EP_INGRESS_ISOLATED | EP_EGRESS_ISOLATED, 1);
    f.identity(&format!("{PEER}/32"), PEER_ID);
    f.allow(11, PEER_ID, None, None, 1);
    // An established TCP flow (timeout 6 h) and a UDP flow without a reply (30 s).
    let syn = Frame::tcp(v4(POD), v4(PEER), 40000, 80, TCP_SYN).build();
    assert_eq!(f.run(Hook::FromPod, &syn), OK);
    let synack = Frame::tcp(v4(PEER), v4(POD), 80, 40000, TCP_SYN | TCP_ACK).build();
    assert_eq!(f.run(Hook::ToPod, &synack), OK);
    let udp = Frame::new(
        v4(POD),
        v4(PEER),
        L4::Udp {
            sport: 5353,
            dport: 53,
        },
    )
    .build();
    assert_eq!(f.run(Hook::FromPod, &udp), OK);
    let now = now_ns();
    let (left, removed) = f.dp.expire_flows(now, usize::MAX).expect("sweep");
    assert_eq!((left, removed), (2, 0), "nothing has timed out yet");
    // 45 s later the UDP flow has timed out, the established TCP flow has not.
    let later = now + 45 * SEC;
    let (left, removed) = f.dp.expire_flows(later, usize::MAX).expect("sweep");
    assert_eq!((left, removed), (1, 1));
    // Seven idle hours later it has too.
    let much_later = now + 7 * 3600 * SEC;
    let (left, removed) = f.dp.expire_flows(much_later, usize::MAX).expect("sweep");
    assert_eq!((left, removed), (0, 1));
}
