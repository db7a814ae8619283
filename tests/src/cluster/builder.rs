//! Building a [`TestCluster`]: nodes, underlay, kube-proxy base rules.

use std::path::PathBuf;
use std::sync::Mutex;

use serde_json::Value;

use super::{ClusterError, State, TestCluster};
use crate::addr::{self, Family};
use crate::cni::{CniMode, DEFAULT_CNI_PATH};
use crate::names::RunId;
use crate::node::{self, Node};

/// Options for [`TestCluster`].
#[derive(Clone, Debug)]
pub struct TestClusterBuilder {
    family: Family,
    nodes: usize,
    cni: CniMode,
    chained: Vec<Value>,
    probe_bin: Option<PathBuf>,
    cni_path: String,
}

impl TestClusterBuilder {
    pub fn family(mut self, family: Family) -> Self {
        self.family = family;
        self
    }
    pub fn nodes(mut self, n: usize) -> Self {
        self.nodes = n;
        self
    }
    pub fn cni(mut self, mode: CniMode) -> Self {
        self.cni = mode;
        self
    }
    /// Appends a plugin config to every node's conflist after the main plugin (for example the
    /// chained `palisade-cni`); its `type` is looked up in the CNI path.
    pub fn chain_plugin(mut self, config: Value) -> Self {
        self.chained.push(config);
        self
    }
    /// Where `probe` is (integration tests pass `env!("CARGO_BIN_EXE_probe")`).
    pub fn probe_bin(mut self, path: impl Into<PathBuf>) -> Self {
        self.probe_bin = Some(path.into());
        self
    }
    /// The CNI_PATH (colon-separated); default /usr/lib/cni.
    pub fn cni_path(mut self, path: &str) -> Self {
        self.cni_path = path.to_owned();
        self
    }

    pub fn build(self) -> Result<TestCluster, ClusterError> {
        if !(1..=addr::MAX_NODES).contains(&self.nodes) {
            return Err(ClusterError::NodeCount(self.nodes));
        }
        let probe_bin = find_probe_bin(self.probe_bin)?;
        // Leftovers of killed runs (dead owner PID only; live clusters are never touched).
        crate::names::cleanup_stale();
        let run = RunId::fresh();
        let state_dir = StateDir::create(run.state_dir())?;
        let nodes = (0..self.nodes)
            .map(|i| Node::create(&run, i, self.family, self.cni, &self.chained, &state_dir.0))
            .collect::<Result<Vec<_>, _>>()?;
        let underlay = node::link_underlay(&run, &nodes)?;
        for n in &nodes {
            n.configure(nodes.len())?;
        }
        Ok(TestCluster {
            state: Mutex::new(State::default()),
            nodes,
            _underlay: underlay,
            _state_dir: state_dir,
            run,
            family: self.family,
            probe_bin,
            cni_path: self.cni_path,
        })
    }
}

fn find_probe_bin(explicit: Option<PathBuf>) -> Result<PathBuf, ClusterError> {
    let mut candidates: Vec<PathBuf> = explicit.into_iter().collect();
    candidates.extend(std::env::var_os("PALISADE_PROBE_BIN").map(PathBuf::from));
    if let Ok(exe) = std::env::current_exe() {
        // target/<profile>/<exe> and target/<profile>/deps/<test exe>.
        for dir in exe.ancestors().skip(1).take(2) {
            candidates.push(dir.join("probe"));
        }
    }
    match candidates.iter().find(|p| p.is_file()) {
        Some(p) => Ok(p.clone()),
        None => Err(ClusterError::ProbeBinNotFound(candidates)),
    }
}

/// Removes the run's state directory (host-local IPAM data) on drop.
#[derive(Debug)]
pub(super) struct StateDir(PathBuf);

impl StateDir {
    fn create(path: PathBuf) -> Result<Self, ClusterError> {
        std::fs::create_dir_all(&path).map_err(|source| ClusterError::StateDir {
            path: path.clone(),
            source,
        })?;
        Ok(StateDir(path))
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Default for TestClusterBuilder {
    /// IPv4, one node, bridge.
    fn default() -> Self {
        TestClusterBuilder {
            family: Family::Ipv4,
            nodes: 1,
            cni: CniMode::Bridge,
            chained: Vec::new(),
            probe_bin: None,
            cni_path: DEFAULT_CNI_PATH.to_owned(),
        }
    }
}
