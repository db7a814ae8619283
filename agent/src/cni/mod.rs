//! The CNI side of the agent: the chained plugin's logic ([`plugin`], run by the
//! `palisade-cni` binary) and the discovery of pods that were wired before Palisade was
//! installed ([`discover`]).

pub mod discover;
pub mod install;
pub mod netlink;
pub mod plugin;

#[cfg(test)]
mod tests;
