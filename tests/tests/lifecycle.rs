//! Teardown: nothing is left behind after drop, after a failed pod, after a panic, and stale
//! leftovers of dead runs are removed. Needs root: `#[ignore]`d; `cargo xtask test` runs them as root.

mod common;

use std::process::Command;

use palisade_tests::{netns, require_root, CniMode, Family, TestCluster};

fn ours(prefix: &str) -> Vec<String> {
    let p = format!("{prefix}-");
    netns::list()
        .into_iter()
        .filter(|n| n.starts_with(&p))
        .collect()
}

fn root_links() -> String {
    let out = Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
#[ignore = "privileged: needs root (cargo xtask test runs it)"]
fn drop_removes_namespaces_interfaces_and_state() {
    require_root!();
    let cl = common::cluster(Family::Dual, CniMode::Bridge);
    let a = cl.add_pod(0, "x", "a", &common::ports()).unwrap();
    let b = cl.add_pod(1, "x", "b", &common::ports()).unwrap();
    let prefix = cl.prefix();
    assert_eq!(ours(&prefix).len(), 4, "{:?}", ours(&prefix));
    let state = std::path::Path::new(palisade_tests::names::STATE_DIR).join(&prefix);
    assert!(state.is_dir());
    drop(cl);
    assert!(ours(&prefix).is_empty(), "left behind: {:?}", ours(&prefix));
    assert!(!state.exists(), "state dir left behind");
    let links = root_links();
    for name in [a.host_veth(), b.host_veth(), "cni0", "ul0"] {
        assert!(
            !links.contains(&format!(": {name}")),
            "{name} in root namespace:\n{links}"
        );
    }
}

#[test]
#[ignore = "privileged: needs root (cargo xtask test runs it)"]
fn failed_pod_is_rolled_back() {
    require_root!();
    let cl = TestCluster::builder()
        .cni(CniMode::Ptp)
        .chain_plugin(serde_json::json!({ "type": "no-such-plugin" }))
        .probe_bin(env!("CARGO_BIN_EXE_probe"))
        .build()
        .unwrap();
    let err = cl.add_pod(0, "x", "a", &common::ports()).unwrap_err();
    assert!(err.to_string().contains("no-such-plugin"), "{err}");
    assert_eq!(
        ours(&cl.prefix()).len(),
        2,
        "pod namespace left: {:?}",
        ours(&cl.prefix())
    );
    let veths = cl
        .node_command(0, "ip")
        .unwrap()
        .args(["-o", "link", "show", "type", "veth"])
        .output()
        .unwrap();
    let veths = String::from_utf8_lossy(&veths.stdout);
    let left: Vec<&str> = veths.lines().filter(|l| !l.contains(" ul0@")).collect();
    assert!(left.is_empty(), "host veth left: {left:?}");
    assert!(cl.pods().is_empty());
}

#[test]
#[ignore = "privileged: needs root (cargo xtask test runs it)"]
fn panic_unwinds_cleanly() {
    require_root!();
    let prefix = std::sync::Mutex::new(String::new());
    let result = std::panic::catch_unwind(|| {
        let cl = common::cluster(Family::Ipv4, CniMode::Ptp);
        cl.add_pod(1, "x", "a", &common::ports()).unwrap();
        *prefix.lock().unwrap() = cl.prefix();
        panic!("test failure inside a cluster");
    });
    assert!(result.is_err());
    let prefix = prefix.into_inner().unwrap();
    assert!(
        !prefix.is_empty() && ours(&prefix).is_empty(),
        "{:?}",
        ours(&prefix)
    );
}

#[test]
#[ignore = "privileged: needs root (cargo xtask test runs it)"]
fn cleanup_stale_removes_only_dead_runs() {
    require_root!();
    let keep = common::cluster(Family::Ipv4, CniMode::Ptp);
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let stale = format!("pal-{dead}-0-n0");
    let stale_dir =
        std::path::Path::new(palisade_tests::names::STATE_DIR).join(format!("pal-{dead}-0"));
    Command::new("ip")
        .args(["netns", "add", &stale])
        .status()
        .unwrap();
    std::fs::create_dir_all(&stale_dir).unwrap();
    // build() cleans up too, and so may a parallel test's build(): whoever removed the
    // leftovers, they must be gone and the live cluster must be intact.
    let live = common::cluster(Family::Ipv4, CniMode::Bridge);
    palisade_tests::cleanup_stale();
    assert!(!netns::list().contains(&stale) && !stale_dir.exists());
    assert_eq!(ours(&live.prefix()).len(), 2, "live cluster touched");
    assert_eq!(ours(&keep.prefix()).len(), 2, "live cluster touched");
}
