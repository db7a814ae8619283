//! A real Kubernetes control plane on loopback: etcd, kube-apiserver and
//! kube-controller-manager (namespace and garbage-collector controllers only), each on ports
//! picked free at start, with state under one directory. Built from Debian's `kubernetes`
//! source package by `cargo xtask k8s up` (see ../shared/TOOLCHAIN.md) and cached.
//!
//! Tests start their own ([`ControlPlane::start`], stopped on drop); `cargo xtask k8s up`
//! starts one that outlives it ([`ControlPlane::detach`]) and `k8s down` stops it by PID.

use std::{
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use super::{pki, Binaries, ControlPlaneError};

/// How long the API server may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// The ports a control plane listens on (all on 127.0.0.1).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Ports {
    pub etcd_client: u16,
    pub etcd_peer: u16,
    pub apiserver: u16,
}

impl Ports {
    /// Ports nobody listens on right now (the kernel picks them).
    fn free() -> Result<Self, ControlPlaneError> {
        let listeners = (0..3)
            .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(ControlPlaneError::Ports)?;
        let port = |i: usize| listeners[i].local_addr().map(|a| a.port());
        Ok(Self {
            etcd_client: port(0).map_err(ControlPlaneError::Ports)?,
            etcd_peer: port(1).map_err(ControlPlaneError::Ports)?,
            apiserver: port(2).map_err(ControlPlaneError::Ports)?,
        })
    }
}

/// What `k8s down` needs to stop a detached control plane.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StateFile {
    pub dir: PathBuf,
    pub ports: Ports,
    /// (name, PID) of each process, stopped in reverse order.
    pub pids: Vec<(String, u32)>,
}

/// The name of the state file in a control plane's directory.
pub const STATE_FILE: &str = "state.json";

/// A running control plane; everything is stopped and its directory removed on drop.
#[derive(Debug)]
pub struct ControlPlane {
    dir: PathBuf,
    bins: Binaries,
    pki: pki::Pki,
    ports: Ports,
    etcd: Option<Child>,
    apiserver: Option<Child>,
    controller_manager: Option<Child>,
    detachable: bool,
    detached: bool,
}

impl ControlPlane {
    /// Starts etcd, the API server and the controller manager under a fresh directory in
    /// `parent`, and waits until the API server is ready. The processes get SIGKILL if the
    /// thread that started them dies (a killed test leaves nothing running), so start it on
    /// the thread that owns it.
    pub fn start(bins: &Binaries, parent: &Path) -> Result<Self, ControlPlaneError> {
        Self::start_with(bins, parent, false)
    }

    /// Like [`ControlPlane::start`], for a control plane that will be [`ControlPlane::detach`]ed
    /// (its processes survive the starting process).
    pub fn start_detachable(bins: &Binaries, parent: &Path) -> Result<Self, ControlPlaneError> {
        Self::start_with(bins, parent, true)
    }

    fn start_with(
        bins: &Binaries,
        parent: &Path,
        detachable: bool,
    ) -> Result<Self, ControlPlaneError> {
        let dir = unique_dir(parent)?;
        let pki_dir = dir.join("pki");
        create_dir(&pki_dir)?;
        let pki = pki::create(&pki_dir)?;
        let mut cp = Self {
            dir,
            bins: bins.clone(),
            pki,
            ports: Ports::free()?,
            etcd: None,
            apiserver: None,
            controller_manager: None,
            detachable,
            detached: false,
        };
        let kubeconfig = pki::kubeconfig(&cp.pki, &cp.server());
        write(&cp.kubeconfig(), &kubeconfig)?;
        cp.etcd = Some(cp.spawn("etcd", &cp.bins.etcd, &cp.etcd_args())?);
        wait_port(cp.ports.etcd_client, Duration::from_secs(20))
            .map_err(|_| cp.not_ready("etcd"))?;
        cp.start_apiserver()?;
        let kcm = cp.spawn(
            "kube-controller-manager",
            &cp.bins.controller_manager,
            &cp.kcm_args(),
        )?;
        cp.controller_manager = Some(kcm);
        Ok(cp)
    }

