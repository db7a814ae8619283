//! The chained `palisade-cni` plugin on a test node: the reference `bridge` plugin wires each
//! pod, then `palisade-cni` reports it to the agent's socket and returns only once the agent
//! has attached it with its policy. A pod under a default-deny policy is probed from both
//! sides within a millisecond of ADD returning: nothing gets through. An allowed pair works,
//! CHECK and DEL work, and ADD fails while the agent is unreachable.

#[path = "support/kube.rs"]
mod kube_support;

use std::{
    io::ErrorKind,
    net::{IpAddr, SocketAddr, TcpStream, UdpSocket},
    path::Path,
    sync::mpsc,
    time::{Duration, Instant},
};

use kube_support::{TempDir, TestAgent};
use palisade_tests::{
    agent::Manifests, cni::Attachment, netns, CniMode, Family, IpFamily, Port, ProbeSpec, Proto,
    TestCluster,
};
use serde_json::{json, Value};

/// What one prober saw: how long after ADD its first packet left, and whether anything got
/// through (a reply, a TCP handshake or reset, an ICMP port unreachable).
#[derive(Debug)]
struct Seen {
    first_packet_after_add: Duration,
    through: Vec<String>,
}

/// Real-time priority for the calling thread, so that it runs the moment it is woken even on
/// a busy machine (best effort).
fn realtime() {
    let param = libc::sched_param { sched_priority: 10 };
    // SAFETY: sets the calling thread's policy; `param` is valid for the call.
    unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
}

/// In namespace `ns`, waits (at real-time priority) for ADD to return, then at once sends UDP
/// to `port` and a TCP SYN to `port - 1` of `target` (or of the new pod when `target` is
/// `None`), and keeps sending UDP for 100 ms.
fn prober(
    ns: String,
    target: Option<IpAddr>,
    port: u16,
    go: mpsc::Receiver<(Instant, IpAddr)>,
) -> std::thread::JoinHandle<Seen> {
    std::thread::spawn(move || {
        netns::run_in(&ns, move || {
            realtime();
            let udp = UdpSocket::bind(SocketAddr::new(IpAddr::from([0, 0, 0, 0]), 0)).expect("udp");
            udp.set_nonblocking(true).expect("nonblocking");
            let (added, new_ip) = go.recv().expect("ADD result");
            let dst = SocketAddr::new(target.unwrap_or(new_ip), port);
            // Before ADD the pod has no route: connect (a route lookup) only now.
            udp.connect(dst).expect("connect udp");
            let _ = udp.send(b"first");
            let first_packet_after_add = added.elapsed();
            let tcp_dst = SocketAddr::new(dst.ip(), port - 1);
            let tcp = std::thread::spawn(move || {
                TcpStream::connect_timeout(&tcp_dst, Duration::from_millis(300))
            });
            let mut through = Vec::new();
            let mut buf = [0u8; 256];
            let until = Instant::now() + Duration::from_millis(100);
            while Instant::now() < until {
                match udp.recv(&mut buf) {
                    Ok(n) => through.push(format!(
                        "udp reply {:?}",
                        String::from_utf8_lossy(&buf[..n])
                    )),
                    Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                        through.push("udp: ICMP port unreachable".into());
                    }
                    Err(_) => {}
                }
                let _ = udp.send(b"again");
                std::thread::sleep(Duration::from_micros(200));
            }
            match tcp.join().expect("tcp thread") {
                Ok(_) => through.push(format!("tcp {tcp_dst} connected")),
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                    through.push(format!("tcp {tcp_dst} reset"));
                }
                Err(_) => {}
            }
            Seen {
                first_packet_after_add,
                through,
            }
        })
        .expect("prober namespace")
    })
}

fn pod_manifest(name: &str, app: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"namespace": "x", "name": name, "labels": {"app": app}},
        "spec": {"nodeName": "node-0", "containers": [{"name": "c", "ports": [
            {"containerPort": 80, "protocol": "TCP"}, {"containerPort": 81, "protocol": "UDP"}]}]}})
}

