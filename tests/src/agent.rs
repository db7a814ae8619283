//! Running the real Palisade agent on a test node: a shared manifest directory (the
//! manifest-directory source), a per-node directory of endpoint reports (what the chained CNI
//! plugin reports), a private bpffs, and the agent's status file to wait on.

use std::{
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{Pod, TestCluster};

/// Errors of the agent harness.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Cluster(#[from] crate::ClusterError),
    #[error("agent on node {node} did not apply revision {revision} within {secs} s; last status: {last}")]
    NotApplied {
        node: usize,
        revision: u64,
        secs: u64,
        last: String,
    },
    #[error("agent on node {node} exited: {status}")]
    Exited {
        node: usize,
        status: std::process::ExitStatus,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> AgentError + '_ {
    move |source| AgentError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Writes `bytes` to `path` atomically (temp file, then rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), AgentError> {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, bytes).map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// The manifest directory all agents of a cluster read. Writers change files, then `commit`,
/// which bumps `.revision`; agents report the revision they applied.
#[derive(Debug)]
pub struct Manifests {
    dir: PathBuf,
    revision: u64,
}

impl Manifests {
    pub fn new(dir: PathBuf) -> Result<Self, AgentError> {
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        Ok(Self { dir, revision: 0 })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes one object as `<name>.json`.
    pub fn put(&self, name: &str, object: &Value) -> Result<(), AgentError> {
        let path = self.dir.join(format!("{name}.json"));
        write_atomic(&path, object.to_string().as_bytes())
    }

    pub fn remove(&self, name: &str) -> Result<(), AgentError> {
        let path = self.dir.join(format!("{name}.json"));
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(&path)(e)),
            _ => Ok(()),
        }
    }

    /// Publishes the changes written so far; returns the new revision.
    pub fn commit(&mut self) -> Result<u64, AgentError> {
        self.revision += 1;
        write_atomic(
            &self.dir.join(".revision"),
            self.revision.to_string().as_bytes(),
        )?;
        Ok(self.revision)
    }
}

/// A pod manifest as the agent's manifest source reads it.
pub fn pod_manifest(pod: &Pod, node_name: &str, labels: &Value) -> Value {
    let ports: Vec<Value> = pod
        .ports()
        .iter()
        .map(|p| {
            let mut v = serde_json::json!({"containerPort": p.port, "protocol": p.proto.as_str().to_ascii_uppercase()});
            if let Some(n) = &p.name {
                v["name"] = Value::from(n.clone());
            }
            v
        })
        .collect();
    let ips: Vec<Value> = pod
        .ips()
        .iter()
        .map(|ip| serde_json::json!({"ip": ip.to_string()}))
        .collect();
    serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"namespace": pod.namespace(), "name": pod.name(), "labels": labels},
        "spec": {"nodeName": node_name, "containers": [{"name": "c", "ports": ports}]},
        "status": {"podIP": pod.ips().first().map(ToString::to_string), "podIPs": ips, "phase": "Running"},
    })
}

/// The agent process of one node, killed (SIGTERM, then reaped) and its bpffs unmounted on drop.
#[derive(Debug)]
pub struct AgentProcess {
    node: usize,
    child: Child,
    root: PathBuf,
    /// Extra agent flags (kept for restarts).
    extra: Vec<String>,
}

impl AgentProcess {
    /// Starts `agent_bin agent ...` inside node `node`'s namespace, with its own endpoint
    /// directory, bpffs and status file under `root`.
    pub fn start(
        cluster: &TestCluster,
        node: usize,
        agent_bin: &Path,
        manifests: &Manifests,
        root: PathBuf,
    ) -> Result<Self, AgentError> {
        Self::start_with(cluster, node, agent_bin, manifests, root, &[])
    }

    /// [`AgentProcess::start`] with extra agent flags (`--flow-log`, `--socket`, ...); `{root}`
    /// in a flag is replaced by the agent's directory.
    pub fn start_with(
        cluster: &TestCluster,
        node: usize,
        agent_bin: &Path,
        manifests: &Manifests,
        root: PathBuf,
        extra: &[&str],
    ) -> Result<Self, AgentError> {
        for sub in ["endpoints", "bpffs"] {
            let d = root.join(sub);
            std::fs::create_dir_all(&d).map_err(io(&d))?;
        }
        let extra: Vec<String> = extra
            .iter()
            .map(|a| a.replace("{root}", &root.display().to_string()))
            .collect();
        let child = spawn(cluster, node, agent_bin, manifests, &root, &extra)?;
        Ok(Self {
            node,
            child,
            root,
            extra,
        })
    }

