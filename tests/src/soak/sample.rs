//! What the soak samples: each agent's memory, threads and descriptors (`/proc/PID`), each
//! node's BPF map occupancy read from the pinned maps by path (`bpftool -j map dump pinned`;
//! bpftool cannot find aya's maps by name reliably, a pin path is exact), the pinned links and
//! the endpoint reports on disk.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Serialize;

/// The maps counted, by pin name.
pub const MAPS: [&str; 7] = [
    "PAL_EP_V1",
    "PAL_SLOT_V1",
    "PAL_IDENT_V1",
    "PAL_POLICY_V1",
    "PAL_SVC_V1",
    "PAL_CT_V1",
    "PAL_FRAG_V1",
];

/// One node at one moment.
#[derive(Clone, Debug, Default, Serialize)]
pub struct NodeSample {
    pub rss_kb: u64,
    pub threads: u64,
    pub fds: u64,
    /// Entries per map (pin name); absent when the map could not be read.
    pub maps: BTreeMap<String, u64>,
    /// Conntrack entries whose endpoint (ifindex) no longer has an endpoint record.
    pub conntrack_orphans: u64,
    pub link_pins: u64,
    pub endpoint_reports: u64,
}

/// Everything at one moment.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Sample {
    pub t_s: f64,
    pub phase: String,
    pub churn_pods: usize,
    pub churn_policies: usize,
    pub nodes: Vec<NodeSample>,
}

/// The agent process started for `root` (a child of this process whose command line names it).
pub fn agent_pid(root: &Path) -> Option<u32> {
    let me = std::process::id();
    let needle = root.display().to_string();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // The parent PID is the second field after the parenthesised command name.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid != Some(me) {
            continue;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(&needle) {
            return Some(pid);
        }
    }
    None
}

fn status_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn count_dir(dir: &Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |d| d.flatten().count() as u64)
}

/// The raw keys of a pinned map (`bpftool -j map dump`), one byte vector each.
fn map_keys(pin: &Path) -> Option<Vec<Vec<u8>>> {
    let out = Command::new("bpftool")
        .args(["-j", "map", "dump", "pinned"])
        .arg(pin)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let entries = v.as_array()?;
    Some(
        entries
            .iter()
            .map(|e| {
                e["key"]
                    .as_array()
                    .map(|k| {
                        k.iter()
                            .filter_map(|b| b.as_str())
                            .filter_map(|b| u8::from_str_radix(b.trim_start_matches("0x"), 16).ok())
                            .collect()
                    })
                    .unwrap_or_default()
            })
            .collect(),
    )
}

/// Samples one node: the agent of `pid` (if running), its pins under `bpffs` and its reports.
/// `uplink` is the node's uplink ifindex (its flows are not an endpoint's).
pub fn node(pid: Option<u32>, bpffs: &Path, endpoints: &Path, uplink: u32) -> NodeSample {
    let mut s = NodeSample::default();
    if let Some(pid) = pid {
        s.rss_kb = status_kb(pid, "VmRSS:");
        s.threads = status_kb(pid, "Threads:");
        s.fds = count_dir(&PathBuf::from(format!("/proc/{pid}/fd")));
    }
    let root = bpffs.join("palisade/v1");
    let mut keys = BTreeMap::new();
    for m in MAPS {
        if let Some(k) = map_keys(&root.join("maps").join(m)) {
            s.maps.insert(m.to_owned(), k.len() as u64);
            keys.insert(m, k);
        }
    }
    // An endpoint record is keyed by ifindex (u32, native order); a conntrack key ends with
    // {ifindex: u32, sport: u16, dport: u16, protocol: u8, pad} after two 16-byte addresses.
    let endpoints_now: std::collections::BTreeSet<u32> = keys
        .get("PAL_EP_V1")
        .into_iter()
        .flatten()
        .filter_map(|k| Some(u32::from_ne_bytes(k.get(..4)?.try_into().ok()?)))
        .collect();
    s.conntrack_orphans = keys
        .get("PAL_CT_V1")
        .into_iter()
        .flatten()
        .filter_map(|k| Some(u32::from_ne_bytes(k.get(32..36)?.try_into().ok()?)))
        .filter(|ifindex| *ifindex != uplink && !endpoints_now.contains(ifindex))
        .count() as u64;
    s.link_pins = count_dir(&root.join("links"));
    s.endpoint_reports = std::fs::read_dir(endpoints).map_or(0, |d| {
        d.flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .count() as u64
    });
    s
}
