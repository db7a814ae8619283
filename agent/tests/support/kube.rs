//! Fixtures of the API tests: a private control plane per test, the kube source's settings
//! for it, waiting on a source, and an agent process on a test node with any source.
#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::{
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use palisade::{
    model::Model,
    source::kube::{KubeSettings, KubeSource, WatchOptions},
};
use palisade_tests::{
    kube::{Binaries, ControlPlane},
    TestCluster,
};
use serde_json::Value;

/// A control plane of this test's own (its state under the temp directory, removed on drop).
pub fn control_plane() -> ControlPlane {
    let bins = Binaries::locate().unwrap_or_else(|e| panic!("{e}"));
    let parent = std::env::temp_dir();
    palisade_tests::kube::cleanup_stale(&parent);
    ControlPlane::start(&bins, &parent).unwrap_or_else(|e| panic!("control plane: {e}"))
}

/// Source settings with quick retries and short watches (so that a test sees watch expiry).
pub fn settings(kubeconfig: &Path) -> KubeSettings {
    // The source's log, captured per test.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    KubeSettings {
        kubeconfig: Some(kubeconfig.to_owned()),
        watch: WatchOptions {
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            watch_timeout: Duration::from_secs(2),
            page_size: 2,
        },
        node: Some("node-0".into()),
    }
}

/// Waits until the source's snapshot satisfies `done`; returns its generation and model.
pub fn wait_model(source: &KubeSource, what: &str, done: impl Fn(&Model) -> bool) -> (u64, Model) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some((g, m)) = source.snapshot() {
            if done(&m) {
                return (g, m);
            }
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; health: {:#?}; model: {:#?}",
            source.health(),
            source.snapshot()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The agent process of one test node with the given source arguments, stopped (SIGTERM,
/// reaped) and its bpffs unmounted and directory removed on drop.
pub struct TestAgent {
    child: Child,
    pub root: PathBuf,
    node: usize,
    args: Vec<String>,
}

fn spawn(cluster: &TestCluster, node: usize, root: &Path, args: &[String]) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(root.join("agent.log"))
        .expect("agent log");
    let bin = Path::new(env!("CARGO_BIN_EXE_palisade"));
    let mut cmd = cluster.node_command(node, bin).expect("node command");
    cmd.arg("agent")
        .args(["--node", &palisade_tests::agent::node_name(node)])
        .arg("--endpoints")
        .arg(root.join("endpoints"))
        .arg("--bpffs")
        .arg(root.join("bpffs"))
        .arg("--status")
        .arg(root.join("status.json"))
        .args(["--uplink", cluster.node(node).uplink()])
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    cmd.spawn().expect("start agent")
}

impl TestAgent {
    /// Starts `palisade agent --node node-<n> ...` in node `node`'s namespace, with endpoint
    /// reports, bpffs, status and log under `root`, plus `args` (source, socket ...).
    pub fn start(cluster: &TestCluster, node: usize, root: PathBuf, args: &[String]) -> Self {
        for sub in ["endpoints", "bpffs"] {
            std::fs::create_dir_all(root.join(sub)).expect("agent dirs");
        }
        let child = spawn(cluster, node, &root, args);
        Self {
            child,
            root,
            node,
            args: args.to_vec(),
        }
    }

    /// Stops the agent and starts a new one in its place (same reports, pins and status file).
    pub fn restart(&mut self, cluster: &TestCluster) {
        self.stop();
        let _ = std::fs::remove_file(self.root.join("status.json"));
        self.child = spawn(cluster, self.node, &self.root, &self.args);
    }

    pub fn status(&self) -> Option<Value> {
        let text = std::fs::read_to_string(self.root.join("status.json")).ok()?;
        serde_json::from_str(&text).ok()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.root.join("agent.log")).unwrap_or_default()
    }

    /// Waits until the agent's status satisfies `done`.
    pub fn wait_status(&mut self, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("agent exited ({st}); log:\n{}", self.log());
            }
            if let Some(s) = self.status().filter(|s| done(s)) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not within 30 s; status: {:?}\nlog:\n{}",
                self.status(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the agent reports every pod in `pods` attached.
    pub fn wait_attached(&mut self, pods: &[&str]) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("agent exited ({st}); log:\n{}", self.log());
            }
            if let Some(s) = self.status() {
                if pods.iter().all(|p| s["endpoints"][*p] == "attached") {
                    return s;
                }
            }
            assert!(
                Instant::now() < deadline,
                "pods {pods:?} not attached; status: {:?}\nlog:\n{}",
                self.status(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the agent (SIGTERM) and reaps it; its pins and reports stay, as on a node.
    pub fn stop(&mut self) {
        // SAFETY: signalling the child we spawned, by its PID.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        self.stop();
        let bpffs = self.root.join("bpffs");
        if let Ok(c) = std::ffi::CString::new(bpffs.as_os_str().as_encoded_bytes()) {
            // SAFETY: valid NUL-terminated path.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// A per-test temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(label: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("palisade-{label}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
