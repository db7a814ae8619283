//! `palisade-cni`, a chained CNI plugin (spec 1.0). It adds no interface: on ADD it reports the
//! pod to the agent and returns the previous plugin's result unchanged, but only once the agent
//! has attached the pod with its policy.
//!
//! Spec, "Chained Plugins": "the plugin ... must output a result ... If the plugin did not
//! change the result, it should output the `prevResult` it received." ADD: "If the plugin
//! cannot complete ... it must return an error"; a runtime then tears the sandbox down and
//! retries, so a pod never runs before the agent has it.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;
use serde_json::{json, Value};

use crate::daemon::socket::{self, CniEndpoint, Request};

/// Versions this plugin understands (its output is always the input's prevResult).
pub const SUPPORTED_VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];
/// Where the agent listens unless the network config says otherwise.
pub const DEFAULT_SOCKET: &str = "/run/palisade/palisade.sock";
/// How long ADD waits for the agent (it waits up to `CNI_ADD_TIMEOUT` for the attach itself).
pub const AGENT_TIMEOUT: Duration = Duration::from_secs(30);

/// The spec's well-known error codes we use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    IncompatibleVersion = 1,
    InvalidEnv = 4,
    Io = 5,
    Decode = 6,
    InvalidConfig = 7,
    TryAgainLater = 11,
}

/// A failed command, printed as the spec's error object.
#[derive(Debug, thiserror::Error)]
#[error("{msg}")]
pub struct CniError {
    pub code: Code,
    pub msg: String,
    pub details: String,
}

impl CniError {
    fn new(code: Code, msg: impl Into<String>, details: impl ToString) -> Self {
        Self {
            code,
            msg: msg.into(),
            details: details.to_string(),
        }
    }

    /// "the plugin must output to stdout ... {cniVersion, code, msg, details}".
    pub fn to_json(&self, version: &str) -> Value {
        json!({"cniVersion": version, "code": self.code as u32, "msg": self.msg, "details": self.details})
    }
}

/// The network configuration the runtime passes on stdin.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    pub cni_version: String,
    #[serde(default)]
    pub name: String,
    /// The agent's socket (default [`DEFAULT_SOCKET`]).
    #[serde(default)]
    pub socket: Option<PathBuf>,
    #[serde(default)]
    pub prev_result: Option<Value>,
}

/// The CNI_* environment of one call.
#[derive(Debug, Clone, Default)]
pub struct Env {
    pub command: String,
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    /// `CNI_ARGS`: `K1=V1;K2=V2`.
    pub args: String,
}

impl Env {
    pub fn from_process() -> Self {
        let var = |k: &str| std::env::var(k).unwrap_or_default();
        Self {
            command: var("CNI_COMMAND"),
            container_id: var("CNI_CONTAINERID"),
            netns: var("CNI_NETNS"),
            ifname: var("CNI_IFNAME"),
            args: var("CNI_ARGS"),
        }
    }

    fn arg(&self, key: &str) -> Option<String> {
        parse_args(&self.args).remove(key)
    }

    /// kubelet's `K8S_POD_NAMESPACE` and `K8S_POD_NAME`; `None` for a non-Kubernetes sandbox.
    pub fn pod(&self) -> Option<(String, String)> {
        Some((self.arg("K8S_POD_NAMESPACE")?, self.arg("K8S_POD_NAME")?))
    }
}

/// Parses CNI_ARGS: "alphanumeric key-value pairs separated by semicolons".
pub fn parse_args(args: &str) -> BTreeMap<String, String> {
    args.split(';')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

#[derive(Debug, Deserialize)]
struct PrevInterface {
    name: String,
    #[serde(default)]
    sandbox: Option<String>,
}

#[derive(Debug, Deserialize)]
struct PrevIp {
    address: String,
}

/// The host end of the pod's veth and the pod's IPs, from the previous plugin's result:
/// the interfaces without a `sandbox` are on the host; a bridge is one of them too.
pub fn endpoint_of(
    prev: &Value,
    is_bridge: impl Fn(&str) -> bool,
) -> Result<(String, Vec<IpAddr>), CniError> {
    let decode = |e: serde_json::Error| CniError::new(Code::Decode, "cannot read prevResult", e);
    let ifaces: Vec<PrevInterface> =
        serde_json::from_value(prev.get("interfaces").cloned().unwrap_or(json!([])))
            .map_err(decode)?;
    let ips: Vec<PrevIp> =
        serde_json::from_value(prev.get("ips").cloned().unwrap_or(json!([]))).map_err(decode)?;
    // bridge lists [bridge, host veth, pod eth0], ptp [host veth, pod eth0]: the host veth is
    // the last host-side interface that is not a bridge.
    let host = ifaces
        .iter()
        .rfind(|i| i.sandbox.as_deref().is_none_or(str::is_empty) && !is_bridge(&i.name))
        .ok_or_else(|| {
            CniError::new(
                Code::InvalidConfig,
                "prevResult has no host-side interface (is palisade-cni chained after a veth plugin?)",
                prev,
            )
        })?;
    let ips = ips
        .iter()
        .filter_map(|ip| ip.address.split('/').next()?.parse().ok())
        .collect();
    Ok((host.name.clone(), ips))
}

/// Whether `name` is a bridge in this network namespace.
pub fn is_bridge(name: &str) -> bool {
    Path::new("/sys/class/net")
        .join(name)
        .join("bridge")
        .is_dir()
}

/// The result of one command: what to print on stdout (nothing for DEL).
pub type Output = Option<Value>;

/// Runs one CNI command.
pub fn run(env: &Env, stdin: &[u8]) -> Result<Output, CniError> {
    if env.command == "VERSION" {
        return Ok(Some(version_result(stdin)));
    }
    let conf: NetConf = serde_json::from_slice(stdin)
        .map_err(|e| CniError::new(Code::Decode, "cannot read the network configuration", e))?;
    if !SUPPORTED_VERSIONS.contains(&conf.cni_version.as_str()) {
        return Err(CniError::new(
            Code::IncompatibleVersion,
            format!("cniVersion {} is not supported", conf.cni_version),
            SUPPORTED_VERSIONS.join(", "),
        ));
    }
    let socket = conf
        .socket
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET));
    match env.command.as_str() {
        "ADD" => add(env, &conf, &socket).map(Some),
        "DEL" => del(env, &socket).map(|()| None),
        "CHECK" => check(env, &conf, &socket).map(|()| None),
        other => Err(CniError::new(
            Code::InvalidEnv,
            format!("unknown CNI_COMMAND {other:?}"),
            "ADD, DEL, CHECK or VERSION",
        )),
    }
}

