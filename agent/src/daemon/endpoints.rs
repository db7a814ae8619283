//! Endpoint reports: one JSON file per local pod, as the chained CNI plugin writes them on ADD
//! and removes them on DEL: `{"namespace","name","ifname","ips"}`.

use std::{collections::BTreeMap, net::IpAddr, path::Path};

use serde::{Deserialize, Serialize};

use crate::{dataplane::ifindex, model::ObjectKey, sync::Attachment};

/// File name suffix of an endpoint report.
pub const ENDPOINT_FILE_SUFFIX: &str = ".json";

/// What the CNI plugin reports for a pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRecord {
    pub namespace: String,
    pub name: String,
    /// The host-side interface in the node's network namespace.
    pub ifname: String,
    #[serde(default)]
    pub ips: Vec<IpAddr>,
}

/// Reads every report; unreadable ones and interfaces that do not exist are noted and skipped.
/// Returns the attachments and the reports themselves (for their IPs).
pub fn load(
    dir: &Path,
    notes: &mut Vec<String>,
) -> (BTreeMap<ObjectKey, Attachment>, Vec<EndpointRecord>) {
    notes.clear();
    let mut out = BTreeMap::new();
    let mut records = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (out, records);
    };
    for path in entries.filter_map(Result::ok).map(|e| e.path()) {
        if !path.to_string_lossy().ends_with(ENDPOINT_FILE_SUFFIX) {
            continue;
        }
        let parsed = std::fs::read_to_string(&path)
            .map_err(|e| e.to_string())
            .and_then(|t| serde_json::from_str::<EndpointRecord>(&t).map_err(|e| e.to_string()));
        let rec = match parsed {
            Ok(r) => r,
            Err(e) => {
                notes.push(format!("endpoint report {}: {e}", path.display()));
                continue;
            }
        };
        match ifindex(&rec.ifname) {
            Ok(idx) => {
                let key = ObjectKey::new(&rec.namespace, &rec.name);
                let ifname = rec.ifname.clone();
                out.insert(
                    key,
                    Attachment {
                        ifname,
                        ifindex: idx,
                    },
                );
                records.push(rec);
            }
            Err(e) => notes.push(format!("endpoint {}/{}: {e}", rec.namespace, rec.name)),
        }
    }
    (out, records)
}
