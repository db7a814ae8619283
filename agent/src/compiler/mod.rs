//! The policy compiler: pure (no I/O, no aya, no kube client), deterministic and incremental.
//!
//! [`compile`] turns a [`Model`] into a [`CompiledOutput`]; a [`Compiler`] keeps its caches and
//! applies [`ModelChange`]s, recompiling only what they affect and returning a [`Delta`].
//! [`verdict`] looks a packet up in the output exactly as the dataplane does.

pub mod bench;
mod cluster;
mod cluster_state;
mod endpoints;
mod identity;
mod lookup;
pub mod output;
mod parse;
mod problems;
mod rules;
mod selector;
mod state;
mod tiers;

use serde::{Deserialize, Serialize};

pub use cluster::{cluster_key, ClusterAction};
pub use lookup::{lookup_identity, verdict, SideDecision, Verdict};
pub use output::{
    Action, AllowEntry, AllowTable, CompiledOutput, Delta, Direction, DirectionPolicy,
    EndpointPolicy, EntryValue, IdentityInfo, IdentityKey, IdentityTable, Peer, PolicyProblem,
    PortPrefix, RuleRef, Severity, TableId, Tier, FIRST_ALLOCATED_IDENTITY, IDENTITY_ANY,
    IDENTITY_HOST, IDENTITY_WORLD,
};
pub use problems::PolicyError;
pub use rules::port_blocks;
pub use state::Compiler;

use crate::model::{Model, ModelChange};

/// Compile-time choices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompileOptions {
    /// The node to compile for: only its pods become endpoints and only its addresses are HOST.
    /// `None` = every pod is an endpoint (offline tools), each with its own node's addresses.
    pub node: Option<String>,
    /// "Traffic to and from the node a pod runs on is always allowed (kubelet probes), by
    /// default." When false, node addresses are ordinary addresses subject to ipBlock rules.
    pub allow_node_traffic: bool,
}

impl Default for CompileOptions {
    fn default() -> Self {
        Self {
            node: None,
            allow_node_traffic: true,
        }
    }
}

/// Compiles a whole model from scratch.
pub fn compile(model: &Model, options: &CompileOptions) -> CompiledOutput {
    let mut compiler = Compiler::new(options.clone());
    compiler.apply(model.as_changes());
    compiler.into_output()
}

/// Convenience: applies `changes` to `model` through a fresh compiler and returns the output.
pub fn compile_with_changes(
    model: &Model,
    changes: Vec<ModelChange>,
    options: &CompileOptions,
) -> CompiledOutput {
    let mut compiler = Compiler::new(options.clone());
    compiler.apply(model.as_changes());
    compiler.apply(changes);
    compiler.into_output()
}
