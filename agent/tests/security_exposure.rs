//! Least privilege and exposure (docs/security.md):
//! - the agent's local socket is root-only: mode 0600, and a non-root process cannot connect;
//! - the metrics endpoint exposes no pod data beyond what metrics need (no pod names, IPs or
//!   labels; namespaces only as a label of verdict counts);
//! - the metrics endpoint bounds hostile clients: an endless request line is cut off, and a
//!   client that trickles bytes cannot hold the endpoint (a scrape still answers).
//!
//! The first two are privileged (root, `cargo xtask test`); the last runs anywhere.

mod support;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use palisade::observe::metrics::{serve, Metrics};
use palisade_tests::{
    agent::{node_name, pod_manifest, AgentProcess, Manifests},
    netns::run_in,
    CniMode, Family, IpFamily, Port, ProbeSpec, Proto, TestCluster,
};
use serde_json::json;
use support::nodes::{agent_bin, put_policy, WAIT};

/// One `GET path` on `addr`; the whole response.
fn get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    c.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(c, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n")?;
    let mut out = String::new();
    c.read_to_string(&mut out)?;
    Ok(out)
}

/// Connects as uid/gid 65534 (nobody) in a forked child; the child's errno (0 = connected).
fn connect_as_nobody(path: &Path) -> i32 {
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: the child only makes async-signal-safe calls (setgroups, setgid, setuid, socket,
    // connect, _exit) on memory prepared before the fork; the parent waits for it.
    unsafe {
        let mut addr: libc::sockaddr_un = std::mem::zeroed();
        addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
        for (i, b) in c_path
            .as_bytes()
            .iter()
            .enumerate()
            .take(addr.sun_path.len() - 1)
        {
            addr.sun_path[i] = *b as libc::c_char;
        }
        let pid = libc::fork();
        if pid == 0 {
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(65534) != 0
                || libc::setuid(65534) != 0
            {
                libc::_exit(100);
            }
            let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
            let rc = libc::connect(
                fd,
                std::ptr::addr_of!(addr).cast(),
                size_of::<libc::sockaddr_un>() as libc::socklen_t,
            );
            let errno = if rc == 0 {
                0
            } else {
                *libc::__errno_location()
            };
            libc::_exit(errno.min(99));
        }
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0);
        libc::WEXITSTATUS(status)
    }
}

#[test]
#[ignore = "privileged: needs root (cargo xtask test runs it)"]
fn socket_is_root_only_and_metrics_carry_no_pod_data() {
    palisade_tests::cleanup_stale();
    let tmp = std::env::temp_dir().join(format!("palisade-e2e-exposure-{}", std::process::id()));
    let cluster = TestCluster::builder()
        .family(Family::Ipv4)
        .nodes(1)
        .cni(CniMode::Bridge)
        .build()
        .expect("cluster");
    let mut manifests = Manifests::new(tmp.join("manifests")).expect("manifests");
    manifests
        .put(
            "ns",
            &json!({"apiVersion":"v1","kind":"Namespace","metadata":{"name":"x"}}),
        )
        .expect("ns");
    let mut pods = Vec::new();
    for name in ["secret-pod-name", "other-pod"] {
        let pod = cluster
            .add_pod(0, "x", name, &[Port::tcp(80)])
            .expect("pod");
        let labels = json!({"app": format!("{name}-label"), "tier": "hidden-tier-value"});
        manifests
            .put(
                &format!("pod-{name}"),
                &pod_manifest(&pod, &node_name(0), &labels),
            )
            .expect("pod manifest");
        pods.push(pod);
    }
    put_policy(
        &manifests,
        "deny-all",
        json!({"podSelector":{}, "ingress":[]}),
    );
    let mut agent = AgentProcess::start_with(
        &cluster,
        0,
        agent_bin(),
        &manifests,
        tmp.join("node0"),
        &[
            "--socket",
            "{root}/agent.sock",
            "--metrics-addr",
            "127.0.0.1:19100",
        ],
    )
    .expect("agent");
    for pod in &pods {
        agent.report_endpoint(pod).expect("report");
    }
    let rev = manifests.commit().expect("commit");
    let keys: Vec<String> = pods.iter().map(|p| p.key()).collect();
    agent
        .wait_applied(rev, &keys, WAIT)
        .unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));

    // The socket: a socket file, mode 0600, root can talk to it, nobody cannot connect.
    let sock = agent.root().join("agent.sock");
    let meta = std::fs::metadata(&sock).expect("socket exists");
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "socket mode");
    let status = std::process::Command::new(agent_bin())
        .args(["status", "--socket"])
        .arg(&sock)
        .output()
        .expect("palisade status");
    assert!(status.status.success(), "root reads the status: {status:?}");
    assert_eq!(
        connect_as_nobody(&sock),
        libc::EACCES,
        "a non-root process must not connect"
    );

    // Some denied traffic, so that verdict metrics exist; then scrape inside the node.
    let to = SocketAddr::new(pods[0].ip(IpFamily::Ipv4).expect("ip"), 80);
    let spec = ProbeSpec {
        from: &pods[1],
        to,
        proto: Proto::Tcp,
        timeout: Duration::from_millis(300),
    };
    assert!(
        !cluster.probe_many(&[spec]).expect("probe")[0].allowed,
        "deny-all denies"
    );
    std::thread::sleep(Duration::from_millis(500));
    let addr: SocketAddr = "127.0.0.1:19100".parse().expect("addr");
    let body = run_in(cluster.node(0).netns_name(), || get(addr, "/metrics"))
        .expect("netns")
        .expect("scrape");
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(body.contains("palisade_"), "{body}");
    let mut forbidden: Vec<String> = vec![
        "secret-pod-name".into(),
        "other-pod".into(),
        "secret-pod-name-label".into(),
        "hidden-tier-value".into(),
        "deny-all".into(),
    ];
    forbidden.extend(
        pods.iter()
            .flat_map(|p| p.ips().iter().map(ToString::to_string)),
    );
    for f in &forbidden {
        assert!(!body.contains(f.as_str()), "metrics expose {f:?}:\n{body}");
    }
    drop(agent);
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn metrics_endpoint_bounds_hostile_clients() {
    let addr = serve(
        "127.0.0.1:0".parse().expect("addr"),
        Arc::new(Metrics::new()),
    )
    .expect("serve");

    // An endless request line: the server must hang up long before 64 MB.
    let mut flood = TcpStream::connect(addr).expect("connect");
    flood
        .set_write_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let chunk = vec![b'A'; 64 * 1024];
    let mut sent = 0usize;
    while sent < 64 << 20 {
        if flood.write_all(&chunk).is_err() {
            break;
        }
        sent += chunk.len();
    }
    assert!(
        sent < 8 << 20,
        "the server read {sent} bytes of one request line"
    );
    drop(flood);

    // A client that trickles its request must not hold the endpoint.
    let slow = std::thread::spawn(move || {
        let Ok(mut c) = TcpStream::connect(addr) else {
            return;
        };
        let _ = c.write_all(b"GET /metrics HTTP/1.1\r\n");
        for _ in 0..20 {
            std::thread::sleep(Duration::from_millis(300));
            if c.write_all(b"X").is_err() {
                return;
            }
        }
    });
    std::thread::sleep(Duration::from_millis(200));
    let began = Instant::now();
    let body = get(addr, "/metrics").expect("scrape while a slow client is connected");
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(
        began.elapsed() < Duration::from_millis(3500),
        "a scrape waited {:?} behind a slow client",
        began.elapsed()
    );
    let _ = slow.join();
}