    /// `https://127.0.0.1:<port>`.
    pub fn server(&self) -> String {
        format!("https://127.0.0.1:{}", self.ports.apiserver)
    }

    /// Makes the API server reachable at the same address from inside network namespace
    /// `netns` (a test node), for agents running there; relays until dropped.
    pub fn forward_into(&self, netns: &str) -> Result<super::LoopbackForward, ControlPlaneError> {
        super::LoopbackForward::into_netns(netns, self.ports.apiserver)
    }

    /// The admin kubeconfig (absolute path).
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn ports(&self) -> Ports {
        self.ports
    }

    /// Stops the API server (SIGTERM, then reaped); etcd keeps the data.
    pub fn stop_apiserver(&mut self) {
        if let Some(child) = self.apiserver.take() {
            stop(child);
        }
    }

    /// Starts the API server (again) on the same port and waits until it is ready.
    pub fn start_apiserver(&mut self) -> Result<(), ControlPlaneError> {
        let child = self.spawn(
            "kube-apiserver",
            &self.bins.apiserver,
            &self.apiserver_args(),
        )?;
        self.apiserver = Some(child);
        self.wait_ready()
    }

    /// Keeps every process running after this value is dropped; returns what stops them.
    pub fn detach(mut self) -> Result<StateFile, ControlPlaneError> {
        let mut pids = Vec::new();
        for (name, child) in [
            ("etcd", &self.etcd),
            ("kube-apiserver", &self.apiserver),
            ("kube-controller-manager", &self.controller_manager),
        ] {
            if let Some(c) = child {
                pids.push((name.to_owned(), c.id()));
            }
        }
        let state = StateFile {
            dir: self.dir.clone(),
            ports: self.ports,
            pids,
        };
        let text = serde_json::to_string_pretty(&state).map_err(ControlPlaneError::State)?;
        write(&self.dir.join(STATE_FILE), &text)?;
        self.detached = true;
        Ok(state)
    }

    fn spawn(&self, name: &str, bin: &Path, args: &[String]) -> Result<Child, ControlPlaneError> {
        let log_path = self.dir.join(format!("{name}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|source| ControlPlaneError::Io {
                path: log_path.clone(),
                source,
            })?;
        let err = log.try_clone().map_err(|source| ControlPlaneError::Io {
            path: log_path,
            source,
        })?;
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err);
        // Own process group: a terminal's Ctrl-C reaches the test or xtask, which stops these.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        if !self.detachable {
            // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
            unsafe {
                std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        cmd.spawn().map_err(|source| ControlPlaneError::Spawn {
            bin: bin.to_owned(),
            source,
        })
    }

