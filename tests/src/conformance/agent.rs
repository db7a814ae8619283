//! The real Palisade agent, one per test node, started inside the node's network namespace:
//! its directories (manifests, endpoints, bpffs, status, log), waiting for its status file to
//! say a revision is applied, and stopping it and cleaning up after it.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;

use crate::cluster::{ClusterError, TestCluster};

/// Prefix of every run directory: `/tmp/palisade-conf-<pid>-<n>`.
pub const RUN_DIR_PREFIX: &str = "palisade-conf-";

/// How long SIGTERM may take before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// How often the status file is read while waiting.
const POLL: Duration = Duration::from_millis(20);

/// Starting, waiting for or stopping an agent failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("agent binary not found (looked at {0:?}); build it with `cargo build --release -p palisade` or set PALISADE_AGENT_BIN")]
    NotFound(Vec<PathBuf>),
    #[error("cannot create {path}: {source}")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the agent for {node}: {source}")]
    Spawn {
        node: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot enter {node}'s namespace: {source}")]
    Cluster {
        node: String,
        #[source]
        source: Box<ClusterError>,
    },
    #[error("the agent of {node} exited ({status}); last log lines:\n{log}")]
    Exited {
        node: String,
        status: String,
        log: String,
    },
    #[error("the agent of {node} did not report {what} within {timeout:?} (last status: {status}); last log lines:\n{log}")]
    Timeout {
        node: String,
        what: String,
        timeout: Duration,
        status: String,
        log: String,
    },
}

/// What the agent writes to `--status` after each sync.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Status {
    #[serde(default)]
    pub applied_revision: u64,
    /// `ns/name` → `"attached"` (or another state).
    #[serde(default)]
    pub endpoints: BTreeMap<String, Value>,
    /// The contract's `problems`, and the agent's more specific lists.
    #[serde(default)]
    pub problems: Vec<Value>,
    #[serde(default)]
    pub sync_problems: Vec<Value>,
    #[serde(default)]
    pub policy_problems: Vec<Value>,
    #[serde(default)]
    pub notes: Vec<Value>,
    /// With `--source kube`: the API source's health (generation, per-kind resourceVersion).
    #[serde(default)]
    pub kube: Option<Value>,
}

impl Status {
    /// Every problem and note the agent reports.
    pub fn all_problems(&self) -> impl Iterator<Item = &Value> {
        self.problems
            .iter()
            .chain(&self.sync_problems)
            .chain(&self.policy_problems)
            .chain(&self.notes)
    }
}

/// The per-run directory: every agent's files live under it. Removing it unmounts each
/// node's bpffs first (the agent mounts one there).
#[derive(Debug)]
pub struct RunDir {
    path: PathBuf,
}

static RUN_COUNTER: AtomicU32 = AtomicU32::new(0);

impl RunDir {
    pub fn create() -> Result<Self, AgentError> {
        let n = RUN_COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("{RUN_DIR_PREFIX}{}-{n}", std::process::id());
        let path = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&path).map_err(|source| AgentError::Dir {
            path: path.clone(),
            source,
        })?;
        Ok(RunDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        remove_run_dir(&self.path);
    }
}

/// Unmounts every mount under `dir` (lazily) and removes it.
fn remove_run_dir(dir: &Path) {
    for mount in mounts_under(dir) {
        let status = Command::new("umount").arg("-l").arg(&mount).status();
        if !status.is_ok_and(|s| s.success()) {
            eprintln!("conformance: cannot unmount {}", mount.display());
        }
    }
    if let Err(e) = std::fs::remove_dir_all(dir) {
        eprintln!("conformance: cannot remove {}: {e}", dir.display());
    }
}

/// Mount points at or below `dir`, deepest first.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut found: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|m| m.starts_with(dir))
        .collect();
    found.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    found.dedup();
    found
}

/// Removes the run directories of dead conformance processes (a killed run).
pub fn cleanup_stale() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(RUN_DIR_PREFIX)
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        // SAFETY: signal 0 only checks whether the process exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        if !alive {
            remove_run_dir(&entry.path());
        }
    }
}

