//! Palisade: a Kubernetes NetworkPolicy dataplane.
//!
//! Data flow: [`source`] (manifests, Kubernetes API) → [`model`] (the cluster as Palisade sees it)
//! → [`compiler`] (pure: per-endpoint allow structures) → [`dataplane`] (BPF maps, programs).
//! [`reference`] is an evaluator written straight from the spec that the compiler is tested against.
//! [`observe`] is the flow log, metrics and live state behind `palisade status`.

pub mod cli;
pub mod cni;
pub mod compiler;
pub mod daemon;
pub mod dataplane;
pub mod model;
pub mod observe;
pub mod reference;
pub mod source;
pub mod sync;
