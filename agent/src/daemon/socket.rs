//! The agent's local socket: one JSON request per line, one JSON response per line. Root-only
//! (mode 0600). Used by the CNI plugin (`cni_add`, `cni_del`) and the CLI (`status`, ...).
//!
//! The main loop owns the dataplane; the socket threads talk to it through [`Shared`]: they
//! write endpoint reports into the endpoints directory (which also makes them survive an agent
//! restart) and wait for the main loop to publish a sync that has attached the pod.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::IpAddr,
    os::unix::{
        fs::PermissionsExt as _,
        net::{UnixListener, UnixStream},
    },
    path::{Path, PathBuf},
    sync::{Arc, Condvar, Mutex},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{endpoints::EndpointRecord, Status};
use crate::sync::EndpointState;

/// What a client may ask.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// The last published status.
    Status,
    /// A pod's sandbox was created: attach it with its policy before answering.
    CniAdd(CniEndpoint),
    /// A pod's sandbox is going away.
    CniDel(CniEndpoint),
    /// `palisade explain --socket`: explain a connection against the live model, and check that
    /// the maps agree with it.
    Explain(crate::observe::ExplainQuery),
    /// `palisade lint --socket`: lint the live model.
    Lint,
    /// The Prometheus text exposition (the same as the metrics endpoint).
    Metrics,
}

/// What the CNI plugin reports about a pod.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CniEndpoint {
    pub namespace: String,
    pub name: String,
    /// Host-side interface name (in the agent's network namespace).
    #[serde(default)]
    pub ifname: String,
    #[serde(default)]
    pub ips: Vec<IpAddr>,
    #[serde(default)]
    pub netns: Option<String>,
    #[serde(default)]
    pub container_id: Option<String>,
}

/// One response line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub body: Value,
}

impl Response {
    fn ok(body: Value) -> Self {
        Self {
            ok: true,
            error: None,
            body,
        }
    }

    fn err(message: impl Into<String>) -> Self {
        Self {
            ok: false,
            error: Some(message.into()),
            body: Value::Null,
        }
    }
}

/// State the main loop publishes for the socket threads.
#[derive(Debug)]
pub struct Shared {
    pub endpoints_dir: PathBuf,
    /// Live state and questions for the main loop (observability).
    pub board: Arc<crate::observe::Board>,
    status: Mutex<Option<Arc<Status>>>,
    published: Condvar,
}

impl Shared {
    pub fn new(endpoints_dir: PathBuf) -> Arc<Self> {
        Arc::new(Self {
            endpoints_dir,
            board: Arc::default(),
            status: Mutex::new(None),
            published: Condvar::new(),
        })
    }

    /// Publishes the status of a finished sync and wakes waiting requests.
    pub fn publish(&self, status: Status) {
        let mut slot = self
            .status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *slot = Some(Arc::new(status));
        self.published.notify_all();
    }

