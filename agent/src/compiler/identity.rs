//! Identity allocation and the node-wide identity trie.
//!
//! An identity captures everything a rule can test about a peer, so one exact lookup suffices:
//! pods that share namespace, labels, container ports and CIDR class share one. With every ipBlock
//! prefix (cidr and except) in the trie, the longest inserted prefix P containing an IP decides its
//! membership in every inserted prefix C (IP ∈ C iff P ⊆ C), so the class is all ipBlock needs.
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;

use ipnet::IpNet;

use super::output::{Delta, IdentityInfo, IdentityKey, IdentityTable, FIRST_ALLOCATED_IDENTITY};
use crate::model::{ObjectKey, Pod};

/// The ipBlock prefixes, for longest-prefix classification of pod IPs.
#[derive(Debug, Default)]
struct PrefixSet {
    set: HashSet<IpNet>,
    lens_v4: BTreeSet<u8>,
    lens_v6: BTreeSet<u8>,
}

impl PrefixSet {
    fn new(prefixes: &BTreeSet<IpNet>) -> Self {
        let mut out = Self::default();
        for p in prefixes {
            out.set.insert(*p);
            match p {
                IpNet::V4(_) => out.lens_v4.insert(p.prefix_len()),
                IpNet::V6(_) => out.lens_v6.insert(p.prefix_len()),
            };
        }
        out
    }

    fn longest(&self, ip: IpAddr) -> Option<IpNet> {
        let lens = if ip.is_ipv4() {
            &self.lens_v4
        } else {
            &self.lens_v6
        };
        lens.iter().rev().find_map(|len| {
            let net = IpNet::new(ip, *len).ok()?.trunc();
            self.set.contains(&net).then_some(net)
        })
    }
}

/// Identity bookkeeping that lives across incremental steps.
#[derive(Debug, Default)]
pub(super) struct IdentityState {
    by_key: HashMap<IdentityKey, u32>,
    /// (pod, IP) pairs per pod identity; CIDR identities count 1.
    refcount: HashMap<u32, usize>,
    free: BTreeSet<u32>,
    /// Freed during the current step; reusable only from the next one, so that within one step an
    /// identity number never stands for two keys.
    pending_free: Vec<u32>,
    next: u32,
    prefixes: BTreeSet<IpNet>,
    classes: PrefixSet,
    cidr_ids: BTreeMap<IpNet, u32>,
    pub(super) pod_ids: HashMap<ObjectKey, Vec<(IpAddr, u32)>>,
    ip_owners: BTreeMap<IpAddr, BTreeSet<ObjectKey>>,
    /// Pod identities per namespace, so selector peers only look at candidate namespaces.
    pub(super) by_namespace: BTreeMap<String, BTreeSet<u32>>,
    /// Identities that an ipBlock can match: CIDR identities and pods with a class.
    pub(super) classed: BTreeSet<u32>,
}

/// Identities created and freed during one step.
#[derive(Debug, Default)]
pub(super) struct IdentityChanges {
    pub created: BTreeSet<u32>,
    pub freed: BTreeSet<u32>,
    touched_prefixes: BTreeSet<IpNet>,
}

impl IdentityChanges {
    /// The host addresses whose prefixes were touched (pod IPs that came, went or moved).
    pub(super) fn touched_hosts(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.touched_prefixes
            .iter()
            .filter(|p| p.prefix_len() == p.max_prefix_len())
            .map(IpNet::addr)
    }
}

impl IdentityState {
    fn allocate(
        &mut self,
        key: IdentityKey,
        table: &mut IdentityTable,
        ch: &mut IdentityChanges,
    ) -> u32 {
        if let Some(id) = self.by_key.get(&key) {
            *self.refcount.entry(*id).or_default() += 1;
            return *id;
        }
        let id = match self.free.pop_first() {
            Some(id) => id,
            None => {
                let id = self.next.max(FIRST_ALLOCATED_IDENTITY);
                self.next = id + 1;
                id
            }
        };
        self.index(&key, id, true);
        self.by_key.insert(key.clone(), id);
        self.refcount.insert(id, 1);
        let members = BTreeSet::new();
        table.identities.insert(id, IdentityInfo { key, members });
        ch.created.insert(id);
        id
    }

    fn release(&mut self, id: u32, table: &mut IdentityTable, ch: &mut IdentityChanges) {
        let Some(count) = self.refcount.get_mut(&id) else {
            return;
        };
        *count -= 1;
        if *count > 0 {
            return;
        }
        self.refcount.remove(&id);
        if let Some(info) = table.identities.remove(&id) {
            self.index(&info.key, id, false);
            self.by_key.remove(&info.key);
        }
        self.pending_free.push(id);
        // An identity created and freed within one step was never seen by anyone.
        if !ch.created.remove(&id) {
            ch.freed.insert(id);
        }
    }

    fn index(&mut self, key: &IdentityKey, id: u32, insert: bool) {
        let classed = match key {
            IdentityKey::Pods {
                namespace, class, ..
            } => {
                let ids = self.by_namespace.entry(namespace.clone()).or_default();
                if insert {
                    ids.insert(id);
                } else {
                    ids.remove(&id);
                    if ids.is_empty() {
                        self.by_namespace.remove(namespace);
                    }
                }
                class.is_some()
            }
            IdentityKey::Cidr(_) => true,
        };
        if classed && insert {
            self.classed.insert(id);
        } else if classed {
            self.classed.remove(&id);
        }
    }