    /// The agent's directory (endpoint reports, bpffs, status, log, and `{root}` in flags).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Stops the agent with `signal` (SIGKILL: a crash; SIGTERM: a graceful stop) and reaps it.
    /// Its pins, endpoint reports and status stay, as on a real node.
    pub fn stop(&mut self, signal: libc::c_int) -> Result<(), AgentError> {
        // SAFETY: signalling the child we spawned, by its PID.
        unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        self.child.wait().map_err(io(&self.root))?;
        Ok(())
    }

    /// Starts a new agent process in place of a stopped one (same directories and bpffs).
    pub fn restart(
        &mut self,
        cluster: &TestCluster,
        agent_bin: &Path,
        manifests: &Manifests,
    ) -> Result<(), AgentError> {
        let _ = std::fs::remove_file(self.root.join("status.json"));
        self.child = spawn(
            cluster,
            self.node,
            agent_bin,
            manifests,
            &self.root,
            &self.extra,
        )?;
        Ok(())
    }

    /// Reports `pod` as an endpoint of this node, as the CNI plugin does on ADD.
    pub fn report_endpoint(&self, pod: &Pod) -> Result<(), AgentError> {
        let rec = serde_json::json!({
            "namespace": pod.namespace(), "name": pod.name(),
            "ifname": pod.host_veth(), "ips": pod.ips(),
        });
        let path =
            self.root
                .join("endpoints")
                .join(format!("{}_{}.json", pod.namespace(), pod.name()));
        write_atomic(&path, rec.to_string().as_bytes())
    }

    /// Withdraws `pod`'s report, as CNI DEL does.
    pub fn withdraw_endpoint(&self, namespace: &str, name: &str) -> Result<(), AgentError> {
        let path = self
            .root
            .join("endpoints")
            .join(format!("{namespace}_{name}.json"));
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(&path)(e)),
            _ => Ok(()),
        }
    }

    /// The last status the agent wrote.
    pub fn status(&self) -> Option<Value> {
        let text = std::fs::read_to_string(self.root.join("status.json")).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Waits until the agent applied `revision` and reports every pod in `pods` attached.
    pub fn wait_applied(
        &mut self,
        revision: u64,
        pods: &[String],
        timeout: Duration,
    ) -> Result<Value, AgentError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().map_err(io(&self.root))? {
                return Err(AgentError::Exited {
                    node: self.node,
                    status,
                });
            }
            let st = self.status();
            if let Some(s) = &st {
                let applied = s["applied_revision"].as_u64().unwrap_or(0) >= revision;
                let attached = pods
                    .iter()
                    .all(|p| s["endpoints"][p.as_str()] == "attached");
                if applied && attached {
                    return Ok(s.clone());
                }
            }
            if Instant::now() > deadline {
                let last = st.map(|s| s.to_string()).unwrap_or_else(|| "none".into());
                return Err(AgentError::NotApplied {
                    node: self.node,
                    revision,
                    secs: timeout.as_secs(),
                    last,
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The agent's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.root.join("agent.log")).unwrap_or_default()
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        // SAFETY: signalling the child we spawned, by its PID.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let _ = self.child.wait();
        let bpffs = self.root.join("bpffs");
        if let Ok(c) = std::ffi::CString::new(bpffs.as_os_str().as_encoded_bytes()) {
            // SAFETY: valid NUL-terminated path.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn spawn(
    cluster: &TestCluster,
    node: usize,
    agent_bin: &Path,
    manifests: &Manifests,
    root: &Path,
    extra: &[String],
) -> Result<Child, AgentError> {
    let uplink = cluster.node(node).uplink();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(root.join("agent.log"))
        .map_err(io(root))?;
    let mut cmd = cluster.node_command(node, agent_bin)?;
    cmd.arg("agent")
        .args(["--node", &node_name(node)])
        .arg("--manifests")
        .arg(manifests.dir())
        .arg("--endpoints")
        .arg(root.join("endpoints"))
        .arg("--bpffs")
        .arg(root.join("bpffs"))
        .arg("--status")
        .arg(root.join("status.json"))
        .args(["--uplink", uplink])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    cmd.spawn().map_err(io(agent_bin))
}

/// The node name agents and pod manifests use for node `idx`.
pub fn node_name(idx: usize) -> String {
    format!("node-{idx}")
}