/// The agent binary: `$PALISADE_AGENT_BIN`, else `palisade` next to this executable (or one
/// directory up, for test binaries in `deps/`).
pub fn find_agent_bin() -> Result<PathBuf, AgentError> {
    let mut candidates: Vec<PathBuf> = std::env::var_os("PALISADE_AGENT_BIN")
        .map(PathBuf::from)
        .into_iter()
        .collect();
    if let Ok(exe) = std::env::current_exe() {
        for dir in exe.ancestors().skip(1).take(2) {
            candidates.push(dir.join("palisade"));
        }
    }
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or(AgentError::NotFound(candidates))
}

/// Where an agent gets the cluster state.
#[derive(Clone, Debug)]
pub enum AgentSource {
    /// The run's shared manifest directory.
    Manifests,
    /// The API server, through this kubeconfig.
    Kube { kubeconfig: PathBuf },
}

/// What an agent must have applied before probing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Barrier {
    /// The manifest directory's `.revision`.
    Revision(u64),
    /// Per kind (`kube.resources` key), the API resourceVersion its model must reflect.
    Kube(BTreeMap<&'static str, u64>),
}

impl std::fmt::Display for Barrier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Barrier::Revision(r) => write!(f, "revision {r} applied"),
            Barrier::Kube(v) => write!(f, "API changes up to resourceVersions {v:?} applied"),
        }
    }
}

/// One running agent.
#[derive(Debug)]
pub struct Agent {
    node: String,
    status_file: PathBuf,
    log_file: PathBuf,
    child: Option<Child>,
}

/// The files of one node's agent, under the run directory.
#[derive(Clone, Debug)]
pub struct AgentPaths {
    pub manifests: PathBuf,
    pub endpoints: PathBuf,
    pub bpffs: PathBuf,
    pub status: PathBuf,
    pub log: PathBuf,
}

impl AgentPaths {
    /// `<run>/<node>/{endpoints,bpffs,status.json,agent.log}`, manifests shared.
    pub fn new(run: &Path, node: &str) -> Result<Self, AgentError> {
        let base = run.join(node);
        let paths = AgentPaths {
            manifests: run.join("manifests"),
            endpoints: base.join("endpoints"),
            bpffs: base.join("bpffs"),
            status: base.join("status.json"),
            log: base.join("agent.log"),
        };
        for dir in [&paths.manifests, &paths.endpoints, &paths.bpffs] {
            std::fs::create_dir_all(dir).map_err(|source| AgentError::Dir {
                path: dir.clone(),
                source,
            })?;
        }
        Ok(paths)
    }
}

