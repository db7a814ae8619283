//! Benchmark helpers that run on the test nodes (used by `agent/benches/*` through
//! `cargo xtask bench`): a pipelined connection prober for update latency, traffic generators
//! (TCP request/response, connection rate, iperf3) and rulesets of the iptables and nftables
//! methods to compare against. Everything runs inside namespaces the harness created.

pub mod netload;
pub mod prober;
pub mod rulesets;