fn version_result(stdin: &[u8]) -> Value {
    let asked = serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|v| {
            v.get("cniVersion")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "1.0.0".to_owned());
    json!({"cniVersion": asked, "supportedVersions": SUPPORTED_VERSIONS})
}

fn endpoint(env: &Env, ifname: String, ips: Vec<IpAddr>) -> Option<CniEndpoint> {
    let (namespace, name) = env.pod()?;
    Some(CniEndpoint {
        namespace,
        name,
        ifname,
        ips,
        netns: Some(env.netns.clone()).filter(|n| !n.is_empty()),
        container_id: Some(env.container_id.clone()).filter(|c| !c.is_empty()),
    })
}

/// ADD: the agent attaches the pod with its policy, then we pass prevResult on.
fn add(env: &Env, conf: &NetConf, socket_path: &Path) -> Result<Value, CniError> {
    let prev = conf.prev_result.clone().ok_or_else(|| {
        CniError::new(
            Code::InvalidConfig,
            "palisade-cni must be chained after the plugin that creates the pod's interface",
            "no prevResult",
        )
    })?;
    let (ifname, ips) = endpoint_of(&prev, is_bridge)?;
    let Some(ep) = endpoint(env, ifname, ips) else {
        // Not a Kubernetes pod (no K8S_POD_* in CNI_ARGS): nothing for NetworkPolicy to police.
        return Ok(prev);
    };
    let answer =
        socket::request(socket_path, &Request::CniAdd(ep), AGENT_TIMEOUT).map_err(|e| {
            CniError::new(
                Code::TryAgainLater,
                format!(
                    "the Palisade agent at {} is not reachable",
                    socket_path.display()
                ),
                e,
            )
        })?;
    if !answer.ok {
        return Err(CniError::new(
            Code::TryAgainLater,
            "the Palisade agent did not attach the pod",
            answer.error.unwrap_or_default(),
        ));
    }
    Ok(prev)
}

/// DEL: "Plugins should generally complete a DEL action without error even if some resources
/// are missing". An unreachable agent is not an error: its endpoint report names an interface
/// that is gone, which it skips, and a restarted agent reconciles.
fn del(env: &Env, socket_path: &Path) -> Result<(), CniError> {
    let Some(ep) = endpoint(env, env.ifname.clone(), Vec::new()) else {
        return Ok(());
    };
    match socket::request(socket_path, &Request::CniDel(ep), AGENT_TIMEOUT) {
        Ok(answer) if !answer.ok => eprintln!(
            "palisade-cni: DEL: the agent answered: {}",
            answer.error.unwrap_or_default()
        ),
        Ok(_) => {}
        Err(e) => eprintln!(
            "palisade-cni: DEL: agent at {} not reachable: {e}",
            socket_path.display()
        ),
    }
    Ok(())
}

/// CHECK: the pod is attached in the agent's last published state.
fn check(env: &Env, conf: &NetConf, socket_path: &Path) -> Result<(), CniError> {
    if conf.prev_result.is_none() {
        return Err(CniError::new(
            Code::InvalidConfig,
            "CHECK needs prevResult",
            "",
        ));
    }
    let Some((namespace, name)) = env.pod() else {
        return Ok(());
    };
    let key = format!("{namespace}/{name}");
    let answer = socket::request(socket_path, &Request::Status, AGENT_TIMEOUT)
        .map_err(|e| CniError::new(Code::Io, "the Palisade agent is not reachable", e))?;
    let state = answer.body["endpoints"][&key]
        .as_str()
        .unwrap_or("unknown")
        .to_owned();
    if state != "attached" {
        return Err(CniError::new(
            Code::TryAgainLater,
            format!("{key} is not attached (state {state})"),
            "",
        ));
    }
    Ok(())
}