    /// Ends a step: freed numbers become reusable, and the trie entries touched are rewritten.
    pub(super) fn finish(
        &mut self,
        table: &mut IdentityTable,
        ch: &IdentityChanges,
        delta: &mut Delta,
    ) {
        self.free.extend(self.pending_free.drain(..));
        for prefix in &ch.touched_prefixes {
            let want = self.trie_entry(*prefix);
            let have = table.prefixes.get(prefix).copied();
            if want != have {
                match want {
                    Some(id) => table.prefixes.insert(*prefix, id),
                    None => table.prefixes.remove(prefix),
                };
                delta.prefixes_changed.insert(*prefix);
            }
        }
    }

    /// A pod's host prefix maps to its pod identity (the smallest pod key wins if two pods claim
    /// one IP); other prefixes to their CIDR identity.
    fn trie_entry(&self, prefix: IpNet) -> Option<u32> {
        let is_host = prefix.prefix_len() == prefix.max_prefix_len();
        if is_host {
            let owner = self.ip_owners.get(&prefix.addr()).and_then(|o| o.first());
            if let Some(owner) = owner {
                let ids = self.pod_ids.get(owner).into_iter().flatten();
                let found = ids
                    .filter(|(ip, _)| *ip == prefix.addr())
                    .map(|(_, id)| *id);
                if let Some(id) = found.into_iter().next() {
                    return Some(id);
                }
            }
        }
        self.cidr_ids.get(&prefix).copied()
    }

    /// Every pod that claims an IP, smallest key first.
    pub(super) fn ip_owners(&self, ip: IpAddr) -> impl Iterator<Item = &ObjectKey> {
        self.ip_owners.get(&ip).into_iter().flatten()
    }

    /// Replaces the ipBlock prefix set; returns whether it changed (then every pod's class may
    /// have changed and all pods must be reassigned).
    pub(super) fn set_prefixes(
        &mut self,
        prefixes: BTreeSet<IpNet>,
        table: &mut IdentityTable,
        ch: &mut IdentityChanges,
    ) -> bool {
        if prefixes == self.prefixes {
            return false;
        }
        let removed: Vec<IpNet> = self.prefixes.difference(&prefixes).copied().collect();
        let added: Vec<IpNet> = prefixes.difference(&self.prefixes).copied().collect();
        for p in removed {
            if let Some(id) = self.cidr_ids.remove(&p) {
                self.release(id, table, ch);
            }
            ch.touched_prefixes.insert(p);
        }
        for p in added {
            let id = self.allocate(IdentityKey::Cidr(p), table, ch);
            self.cidr_ids.insert(p, id);
            ch.touched_prefixes.insert(p);
        }
        self.classes = PrefixSet::new(&prefixes);
        self.prefixes = prefixes;
        true
    }

    /// The identity key of one IP of a pod.
    fn pod_key(&self, pod: &Pod, ip: IpAddr) -> IdentityKey {
        let mut ports = pod.container_ports.clone();
        ports.sort();
        ports.dedup();
        IdentityKey::Pods {
            namespace: pod.namespace.clone(),
            labels: pod.labels.clone(),
            ports,
            class: self.classes.longest(ip),
        }
    }

    /// Recomputes the identities of one pod (`None` = deleted). Returns whether they changed.
    pub(super) fn assign_pod(
        &mut self,
        key: &ObjectKey,
        pod: Option<&Pod>,
        table: &mut IdentityTable,
        ch: &mut IdentityChanges,
    ) -> bool {
        let old = self.pod_ids.remove(key).unwrap_or_default();
        let mut new = Vec::new();
        if let Some(pod) = pod.filter(|p| p.is_endpoint()) {
            let mut ips = pod.ips.clone();
            ips.sort();
            ips.dedup();
            for ip in ips {
                let id = self.allocate(self.pod_key(pod, ip), table, ch);
                new.push((ip, id));
            }
        }
        for (_, id) in &old {
            self.release(*id, table, ch);
        }
        let changed = old != new;
        self.update_members(key, &old, &new, table);
        for (ip, _) in old.iter().chain(&new) {
            ch.touched_prefixes.insert(IpNet::from(*ip));
        }
        for (ip, _) in &old {
            if let Some(owners) = self.ip_owners.get_mut(ip) {
                owners.remove(key);
                if owners.is_empty() {
                    self.ip_owners.remove(ip);
                }
            }
        }
        for (ip, _) in &new {
            self.ip_owners.entry(*ip).or_default().insert(key.clone());
        }
        if !new.is_empty() {
            self.pod_ids.insert(key.clone(), new);
        }
        changed
    }

    fn update_members(
        &self,
        key: &ObjectKey,
        old: &[(IpAddr, u32)],
        new: &[(IpAddr, u32)],
        table: &mut IdentityTable,
    ) {
        for (_, id) in old {
            if let Some(info) = table.identities.get_mut(id) {
                info.members.remove(key);
            }
        }
        for (_, id) in new {
            if let Some(info) = table.identities.get_mut(id) {
                info.members.insert(key.clone());
            }
        }
    }
}
