//! Invoking the reference CNI plugins exactly as a container runtime does.
//!
//! A runtime runs each plugin of the network's conflist as a child process with the CNI_*
//! environment and the plugin's config (plus `name`, `cniVersion` and the previous plugin's
//! result as `prevResult`) on stdin. The plugin creates the host end of the pod's veth in its
//! *own* network namespace, so the harness starts it inside the node namespace, with CNI_NETNS
//! naming the pod namespace.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::exec::{self, ExecError};
use crate::netns::{self, NetnsError};

/// The CNI spec version the harness speaks (containernetworking-plugins 1.1.1 supports it).
pub const CNI_VERSION: &str = "1.0.0";
/// The network name; host-local keeps its state under `<dataDir>/<name>`.
pub const NETWORK_NAME: &str = "palisade-test";
/// The bridge the `bridge` plugin creates in each node namespace.
pub const BRIDGE_NAME: &str = "cni0";
/// Where Debian's containernetworking-plugins installs the plugins.
pub const DEFAULT_CNI_PATH: &str = "/usr/lib/cni";

/// Which main plugin wires pods.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CniMode {
    /// `bridge` with host-local IPAM: pods on one L2 bridge, the bridge is their gateway.
    Bridge,
    /// `ptp` with host-local IPAM: a routed veth per pod.
    Ptp,
}

/// A plugin failed or answered something unexpected.
#[derive(Debug, thiserror::Error)]
pub enum CniError {
    #[error("CNI {command} of plugin {plugin}: {source}")]
    Exec {
        command: &'static str,
        plugin: String,
        #[source]
        source: ExecError,
    },
    #[error("cannot enter the node namespace for CNI: {0}")]
    Netns(#[from] NetnsError),
    #[error("CNI plugin {plugin} returned an unreadable result: {source}")]
    Parse {
        plugin: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("CNI result has no host-side interface: {0}")]
    NoHostVeth(String),
}

/// The parts of a CNI result the harness uses; `raw` is the whole result, for prevResult.
#[derive(Clone, Debug)]
pub struct CniResult {
    pub interfaces: Vec<CniInterface>,
    pub ips: Vec<CniIp>,
    pub raw: Value,
}

#[derive(Clone, Debug, Deserialize)]
pub struct CniInterface {
    pub name: String,
    #[serde(default)]
    pub mac: Option<String>,
    #[serde(default)]
    pub sandbox: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct CniIp {
    #[serde(default)]
    pub interface: Option<usize>,
    pub address: IpNet,
    #[serde(default)]
    pub gateway: Option<IpAddr>,
}

#[derive(Deserialize)]
struct RawResult {
    #[serde(default)]
    interfaces: Vec<CniInterface>,
    #[serde(default)]
    ips: Vec<CniIp>,
}

impl CniResult {
    fn parse(plugin: &str, stdout: &[u8]) -> Result<Self, CniError> {
        let perr = |source| CniError::Parse {
            plugin: plugin.to_owned(),
            source,
        };
        let raw: Value = serde_json::from_slice(stdout).map_err(perr)?;
        let parsed: RawResult = serde_json::from_value(raw.clone()).map_err(perr)?;
        Ok(CniResult {
            interfaces: parsed.interfaces,
            ips: parsed.ips,
            raw,
        })
    }

    /// The pod's addresses (without prefix length).
    pub fn pod_ips(&self) -> Vec<IpAddr> {
        self.ips.iter().map(|ip| ip.address.addr()).collect()
    }

