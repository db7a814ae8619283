//! The plugin's commands against a fake agent socket.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::net::UnixListener,
    path::PathBuf,
};

use serde_json::{json, Value};

use super::plugin::{self, Code, Env};

const BRIDGE_RESULT: &str = r#"{"cniVersion":"1.0.0","interfaces":[{"name":"cni0","mac":"76:3c:fb:28:d0:73"},
    {"name":"veth4b334549","mac":"22:d1:fc:23:bf:78"},
    {"name":"eth0","mac":"52:22:ab:69:69:35","sandbox":"/var/run/netns/p"}],
    "ips":[{"interface":2,"address":"10.244.0.2/24","gateway":"10.244.0.1"},
           {"interface":2,"address":"fd00:10:244::2/64","gateway":"fd00:10:244::1"}]}"#;

fn env(command: &str) -> Env {
    Env {
        command: command.into(),
        container_id: "c1".into(),
        netns: "/var/run/netns/p".into(),
        ifname: "eth0".into(),
        args: "IgnoreUnknown=1;K8S_POD_NAMESPACE=x;K8S_POD_NAME=a;K8S_POD_INFRA_CONTAINER_ID=c1"
            .into(),
    }
}

fn conf(socket: &std::path::Path) -> Vec<u8> {
    let prev: Value = serde_json::from_str(BRIDGE_RESULT).unwrap();
    serde_json::to_vec(
        &json!({"cniVersion": "1.0.0", "name": "net", "type": "palisade-cni",
        "socket": socket, "prevResult": prev}),
    )
    .unwrap()
}

/// A one-connection fake agent that answers `answer` and returns the request it got.
fn fake_agent(answer: Value) -> (PathBuf, std::thread::JoinHandle<Value>) {
    let dir = std::env::temp_dir().join(format!("pal-cni-test-{}-{}", std::process::id(), rand()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("sock");
    let listener = UnixListener::bind(&path).unwrap();
    let handle = std::thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        let mut line = String::new();
        BufReader::new(conn.try_clone().unwrap())
            .read_line(&mut line)
            .unwrap();
        let mut w = conn;
        w.write_all(format!("{answer}\n").as_bytes()).unwrap();
        let _ = std::fs::remove_dir_all(dir);
        serde_json::from_str(&line).unwrap()
    });
    (path, handle)
}

fn rand() -> u64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u8(0);
    h.finish()
}

#[test]
fn add_reports_the_pod_and_passes_prev_result_on() {
    let (sock, agent) = fake_agent(json!({"ok": true}));
    let out = plugin::run(&env("ADD"), &conf(&sock)).unwrap().unwrap();
    assert_eq!(out, serde_json::from_str::<Value>(BRIDGE_RESULT).unwrap());
    let req = agent.join().unwrap();
    assert_eq!(req["op"], "cni_add");
    assert_eq!(
        (req["namespace"].as_str(), req["name"].as_str()),
        (Some("x"), Some("a"))
    );
    assert_eq!(
        req["ifname"], "veth4b334549",
        "the sandbox-less non-bridge interface"
    );
    assert_eq!(req["ips"], json!(["10.244.0.2", "fd00:10:244::2"]));
    assert_eq!(req["netns"], "/var/run/netns/p");
}

#[test]
fn add_fails_when_the_agent_refuses_or_is_unreachable() {
    let (sock, agent) = fake_agent(json!({"ok": false, "error": "not attached"}));
    let err = plugin::run(&env("ADD"), &conf(&sock)).unwrap_err();
    assert_eq!(err.code, Code::TryAgainLater);
    agent.join().unwrap();
    let gone = std::env::temp_dir().join("pal-cni-test-no-such-socket");
    let err = plugin::run(&env("ADD"), &conf(&gone)).unwrap_err();
    assert_eq!(err.code, Code::TryAgainLater);
    assert_eq!(err.to_json("1.0.0")["code"], 11);
}

#[test]
fn add_without_prev_result_or_host_interface_is_a_config_error() {
    let body = br#"{"cniVersion":"1.0.0","name":"n","type":"palisade-cni"}"#;
    let err = plugin::run(&env("ADD"), body).unwrap_err();
    assert_eq!(err.code, Code::InvalidConfig);
    let only_sandbox = json!({"interfaces": [{"name": "eth0", "sandbox": "/x"}], "ips": []});
    assert!(plugin::endpoint_of(&only_sandbox, |_| false).is_err());
}

#[test]
fn ptp_result_host_veth_is_found_and_bridges_are_skipped() {
    let ptp = json!({"interfaces": [{"name": "veth9"}, {"name": "eth0", "sandbox": "/n"}],
        "ips": [{"interface": 1, "address": "10.244.1.2/32"}]});
    let (ifname, ips) = plugin::endpoint_of(&ptp, |_| false).unwrap();
    assert_eq!((ifname.as_str(), ips.len()), ("veth9", 1));
    let bridged: Value = serde_json::from_str(BRIDGE_RESULT).unwrap();
    let (ifname, _) = plugin::endpoint_of(&bridged, |n| n == "cni0").unwrap();
    assert_eq!(ifname, "veth4b334549");
}

#[test]
fn del_tolerates_an_unreachable_agent_and_non_pods_pass_through() {
    let gone = std::env::temp_dir().join("pal-cni-test-no-such-socket");
    assert!(plugin::run(&env("DEL"), &conf(&gone)).unwrap().is_none());
    let mut not_a_pod = env("ADD");
    not_a_pod.args = String::new();
    let out = plugin::run(&not_a_pod, &conf(&gone)).unwrap().unwrap();
    assert_eq!(out["interfaces"][1]["name"], "veth4b334549");
}

#[test]
fn version_and_bad_versions() {
    let v = plugin::run(&env("VERSION"), br#"{"cniVersion":"1.0.0"}"#)
        .unwrap()
        .unwrap();
    assert!(v["supportedVersions"]
        .as_array()
        .unwrap()
        .contains(&json!("0.3.1")));
    let err = plugin::run(&env("ADD"), br#"{"cniVersion":"9.9.9","name":"n"}"#).unwrap_err();
    assert_eq!(err.code, Code::IncompatibleVersion);
    assert_eq!(plugin::parse_args("A=1;B=2")["B"], "2");
}
