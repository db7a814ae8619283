//! Restart safety on test nodes: programs, links and maps stay pinned while the agent is down, so
//! enforcement and established connections continue; a new agent adopts them (nothing flushed)
//! and applies changes made during the outage, revoking flows they no longer allow.
//! Privileged (root): run through `cargo xtask test`.

mod support;

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    time::Duration,
};

use palisade_tests::{netns::run_in, CniMode, Family, IpFamily, Proto};
use serde_json::json;
use support::nodes::{agent_bin, check, setup, Setup};

const ECHO_PORT: u16 = 9000;

/// An echo server in pod `to` and a connected client in pod `from`.
fn long_lived(s: &Setup, from: &str, to: &str) -> TcpStream {
    let server_ip = s.pod(to).ip(IpFamily::Ipv4).expect("ip");
    let listener = run_in(s.pod(to).netns_name(), || {
        TcpListener::bind(("0.0.0.0", ECHO_PORT))
    })
    .expect("netns")
    .expect("bind");
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut buf = [0u8; 64];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 || conn.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    connect_from(s, from, SocketAddr::new(server_ip, ECHO_PORT))
}

/// A TCP connection from pod `from` to `addr`, with a short read timeout.
fn connect_from(s: &Setup, from: &str, addr: SocketAddr) -> TcpStream {
    let stream = run_in(s.pod(from).netns_name(), move || {
        TcpStream::connect_timeout(&addr, Duration::from_secs(2))
    })
    .expect("netns")
    .expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_millis(700)))
        .expect("timeout");
    stream
}

/// One request/response round trip on the established connection.
fn echoes(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 4];
    stream.write_all(b"ping").is_ok() && stream.read_exact(&mut buf).is_ok() && &buf == b"ping"
}

fn allow_b_to_a(s: &Setup, ports: &[u16]) {
    let ports: Vec<_> = ports.iter().map(|p| json!({"port": p})).collect();
    s.policy(
        "a-from-b",
        json!({"podSelector":{"matchLabels":{"app":"a"}},
        "ingress":[{"from":[{"podSelector":{"matchLabels":{"app":"b"}}}],"ports":ports}]}),
    );
}

#[test]
#[ignore = "privileged: needs root (cargo xtask test runs it)"]
fn restart_adopts_pins_keeps_connections_and_applies_outage_changes() {
    let mut s = setup("restart", Family::Ipv4, CniMode::Bridge);
    allow_b_to_a(&s, &[80, ECHO_PORT]);
    s.apply();
    let mut conn = long_lived(&s, "b", "a");
    assert!(echoes(&mut conn), "connection works before the restart");
    let fam = IpFamily::Ipv4;
    let policy_cells = [
        ("b", "a", Proto::Tcp, 80, true),
        ("c", "a", Proto::Tcp, 80, false),
    ];

    // Crash: everything stays enforced and the connection keeps working.
    s.agents[0].stop(libc::SIGKILL).expect("kill");
    assert!(echoes(&mut conn), "connection survives the crash");
    check(&s, fam, &policy_cells);

    // A policy change while the agent is down: the echo port is no longer allowed.
    allow_b_to_a(&s, &[80]);
    let rev = s.manifests.commit().expect("commit");
    check(&s, fam, &policy_cells);
    assert!(
        echoes(&mut conn),
        "old policy still enforced while the agent is down"
    );

    // A new agent adopts the pins and applies the change: the flow is cut, the rest holds.
    s.agents[0]
        .restart(&s.cluster, agent_bin(), &s.manifests)
        .expect("restart");
    let local = vec!["x/a".to_owned(), "x/b".to_owned()];
    s.agents[0]
        .wait_applied(rev, &local, support::nodes::WAIT)
        .expect("applied");
    let log = s.agents[0].log();
    assert!(
        log.contains("adopting the state of an earlier agent"),
        "agent log:\n{log}"
    );
    assert!(
        !echoes(&mut conn),
        "established flow revoked by the change made during the outage"
    );
    check(&s, fam, &policy_cells);

    // A graceful restart with no change keeps a new connection on an allowed port alive.
    allow_b_to_a(&s, &[80, ECHO_PORT]);
    s.apply();
    let mut conn2 = long_lived_again(&s);
    assert!(echoes(&mut conn2));
    s.agents[0].stop(libc::SIGTERM).expect("stop");
    s.agents[0]
        .restart(&s.cluster, agent_bin(), &s.manifests)
        .expect("restart");
    let rev = s.manifests.commit().expect("commit");
    s.agents[0]
        .wait_applied(rev, &local, support::nodes::WAIT)
        .expect("applied");
    assert!(echoes(&mut conn2), "connection survives a graceful restart");
    check(&s, fam, &policy_cells);
}

/// A second client connection to the echo server already listening in pod a.
fn long_lived_again(s: &Setup) -> TcpStream {
    let addr = SocketAddr::new(s.pod("a").ip(IpFamily::Ipv4).expect("ip"), ECHO_PORT);
    connect_from(s, "b", addr)
}
