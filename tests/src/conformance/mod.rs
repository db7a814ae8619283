//! The conformance runner: case files in the format of `shared/conformance/README.md` run
//! through the whole stack (test nodes, the real agent per node, real probes). See
//! docs/conformance.md.
//!
//! - [`case`]: the case format; [`world`]: the state a case describes and its actions;
//! - [`template`]: templates and IP classes; [`table`]: expected tables, comparison, printing;
//! - [`manifests`]: the files the agents read; [`agent`]: agent processes;
//! - [`env`]: cluster + agents, reused across cases; [`measure`]: probing with retries;
//! - [`runner`]: cases to reports; [`step`]: one probe step; [`report`]: the JSON report; [`cli`]: the command line;
//! - `kube` (feature `kube`): `--source kube`, the case state written to a real API server.

pub mod agent;
pub mod case;
pub mod cli;
pub mod env;
#[cfg(feature = "kube")]
pub mod kube;
pub mod manifests;
pub mod measure;
pub mod report;
pub mod runner;
pub mod step;
pub mod table;
pub mod template;
pub mod world;
