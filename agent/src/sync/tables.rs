//! Allow tables in the policy trie: one table id per distinct table content, shared by every
//! endpoint direction with that content, written whole before anything references it.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use aya::maps::lpm_trie::Key;
use palisade_common::policy::PolicyKey;

use super::{push, SyncReport};
use crate::{
    compiler::{AllowTable, CompiledOutput, TableId},
    dataplane::{policy_key, Dataplane, PortBlock},
};

#[derive(Default)]
pub struct TableWriter {
    ids: HashMap<TableId, u32>,
    keys: BTreeMap<u32, (TableId, Vec<Key<PolicyKey>>)>,
    /// Tables an earlier agent wrote (content unknown), deleted once unreferenced.
    adopted: BTreeMap<u32, Vec<Key<PolicyKey>>>,
    next: u32,
}

impl std::fmt::Debug for TableWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableWriter")
            .field("tables", &self.ids.len())
            .finish()
    }
}

impl TableWriter {
    /// The map table id of a compiled table, if it has been written completely.
    pub fn id_of(&self, table: TableId) -> Option<u32> {
        self.ids.get(&table).copied()
    }

    /// Writes every table of `out` not written yet. A table that fails half way is removed again
    /// and left without an id, so endpoints that need it fail closed.
    pub fn write_new(&mut self, dp: &mut Dataplane, out: &CompiledOutput, report: &mut SyncReport) {
        for (tid, table) in &out.tables {
            if self.ids.contains_key(tid) {
                continue;
            }
            self.next = self.next.wrapping_add(1).max(1);
            let id = self.next;
            match write_table(dp, id, table) {
                Ok(keys) => {
                    report.map_writes += keys.len() as u64;
                    self.ids.insert(*tid, id);
                    self.keys.insert(id, (*tid, keys));
                }
                Err(failed) => {
                    let (written, e) = *failed;
                    for k in &written {
                        let _ = dp.remove_policy(k);
                    }
                    push(report, None, format!("writing allow table {tid}: {e}"));
                }
            }
        }
    }

    /// Records an earlier agent's entries; new table ids start above theirs.
    pub fn adopt(&mut self, keys: Vec<Key<PolicyKey>>) {
        for key in keys {
            let id = u32::from_be_bytes(key.data().table);
            self.next = self.next.max(id);
            self.adopted.entry(id).or_default().push(key);
        }
    }

    /// Deletes tables that no endpoint references any more.
    pub fn remove_stale(
        &mut self,
        dp: &mut Dataplane,
        live: &BTreeSet<u32>,
        report: &mut SyncReport,
    ) {
        let old: Vec<u32> = self
            .adopted
            .keys()
            .filter(|id| !live.contains(id))
            .copied()
            .collect();
        for id in old {
            for k in self.adopted.remove(&id).unwrap_or_default() {
                if let Err(e) = dp.remove_policy(&k) {
                    push(report, None, format!("removing adopted table {id}: {e}"));
                }
            }
        }
        let stale: Vec<u32> = self
            .keys
            .keys()
            .filter(|id| !live.contains(id))
            .copied()
            .collect();
        for id in stale {
            let Some((tid, keys)) = self.keys.remove(&id) else {
                continue;
            };
            self.ids.remove(&tid);
            for k in &keys {
                if let Err(e) = dp.remove_policy(k) {
                    push(report, None, format!("removing allow table {tid}: {e}"));
                }
            }
        }
    }
}

/// Keys written to the policy trie for one table.
type TableKeys = Vec<Key<PolicyKey>>;

/// Writes one table; on failure returns what was written (to undo) and the error.
fn write_table(
    dp: &mut Dataplane,
    id: u32,
    table: &AllowTable,
) -> Result<TableKeys, Box<(TableKeys, crate::dataplane::DataplaneError)>> {
    let mut written = Vec::with_capacity(table.entries.len());
    for (entry, value) in &table.entries {
        let ports = entry.ports.map(|p| PortBlock {
            port: p.port,
            prefix_len: p.prefix_len,
        });
        let key = policy_key(
            id,
            entry.peer.identity(),
            entry.protocol.map(|p| p.number()),
            ports,
        );
        let v = crate::dataplane::policy_value(value);
        if let Err(e) = dp.set_policy(&key, v) {
            return Err(Box::new((written, e)));
        }
        written.push(key);
    }
    Ok(written)
}