    pub fn status(&self) -> Option<Arc<Status>> {
        self.status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Waits until `done` holds for a published status, or `timeout` passes.
    fn wait_for(&self, timeout: Duration, done: impl Fn(&Status) -> bool) -> Option<Arc<Status>> {
        let deadline = Instant::now() + timeout;
        let mut slot = self
            .status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        loop {
            if let Some(s) = slot.as_ref().filter(|s| done(s)) {
                return Some(s.clone());
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            slot = self
                .published
                .wait_timeout(slot, left)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }
}

/// How long a CNI ADD waits for its pod to be attached with its policy.
pub const CNI_ADD_TIMEOUT: Duration = Duration::from_secs(20);

/// Binds the socket (replacing a stale one), root-only, and serves it on background threads.
pub fn serve(path: &Path, shared: Arc<Shared>) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    std::thread::Builder::new()
        .name("socket".into())
        .spawn(move || {
            for conn in listener.incoming().flatten() {
                let shared = shared.clone();
                let _ = std::thread::Builder::new()
                    .name("socket-conn".into())
                    .spawn(move || {
                        if let Err(e) = handle(conn, &shared) {
                            tracing::debug!("socket client: {e}");
                        }
                    });
            }
        })?;
    Ok(())
}

fn handle(conn: UnixStream, shared: &Shared) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut writer = conn;
    let mut line = String::new();
    while reader.read_line(&mut line)? > 0 {
        let response = match serde_json::from_str::<Request>(line.trim()) {
            Ok(req) => dispatch(req, shared),
            Err(e) => Response::err(format!("bad request: {e}")),
        };
        let mut out = serde_json::to_vec(&response).map_err(std::io::Error::other)?;
        out.push(b'\n');
        writer.write_all(&out)?;
        line.clear();
    }
    Ok(())
}

fn dispatch(req: Request, shared: &Shared) -> Response {
    match req {
        Request::Status => match shared.status() {
            Some(s) => serde_json::to_value(&*s).map_or_else(
                |e| Response::err(e.to_string()),
                |mut v| {
                    v["dataplane"] =
                        serde_json::to_value(shared.board.snapshot()).unwrap_or_default();
                    Response::ok(v)
                },
            ),
            None => Response::err("the agent has not finished its first sync yet"),
        },
        Request::CniAdd(ep) => cni_add(&ep, shared),
        Request::CniDel(ep) => cni_del(&ep, shared),
        Request::Explain(q) => ask(shared, crate::observe::Query::Explain(q)),
        Request::Lint => ask(shared, crate::observe::Query::Lint),
        Request::Metrics => Response::ok(Value::String(shared.board.metrics_text())),
    }
}

/// Live questions go to the main loop, which owns the dataplane.
fn ask(shared: &Shared, query: crate::observe::Query) -> Response {
    match shared.board.ask(query, Duration::from_secs(30)) {
        Ok(body) => Response::ok(body),
        Err(e) => Response::err(e),
    }
}

fn record_path(shared: &Shared, namespace: &str, name: &str) -> PathBuf {
    shared
        .endpoints_dir
        .join(format!("{namespace}_{name}.json"))
}

/// Writes the pod's endpoint report and waits for a sync that attached it with its policy.
fn cni_add(ep: &CniEndpoint, shared: &Shared) -> Response {
    if ep.ifname.is_empty() {
        return Response::err("cni_add needs the host interface name");
    }
    let rec = EndpointRecord {
        namespace: ep.namespace.clone(),
        name: ep.name.clone(),
        ifname: ep.ifname.clone(),
        ips: ep.ips.clone(),
    };
    let path = record_path(shared, &ep.namespace, &ep.name);
    if let Err(e) = write_atomic(&path, &rec) {
        return Response::err(format!("recording endpoint: {e}"));
    }
    let key = format!("{}/{}", ep.namespace, ep.name);
    let written = std::time::SystemTime::now();
    let done = |s: &Status| {
        s.synced_at >= written && s.endpoints.get(&key) == Some(&EndpointState::Attached)
    };
    match shared.wait_for(CNI_ADD_TIMEOUT, done) {
        Some(_) => Response::ok(serde_json::json!({"endpoint": key, "state": "attached"})),
        None => {
            let state = shared.status().and_then(|s| s.endpoints.get(&key).copied());
            Response::err(format!(
                "{key} not attached with its policy within {} s (state {state:?}); it stays fail-closed",
                CNI_ADD_TIMEOUT.as_secs()
            ))
        }
    }
}

fn cni_del(ep: &CniEndpoint, shared: &Shared) -> Response {
    let path = record_path(shared, &ep.namespace, &ep.name);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Response::err(format!("removing {}: {e}", path.display())),
    }
    let key = format!("{}/{}", ep.namespace, ep.name);
    let written = std::time::SystemTime::now();
    let done = |s: &Status| s.synced_at >= written && !s.endpoints.contains_key(&key);
    match shared.wait_for(CNI_ADD_TIMEOUT, done) {
        Some(_) => Response::ok(serde_json::json!({"endpoint": key, "state": "detached"})),
        None => Response::err(format!(
            "{key} still attached after {} s",
            CNI_ADD_TIMEOUT.as_secs()
        )),
    }
}

fn write_atomic(path: &Path, rec: &EndpointRecord) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(
        &tmp,
        serde_json::to_vec(rec).map_err(std::io::Error::other)?,
    )?;
    std::fs::rename(&tmp, path)
}

/// Sends one request to the agent at `path` and returns its response (for the CLI and plugin).
pub fn request(path: &Path, req: &Request, timeout: Duration) -> std::io::Result<Response> {
    let mut conn = UnixStream::connect(path)?;
    conn.set_read_timeout(Some(timeout))?;
    let mut line = serde_json::to_vec(req).map_err(std::io::Error::other)?;
    line.push(b'\n');
    conn.write_all(&line)?;
    let mut reader = BufReader::new(conn);
    let mut answer = String::new();
    reader.read_line(&mut answer)?;
    serde_json::from_str(&answer).map_err(std::io::Error::other)
}