    fn wait_ready(&mut self) -> Result<(), ControlPlaneError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(child) = self.apiserver.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(ControlPlaneError::Exited {
                        name: "kube-apiserver".into(),
                        status,
                        log: self.log_tail("kube-apiserver"),
                    });
                }
            }
            let ready = Command::new("kubectl")
                .arg("--kubeconfig")
                .arg(self.kubeconfig())
                .args(["get", "--raw", "/readyz", "--request-timeout=2s"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map_err(ControlPlaneError::Kubectl)?;
            if ready.success() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Err(self.not_ready("kube-apiserver"))
    }

    fn not_ready(&self, name: &str) -> ControlPlaneError {
        ControlPlaneError::NotReady {
            name: name.to_owned(),
            log: self.log_tail(name),
        }
    }

    /// The last lines of a process's log, for error messages.
    pub fn log_tail(&self, name: &str) -> String {
        let text =
            std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    fn etcd_args(&self) -> Vec<String> {
        let client = format!("http://127.0.0.1:{}", self.ports.etcd_client);
        let peer = format!("http://127.0.0.1:{}", self.ports.etcd_peer);
        vec![
            "--name=palisade".into(),
            format!("--data-dir={}", self.dir.join("etcd").display()),
            format!("--listen-client-urls={client}"),
            format!("--advertise-client-urls={client}"),
            format!("--listen-peer-urls={peer}"),
            format!("--initial-advertise-peer-urls={peer}"),
            format!("--initial-cluster=palisade={peer}"),
            "--unsafe-no-fsync".into(),
            "--log-level=warn".into(),
        ]
    }

    fn apiserver_args(&self) -> Vec<String> {
        let p = &self.pki;
        let path = |p: PathBuf| p.display().to_string();
        vec![
            format!("--etcd-servers=http://127.0.0.1:{}", self.ports.etcd_client),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            format!("--secure-port={}", self.ports.apiserver),
            // 1.20 still serves plain HTTP on 8080 unless told not to.
            "--insecure-port=0".into(),
            format!("--cert-dir={}", self.dir.join("certs").display()),
            format!("--tls-cert-file={}", path(p.server_cert())),
            format!("--tls-private-key-file={}", path(p.server_key())),
            format!("--client-ca-file={}", path(p.ca_cert())),
            format!("--token-auth-file={}", path(p.token_file())),
            "--authorization-mode=RBAC".into(),
            format!("--service-account-key-file={}", path(p.sa_pub())),
            format!("--service-account-signing-key-file={}", path(p.sa_key())),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
            "--api-audiences=https://kubernetes.default.svc.cluster.local".into(),
            "--disable-admission-plugins=ServiceAccount".into(),
            "--endpoint-reconciler-type=none".into(),
            "--feature-gates=IPv6DualStack=true".into(),
            "--service-cluster-ip-range=10.96.0.0/16,fd00:96::/112".into(),
            "--allow-privileged=true".into(),
            "--profiling=false".into(),
            "--v=1".into(),
        ]
    }

    fn kcm_args(&self) -> Vec<String> {
        vec![
            format!("--kubeconfig={}", self.kubeconfig().display()),
            "--controllers=namespace,garbagecollector".into(),
            "--leader-elect=false".into(),
            "--use-service-account-credentials=false".into(),
            // No listeners at all: 1.20 would serve on 10252 (HTTP) and 10257 (HTTPS).
            "--port=0".into(),
            "--secure-port=0".into(),
            "--v=1".into(),
        ]
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if self.detached {
            return;
        }
        for child in [
            self.controller_manager.take(),
            self.apiserver.take(),
            self.etcd.take(),
        ]
        .into_iter()
        .flatten()
        {
            stop(child);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// SIGTERM, up to 10 s to exit, then SIGKILL; always reaped.
fn stop(mut child: Child) {
    signal(child.id(), libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn signal(pid: u32, sig: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: signalling a process we started, by its PID.
        unsafe { libc::kill(pid, sig) };
    }
}

/// Stops the processes of a detached control plane (checking each PID still runs the binary
/// it was, so a reused PID is never signalled) and removes its directory.
pub fn stop_detached(state: &StateFile) {
    for (name, pid) in state.pids.iter().rev() {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let ours = String::from_utf8_lossy(&cmdline).contains(&state.dir.display().to_string());
        if !ours {
            continue;
        }
        signal(*pid, libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!("{name} (PID {pid}) did not stop on SIGTERM; SIGKILL");
            signal(*pid, libc::SIGKILL);
        }
    }
    let _ = std::fs::remove_dir_all(&state.dir);
}

fn wait_port(port: u16, timeout: Duration) -> Result<(), ()> {
    let deadline = Instant::now() + timeout;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(())
}

/// Removes the directories of control planes whose owning process is gone (a killed test run;
/// their processes died with it).
pub fn cleanup_stale(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("palisade-k8s-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let detached = entry.path().join(STATE_FILE).exists();
        if !detached && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn unique_dir(parent: &Path) -> Result<PathBuf, ControlPlaneError> {
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = parent.join(format!("palisade-k8s-{}-{n}", std::process::id()));
    create_dir(&dir)?;
    Ok(dir)
}

fn create_dir(dir: &Path) -> Result<(), ControlPlaneError> {
    std::fs::create_dir_all(dir).map_err(|source| ControlPlaneError::Io {
        path: dir.to_owned(),
        source,
    })
}

fn write(path: &Path, text: &str) -> Result<(), ControlPlaneError> {
    std::fs::write(path, text).map_err(|source| ControlPlaneError::Io {
        path: path.to_owned(),
        source,
    })
}