fn policy(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"namespace": "x", "name": name}, "spec": spec})
}

/// The model before any pod exists: `new` is isolated both ways with no rule; `friend` talks
/// to `peer` only; `peer` is not selected by any policy.
fn write_model(dir: &Path) -> Manifests {
    let mut m = Manifests::new(dir.to_owned()).expect("manifests");
    m.put(
        "ns",
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}}),
    )
    .expect("ns");
    for (name, app) in [
        ("peer", "peer"),
        ("new", "new"),
        ("friend", "friend"),
        ("late", "new"),
    ] {
        m.put(&format!("pod-{name}"), &pod_manifest(name, app))
            .expect("pod");
    }
    m.put(
        "deny-new",
        &policy(
            "deny-new",
            json!({"podSelector": {"matchLabels": {"app": "new"}},
        "policyTypes": ["Ingress", "Egress"]}),
        ),
    )
    .expect("policy");
    let peer = json!([{"podSelector": {"matchLabels": {"app": "peer"}}}]);
    m.put("friend-peer", &policy("friend-peer", json!({"podSelector": {"matchLabels": {"app": "friend"}},
        "policyTypes": ["Ingress", "Egress"], "ingress": [{"from": peer}], "egress": [{"to": peer}]})))
        .expect("policy");
    m.commit().expect("commit");
    m
}

/// Runs `palisade-cni` itself with CHECK in the node namespace, as a runtime would.
fn cni_check(
    node_ns: &str,
    bin: &Path,
    sock: &Path,
    netns_path: &Path,
    name: &str,
    prev: &Value,
) -> bool {
    let conf = json!({"cniVersion": "1.0.0", "name": "palisade-test", "type": "palisade-cni",
        "socket": sock, "prevResult": prev});
    let mut cmd = netns::command_in(node_ns, bin).expect("command");
    cmd.env("CNI_COMMAND", "CHECK")
        .env("CNI_CONTAINERID", "check")
        .env("CNI_NETNS", netns_path)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/usr/lib/cni")
        .env(
            "CNI_ARGS",
            format!("K8S_POD_NAMESPACE=x;K8S_POD_NAME={name}"),
        );
    palisade_tests::exec::run_with_input(&mut cmd, conf.to_string().as_bytes()).is_ok()
}