    /// The host end of the pod's veth: the interface outside any sandbox that is not the bridge.
    pub fn host_veth(&self) -> Result<&str, CniError> {
        self.interfaces
            .iter()
            .find(|i| i.sandbox.is_none() && i.name != BRIDGE_NAME)
            .map(|i| i.name.as_str())
            .ok_or_else(|| CniError::NoHostVeth(self.raw.to_string()))
    }
}

/// The plugin config of the main plugin for one node (its pod subnets, its IPAM state dir).
pub fn main_plugin(mode: CniMode, subnets: &[IpNet], ipam_dir: &Path) -> Value {
    let ranges: Vec<Value> = subnets.iter().map(|s| json!([{ "subnet": s }])).collect();
    let routes: Vec<Value> = subnets
        .iter()
        .map(|s| match s {
            IpNet::V4(_) => json!({ "dst": "0.0.0.0/0" }),
            IpNet::V6(_) => json!({ "dst": "::/0" }),
        })
        .collect();
    let ipam =
        json!({ "type": "host-local", "dataDir": ipam_dir, "ranges": ranges, "routes": routes });
    match mode {
        // hairpinMode: a pod reaching itself through its ClusterIP leaves and re-enters
        // through the same bridge port; ipMasq off as with kube-proxy doing the masquerading.
        CniMode::Bridge => json!({
            "type": "bridge", "bridge": BRIDGE_NAME, "isGateway": true,
            "ipMasq": false, "hairpinMode": true, "ipam": ipam,
        }),
        CniMode::Ptp => json!({ "type": "ptp", "ipMasq": false, "ipam": ipam }),
    }
}

/// One pod's attachment: what a runtime keeps to call DEL later.
#[derive(Clone, Debug)]
pub struct Attachment {
    /// The node namespace the plugins run in.
    pub node_netns: String,
    pub container_id: String,
    pub pod_netns: PathBuf,
    pub ifname: String,
    /// `K8S_POD_NAMESPACE` / `K8S_POD_NAME`, passed in CNI_ARGS as kubelet does.
    pub pod_namespace: String,
    pub pod_name: String,
    pub cni_path: String,
}

impl Attachment {
    fn run(
        &self,
        command: &'static str,
        plugin: &Value,
        prev: Option<&Value>,
    ) -> Result<Vec<u8>, CniError> {
        let kind = plugin["type"].as_str().unwrap_or("").to_owned();
        let mut conf = plugin.clone();
        conf["name"] = json!(NETWORK_NAME);
        conf["cniVersion"] = json!(CNI_VERSION);
        if let Some(prev) = prev {
            conf["prevResult"] = prev.clone();
        }
        let binary = self
            .cni_path
            .split(':')
            .map(|dir| Path::new(dir).join(&kind))
            .find(|p| p.exists())
            .unwrap_or_else(|| Path::new(DEFAULT_CNI_PATH).join(&kind));
        let mut cmd = netns::command_in(&self.node_netns, binary)?;
        cmd.env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", &self.container_id)
            .env("CNI_NETNS", &self.pod_netns)
            .env("CNI_IFNAME", &self.ifname)
            .env("CNI_PATH", &self.cni_path)
            .env("CNI_ARGS", self.cni_args());
        let stdin = serde_json::to_vec(&conf).expect("JSON value serializes");
        let out = exec::run_with_input(&mut cmd, &stdin).map_err(|source| CniError::Exec {
            command,
            plugin: kind,
            source,
        })?;
        Ok(out.stdout)
    }

    fn cni_args(&self) -> String {
        format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={}",
            self.pod_namespace, self.pod_name, self.container_id
        )
    }

    /// ADD through the chain: each plugin gets the previous one's result as prevResult.
    pub fn add(&self, chain: &[Value]) -> Result<CniResult, CniError> {
        let mut prev: Option<CniResult> = None;
        for plugin in chain {
            let kind = plugin["type"].as_str().unwrap_or("").to_owned();
            let out = self.run("ADD", plugin, prev.as_ref().map(|r| &r.raw))?;
            prev = Some(CniResult::parse(&kind, &out)?);
        }
        prev.ok_or_else(|| CniError::NoHostVeth("empty plugin chain".to_owned()))
    }

    /// DEL through the chain in reverse order, with the final ADD result as prevResult.
    /// Every plugin is called even if one fails; the first error is returned.
    pub fn del(&self, chain: &[Value], result: &Value) -> Result<(), CniError> {
        let mut first_err = None;
        for plugin in chain.iter().rev() {
            if let Err(e) = self.run("DEL", plugin, Some(result)) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Brings up the pod's loopback with the `loopback` plugin, as runtimes do.
    pub fn loopback(&self, command: &'static str) -> Result<(), CniError> {
        let lo = Attachment {
            ifname: "lo".to_owned(),
            ..self.clone()
        };
        lo.run(command, &json!({ "type": "loopback" }), None)
            .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bridge_result_and_finds_host_veth() {
        let out =
            br#"{"cniVersion":"1.0.0","interfaces":[{"name":"cni0","mac":"76:3c:fb:28:d0:73"},
            {"name":"veth4b334549","mac":"22:d1:fc:23:bf:78"},
            {"name":"eth0","mac":"52:22:ab:69:69:35","sandbox":"/var/run/netns/p"}],
            "ips":[{"interface":2,"address":"10.244.0.2/24","gateway":"10.244.0.1"},
                   {"interface":2,"address":"fd00:10:244::2/64","gateway":"fd00:10:244::1"}],
            "routes":[{"dst":"0.0.0.0/0"}],"dns":{}}"#;
        let r = CniResult::parse("bridge", out).unwrap();
        assert_eq!(r.host_veth().unwrap(), "veth4b334549");
        let ips: Vec<String> = r.pod_ips().iter().map(ToString::to_string).collect();
        assert_eq!(ips, ["10.244.0.2", "fd00:10:244::2"]);
    }

    #[test]
    fn main_plugin_config_has_ranges_per_family() {
        let subnets: Vec<IpNet> = vec![
            "10.244.0.0/24".parse().unwrap(),
            "fd00::/64".parse().unwrap(),
        ];
        let c = main_plugin(CniMode::Bridge, &subnets, Path::new("/tmp/x"));
        assert_eq!(c["ipam"]["ranges"][1][0]["subnet"], "fd00::/64");
        assert_eq!(c["ipam"]["routes"][0]["dst"], "0.0.0.0/0");
        assert_eq!(c["hairpinMode"], true);
        assert_eq!(
            main_plugin(CniMode::Ptp, &subnets, Path::new("/x"))["type"],
            "ptp"
        );
    }
}