impl Agent {
    /// Starts `bin agent ...` inside node `idx`'s namespace. It dies with this process
    /// (PR_SET_PDEATHSIG), so a killed runner leaves no agent behind.
    pub fn start(
        cluster: &TestCluster,
        idx: usize,
        node: &str,
        bin: &Path,
        paths: &AgentPaths,
        source: &AgentSource,
    ) -> Result<Self, AgentError> {
        let mut cmd = cluster
            .node_command(idx, bin)
            .map_err(|source| AgentError::Cluster {
                node: node.to_owned(),
                source: Box::new(source),
            })?;
        cmd.arg("agent").args(["--node", node]);
        match source {
            AgentSource::Manifests => cmd.arg("--manifests").arg(&paths.manifests),
            AgentSource::Kube { kubeconfig } => cmd
                .args(["--source", "kube", "--kubeconfig"])
                .arg(kubeconfig),
        };
        cmd.arg("--endpoints").arg(&paths.endpoints);
        cmd.arg("--bpffs").arg(&paths.bpffs);
        cmd.arg("--status").arg(&paths.status);
        cmd.args(["--uplink", cluster.node(idx).uplink()]);
        let spawn_err = |source| AgentError::Spawn {
            node: node.to_owned(),
            source,
        };
        let log = std::fs::File::create(&paths.log).map_err(spawn_err)?;
        let log2 = log.try_clone().map_err(spawn_err)?;
        cmd.stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or("info".into()),
            )
            .env("NO_COLOR", "1");
        // SAFETY: prctl is async-signal-safe and touches only this child's own settings.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(spawn_err)?;
        Ok(Agent {
            node: node.to_owned(),
            status_file: paths.status.clone(),
            log_file: paths.log.clone(),
            child: Some(child),
        })
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// The last lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log_file).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Its current status, if it has written one.
    pub fn status(&self) -> Option<Status> {
        let text = std::fs::read_to_string(&self.status_file).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Fails if the agent has exited.
    pub fn check_alive(&mut self) -> Result<(), AgentError> {
        let exited = match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(Some(status))) => status.to_string(),
            Some(Ok(None)) => return Ok(()),
            Some(Err(e)) => e.to_string(),
            None => "stopped".to_owned(),
        };
        Err(AgentError::Exited {
            node: self.node.clone(),
            status: exited,
            log: self.log_tail(30),
        })
    }

    /// Waits until the status shows `revision` applied and every pod of `pods` attached.
    pub fn wait_applied(
        &mut self,
        revision: u64,
        pods: &[String],
        timeout: Duration,
    ) -> Result<Status, AgentError> {
        self.wait_for(&Barrier::Revision(revision), pods, timeout)
    }

    /// Waits until the status shows `barrier` reached and every pod of `pods` attached.
    pub fn wait_for(
        &mut self,
        barrier: &Barrier,
        pods: &[String],
        timeout: Duration,
    ) -> Result<Status, AgentError> {
        let deadline = Instant::now() + timeout;
        loop {
            self.check_alive()?;
            let status = self.status();
            if let Some(s) = status.as_ref().filter(|s| reached(s, barrier, pods)) {
                return Ok(s.clone());
            }
            if Instant::now() >= deadline {
                return Err(self.timeout(barrier, pods, timeout, status));
            }
            std::thread::sleep(POLL);
        }
    }

    fn timeout(
        &self,
        barrier: &Barrier,
        pods: &[String],
        timeout: Duration,
        status: Option<Status>,
    ) -> AgentError {
        let missing: Vec<&String> = pods
            .iter()
            .filter(|p| !status.as_ref().is_some_and(|s| attached(s, p)))
            .collect();
        AgentError::Timeout {
            node: self.node.clone(),
            what: format!("{barrier} with {missing:?} attached"),
            timeout,
            status: std::fs::read_to_string(&self.status_file)
                .unwrap_or_else(|e| format!("unreadable ({e})")),
            log: self.log_tail(30),
        }
    }

    /// SIGTERM, then SIGKILL after a grace period.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(pid) = libc::pid_t::try_from(child.id()) {
            // SAFETY: the PID is our own child, not yet reaped, so it cannot have been reused.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if !matches!(child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(POLL);
        }
        eprintln!(
            "conformance: agent of {} ignored SIGTERM; killing it",
            self.node
        );
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop();
    }
}

fn attached(status: &Status, pod: &str) -> bool {
    status.endpoints.get(pod).and_then(Value::as_str) == Some("attached")
}

/// Whether `status` shows `revision` applied and every pod of `pods` attached.
pub fn is_ready(status: &Status, revision: u64, pods: &[String]) -> bool {
    reached(status, &Barrier::Revision(revision), pods)
}

/// Whether `status` shows `barrier` reached and every pod of `pods` attached.
pub fn reached(status: &Status, barrier: &Barrier, pods: &[String]) -> bool {
    let applied = match barrier {
        Barrier::Revision(r) => status.applied_revision >= *r,
        Barrier::Kube(versions) => kube_applied(status, versions),
    };
    applied && pods.iter().all(|p| attached(status, p))
}

/// The API source's model holds every version of `versions` and is what the agent applied:
/// the status's health is read after the sync, so only when its generation is the one applied
/// do its versions describe the enforced model.
fn kube_applied(status: &Status, versions: &BTreeMap<&'static str, u64>) -> bool {
    let Some(kube) = &status.kube else {
        return false;
    };
    let current = kube["synced"].as_bool() == Some(true)
        && kube["generation"].as_u64() == Some(status.applied_revision);
    current
        && versions.iter().all(|(kind, want)| {
            kube["resources"][kind]["resource_version"]
                .as_u64()
                .is_some_and(|have| have >= *want)
        })
}