#[test]
#[ignore = "privileged: needs root (cargo xtask test runs it)"]
fn cni_add_returns_after_attach_and_nothing_gets_through() {
    palisade_tests::require_root!();
    palisade_tests::cleanup_stale();
    let tmp = TempDir::new("cni-chain");
    let sock = tmp.0.join("agent.sock");
    let plugin = Path::new(env!("CARGO_BIN_EXE_palisade-cni"));
    let cni_path = format!(
        "/usr/lib/cni:{}",
        plugin.parent().expect("bin dir").display()
    );
    let cluster = TestCluster::builder()
        .family(Family::Ipv4)
        .nodes(1)
        .cni(CniMode::Bridge)
        .chain_plugin(json!({"type": "palisade-cni", "socket": sock}))
        .cni_path(&cni_path)
        .build()
        .expect("cluster");
    let manifests = write_model(&tmp.0.join("manifests"));
    let args: Vec<String> = vec![
        "--manifests".into(),
        manifests.dir().display().to_string(),
        "--socket".into(),
        sock.display().to_string(),
    ];
    let mut agent = TestAgent::start(&cluster, 0, tmp.0.join("node0"), &args);
    agent.wait_attached(&[]);
    let ports = [Port::tcp(80), Port::udp(81)];
    let peer = cluster
        .add_pod(0, "x", "peer", &ports)
        .expect("peer through the chain");
    let peer_ip = peer.ip(IpFamily::Ipv4).expect("peer ip");

    // The pod under test is wired by hand so that probes start the moment ADD returns.
    let node_ns = cluster.node(0).netns_name().to_owned();
    let pod_ns = netns::Netns::create(&format!("{}-pnew", cluster.prefix())).expect("pod netns");
    let att = Attachment {
        node_netns: node_ns.clone(),
        container_id: "new-sandbox".into(),
        pod_netns: pod_ns.path(),
        ifname: "eth0".into(),
        pod_namespace: "x".into(),
        pod_name: "new".into(),
        cni_path: cni_path.clone(),
    };
    att.loopback("ADD").expect("loopback");
    let (go_new, wait_new) = mpsc::channel();
    let (go_peer, wait_peer) = mpsc::channel();
    let from_new = prober(pod_ns.name().to_owned(), Some(peer_ip), 81, wait_new);
    let to_new = prober(peer.netns_name().to_owned(), None, 81, wait_peer);
    std::thread::sleep(Duration::from_millis(50)); // both probers are waiting
    let chain = cluster.node(0).cni_chain().to_vec();
    let result = att.add(&chain);
    let added = Instant::now();
    let result = result.expect("ADD through bridge and palisade-cni");
    let _ = go_new.send((added, result.pod_ips()[0]));
    let _ = go_peer.send((added, result.pod_ips()[0]));
    let seen = [
        from_new.join().expect("prober"),
        to_new.join().expect("prober"),
    ];
    eprintln!("probers: {seen:?}");
    for s in &seen {
        assert!(
            s.first_packet_after_add < Duration::from_millis(1),
            "first probe {:?} after ADD returned",
            s.first_packet_after_add
        );
        assert!(
            s.through.is_empty(),
            "got through right after ADD: {:?}\nagent log:\n{}",
            s.through,
            agent.log()
        );
    }
    let st = agent.status().expect("status");
    assert_eq!(st["endpoints"]["x/new"], "attached", "{st}");
    assert!(
        cni_check(&node_ns, plugin, &sock, &pod_ns.path(), "new", &result.raw),
        "CHECK"
    );

    // An allowed pair through the chain: friend <-> peer both ways, friend <-> new never.
    let friend = cluster.add_pod(0, "x", "friend", &ports).expect("friend");
    let friend_ip = friend.ip(IpFamily::Ipv4).expect("ip");
    let new_ip = result.pod_ips()[0];
    let probe = |from: &palisade_tests::Pod, to: IpAddr, proto: Proto, port: u16| {
        let spec = ProbeSpec {
            from,
            to: (to, port).into(),
            proto,
            timeout: Duration::from_millis(400),
        };
        cluster.probe_many(&[spec]).expect("probe")[0].allowed
    };
    assert!(probe(&peer, friend_ip, Proto::Tcp, 80), "peer -> friend");
    assert!(probe(&friend, peer_ip, Proto::Udp, 81), "friend -> peer");
    assert!(!probe(&peer, new_ip, Proto::Tcp, 80), "peer -> new");
    // Control: the same prober does see an allowed pod answer.
    let (go, wait) = mpsc::channel();
    let control = prober(peer.netns_name().to_owned(), Some(friend_ip), 81, wait);
    let _ = go.send((Instant::now(), friend_ip));
    let control = control.join().expect("control prober");
    assert!(
        !control.through.is_empty(),
        "the prober sees allowed traffic: {control:?}"
    );
    assert!(!probe(&friend, new_ip, Proto::Udp, 81), "friend -> new");

    // DEL detaches.
    att.del(&chain, &result.raw).expect("DEL");
    let deadline = Instant::now() + Duration::from_secs(10);
    while agent
        .status()
        .is_some_and(|s| !s["endpoints"]["x/new"].is_null())
    {
        assert!(Instant::now() < deadline, "x/new still listed after DEL");
        std::thread::sleep(Duration::from_millis(20));
    }

    // No agent, no pod: ADD fails (the runtime would retry), it never runs unenforced.
    agent.stop();
    let err = cluster
        .add_pod(0, "x", "late", &ports)
        .expect_err("ADD without an agent");
    assert!(err.to_string().contains("palisade-cni"), "{err}");
}
