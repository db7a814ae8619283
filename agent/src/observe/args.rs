//! The agent's observability flags (flattened into `palisade agent`).

use std::{net::SocketAddr, path::PathBuf};

use super::{ObserveSettings, Target};

/// Flow log, metrics and audit mode flags.
#[derive(Debug, Clone, clap::Args)]
pub struct ObserveArgs {
    /// Write the flow log (JSON lines) to this file, rotated by size, or to stdout with `-`.
    #[arg(long, value_name = "PATH|-")]
    pub flow_log: Option<PathBuf>,
    /// Also log allowed new flows, sampled in the programs (--flow-log-allow-sample per CPU/s).
    #[arg(long)]
    pub flow_log_allows: bool,
    /// Allow events the programs may send per CPU per second (with --flow-log-allows).
    #[arg(long, default_value_t = 100)]
    pub flow_log_allow_sample: u32,
    /// Most flow log records written per second; the rest are counted and dropped (0 = no limit).
    #[arg(long, default_value_t = 1000)]
    pub flow_log_rate: u32,
    /// Rotate the flow log file when it would grow past this size.
    #[arg(long, default_value_t = 64 * 1024 * 1024)]
    pub flow_log_max_bytes: u64,
    /// Rotated flow log files kept (`PATH.1` ... `PATH.N`).
    #[arg(long, default_value_t = 3)]
    pub flow_log_keep: u32,
    /// Serve Prometheus metrics at http://ADDR/metrics (off unless given).
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// Audit mode for every pod of the node: policy denies are logged (verdict `audit`) and
    /// counted, not enforced. Namespaces opt in one by one with the annotation
    /// `palisade.dev/audit: "true"`.
    #[arg(long)]
    pub audit: bool,
}

impl ObserveArgs {
    pub fn settings(&self) -> ObserveSettings {
        let flow_log = self.flow_log.as_ref().map(|p| {
            if p.as_os_str() == "-" {
                Target::Stdout
            } else {
                Target::File {
                    path: p.clone(),
                    max_bytes: self.flow_log_max_bytes,
                    keep: self.flow_log_keep,
                }
            }
        });
        ObserveSettings {
            flow_log,
            flow_log_allows: self.flow_log_allows,
            flow_log_rate: self.flow_log_rate,
            allow_events_per_sec: self.flow_log_allow_sample,
            metrics_addr: self.metrics_addr,
            audit: self.audit,
        }
    }
}
