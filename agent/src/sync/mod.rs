//! The syncer: makes the dataplane's maps hold what the compiler produced, writing only what
//! differs from what it wrote before, in an order that never lets a packet see half a policy:
//!
//! 1. new allow tables are written under fresh table ids (nothing references them yet);
//! 2. the identity trie and the Service set are updated;
//! 3. each changed endpoint is flipped with one hash-map write of its record (new table ids and a
//!    new generation, so conntrack re-checks its flows);
//! 4. tables and trie prefixes nothing references any more are deleted.

mod tables;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use ipnet::IpNet;
use palisade_common::{
    endpoint::{
        Endpoint, ENDPOINTS_MAX, EP_AUDIT_EGRESS, EP_AUDIT_INGRESS, EP_EGRESS_ISOLATED,
        EP_FAIL_CLOSED, EP_INGRESS_ISOLATED,
    },
    identity::{IDENTITY_HOST, IDENTITY_WORLD},
};

use crate::{
    compiler::{CompiledOutput, DirectionPolicy},
    dataplane::{Dataplane, DataplaneError, Hook},
    model::{Model, ObjectKey},
};

pub use tables::TableWriter;

/// A local pod's host interface, as the CNI plugin (or the endpoints directory) reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub ifname: String,
    pub ifindex: u32,
}

/// What happened to one endpoint in a sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EndpointState {
    /// Programs attached and the endpoint's policy written.
    Attached,
    /// Attached but fail-closed: its policy is unknown (pod not in the model yet) or could not be
    /// written.
    FailClosed,
    /// Attaching failed; see the problems.
    Error,
}

#[derive(Debug, Clone)]
struct Written {
    attachment: Attachment,
    record: Endpoint,
}

/// One problem found while syncing (reported in status; the rest of the sync goes on).
#[derive(Debug, Clone, serde::Serialize)]
pub struct SyncProblem {
    pub endpoint: Option<String>,
    pub message: String,
}

/// The outcome of a sync.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SyncReport {
    pub endpoints: BTreeMap<String, EndpointState>,
    pub problems: Vec<SyncProblem>,
    pub map_writes: u64,
}

/// Owns the record of what has been written to the maps.
#[derive(Debug, Default)]
pub struct Syncer {
    tables: TableWriter,
    prefixes: BTreeMap<IpNet, u32>,
    services: BTreeSet<(IpAddr, u16, u8)>,
    endpoints: BTreeMap<ObjectKey, Written>,
    free_slots: Vec<u32>,
    next_slot: u32,
    generation: u32,
    /// Endpoint records an earlier agent wrote, by ifindex, not yet claimed by a reported pod.
    adopted: BTreeMap<u32, Endpoint>,
    /// Audit mode for every endpoint (else per namespace, by annotation).
    audit_all: bool,
}

impl Syncer {
    pub fn new() -> Self {
        Self {
            next_slot: 1,
            ..Self::default()
        }
    }

    /// Puts every endpoint in audit mode (policy denies pass and are reported), or only those
    /// whose namespace carries the audit annotation.
    pub fn set_audit_all(&mut self, on: bool) {
        self.audit_all = on;
    }

    /// The highest endpoint generation written so far.
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// Takes over what an earlier agent left in the pinned maps, so that the first sync changes
    /// only what differs: its prefixes and Services are diffed against, its endpoints keep their
    /// slots, and its tables (whose content is unknown here) are replaced by fresh table ids and
    /// deleted once no endpoint uses them. Generations continue above the highest one in use, so
    /// conntrack re-checks every flow against the new agent's policy.
    pub fn adopt(&mut self, dp: &mut Dataplane) -> Result<usize, DataplaneError> {
        let existing = dp.existing()?;
        let found = existing.endpoints.len();
        for (ifindex, ep) in existing.endpoints {
            self.generation = self.generation.max(ep.generation);
            self.next_slot = self.next_slot.max(ep.slot + 1);
            self.adopted.insert(ifindex, ep);
        }
        self.tables.adopt(existing.policy_keys);
        self.prefixes = existing.identities.into_iter().collect();
        self.services = existing
            .services
            .iter()
            .filter_map(|k| {
                let net =
                    crate::dataplane::identity_net(&crate::dataplane::identity_key_raw(k.addr))?;
                Some((net.addr(), u16::from_be_bytes(k.port), k.protocol))
            })
            .collect();
        Ok(found)
    }

    /// Brings the maps to `out` for the endpoints in `attached`.
    pub fn sync(
        &mut self,
        dp: &mut Dataplane,
        out: &CompiledOutput,
        model: &Model,
        attached: &BTreeMap<ObjectKey, Attachment>,
    ) -> SyncReport {
        let mut report = SyncReport::default();
        self.tables.write_new(dp, out, &mut report);
        self.sync_prefixes(dp, out, &mut report);
        self.sync_services(dp, model, &mut report);
        self.sync_endpoints(dp, out, model, attached, &mut report);
        self.remove_endpoints(dp, attached, &mut report);
        let live = self.live_tables();
        self.tables.remove_stale(dp, &live, &mut report);
        report
    }

    fn live_tables(&self) -> BTreeSet<u32> {
        self.endpoints
            .values()
            .flat_map(|w| [w.record.ingress_table, w.record.egress_table])
            .collect()
    }

    fn sync_prefixes(&mut self, dp: &mut Dataplane, out: &CompiledOutput, report: &mut SyncReport) {
        let mut want: BTreeMap<IpNet, u32> = out.identities.prefixes.clone();
        for addrs in out.identities.host.values() {
            for ip in addrs {
                want.insert(IpNet::from(*ip), IDENTITY_HOST);
            }
        }
        for (net, id) in &want {
            if self.prefixes.get(net) != Some(id) {
                record(report, None, dp.set_identity(*net, *id));
            }
        }
        let stale: Vec<IpNet> = self
            .prefixes
            .keys()
            .filter(|n| !want.contains_key(n))
            .copied()
            .collect();
        for net in stale {
            record(report, None, dp.remove_identity(net));
        }
        self.prefixes = want;
    }

    fn sync_services(&mut self, dp: &mut Dataplane, model: &Model, report: &mut SyncReport) {
        let want: BTreeSet<(IpAddr, u16, u8)> = model
            .services
            .values()
            .flat_map(|s| {
                s.cluster_ips.iter().flat_map(move |ip| {
                    s.ports
                        .iter()
                        .map(move |p| (*ip, p.port, p.protocol.number()))
                })
            })
            .collect();
        for (ip, port, proto) in want.difference(&self.services) {
            record(report, None, dp.add_service(*ip, *port, *proto));
        }
        for (ip, port, proto) in self.services.difference(&want) {
            record(report, None, dp.remove_service(*ip, *port, *proto));
        }
        self.services = want;
    }

    fn sync_endpoints(
        &mut self,
        dp: &mut Dataplane,
        out: &CompiledOutput,
        model: &Model,
        attached: &BTreeMap<ObjectKey, Attachment>,
        report: &mut SyncReport,
    ) {
        for (key, att) in attached {
            let name = key.to_string();
            let audit = self.audit_all || model.namespace_audited(&key.namespace);
            let state = self.sync_endpoint(dp, out, (key, audit), att, report);
            report.endpoints.insert(name, state);
        }
    }

    fn sync_endpoint(
        &mut self,
        dp: &mut Dataplane,
        out: &CompiledOutput,
        (key, audit): (&ObjectKey, bool),
        att: &Attachment,
        report: &mut SyncReport,
    ) -> EndpointState {
        let previous = self.endpoints.get(key).cloned();
        let adopted = self.adopted.remove(&att.ifindex);
        let slot = match (previous.as_ref(), adopted) {
            (Some(w), _) if w.attachment == *att => w.record.slot,
            (None, Some(old)) => old.slot,
            _ => match self.alloc_slot() {
                Some(s) => s,
                None => {
                    push(
                        report,
                        Some(key),
                        "endpoint table full: no free slot; the pod fails closed".to_owned(),
                    );
                    attach_fail_closed(dp, key, att, report);
                    return EndpointState::Error;
                }
            },
        };
        let mut want = self.record_for(out, key, slot);
        let fail_closed = want.flags & EP_FAIL_CLOSED != 0;
        if audit && !fail_closed {
            want.flags |= EP_AUDIT_INGRESS | EP_AUDIT_EGRESS;
        }
        let unchanged = previous
            .as_ref()
            .is_some_and(|w| w.attachment == *att && same_policy(&w.record, &want));
        if unchanged {
            return state_of(fail_closed);
        }
        self.generation = self.generation.wrapping_add(1);
        want.generation = self.generation;
        if let Err(e) = dp.set_endpoint(att.ifindex, &want) {
            push(
                report,
                Some(key),
                format!("writing endpoint record: {e}; the pod fails closed"),
            );
            if previous.is_none() {
                self.free_slots.push(slot);
                attach_fail_closed(dp, key, att, report);
            }
            return EndpointState::Error;
        }
        report.map_writes += 1;
        if previous.as_ref().is_none_or(|w| w.attachment != *att) {
            for hook in [Hook::FromPod, Hook::ToPod] {
                if let Err(e) = dp.attach(&att.ifname, hook) {
                    push(
                        report,
                        Some(key),
                        format!("attaching {hook:?} to {}: {e}", att.ifname),
                    );
                    return EndpointState::Error;
                }
            }
        }
        self.endpoints.insert(
            key.clone(),
            Written {
                attachment: att.clone(),
                record: want,
            },
        );
        state_of(fail_closed)
    }

    /// The endpoint record `out` asks for. A pod the model does not know (yet) fails closed.
    fn record_for(&self, out: &CompiledOutput, key: &ObjectKey, slot: u32) -> Endpoint {
        let Some(ep) = out.endpoints.get(key) else {
            return Endpoint {
                slot,
                flags: EP_FAIL_CLOSED,
                identity: IDENTITY_WORLD,
                identity6: IDENTITY_WORLD,
                ..Endpoint::default()
            };
        };
        let identity_of = |v6: bool| {
            ep.ips
                .iter()
                .find(|ip| ip.is_ipv6() == v6)
                .and_then(|ip| out.identities.prefixes.get(&IpNet::from(*ip)))
                .copied()
                .unwrap_or(IDENTITY_WORLD)
        };
        let (ingress_table, ingress_flag) = self.direction(&ep.ingress, EP_INGRESS_ISOLATED);
        let (egress_table, egress_flag) = self.direction(&ep.egress, EP_EGRESS_ISOLATED);
        let mut flags = ingress_flag | egress_flag;
        if ingress_table == Some(0) || egress_table == Some(0) {
            // An isolating table that could not be written: fail closed, never open.
            flags |= EP_FAIL_CLOSED;
        }
        Endpoint {
            slot,
            ingress_table: ingress_table.unwrap_or(0),
            egress_table: egress_table.unwrap_or(0),
            flags,
            generation: 0,
            identity: identity_of(false),
            identity6: identity_of(true),
            _pad: 0,
        }
    }

    /// The table id and isolation flag of one direction (`Some(0)`: isolated, table missing).
    fn direction(&self, d: &DirectionPolicy, flag: u32) -> (Option<u32>, u32) {
        // The flag means "look packets up": NetworkPolicy isolation or a ClusterNetworkPolicy.
        if !d.needs_lookup() {
            return (None, 0);
        }
        let id = d.table.and_then(|t| self.tables.id_of(t)).unwrap_or(0);
        (Some(id), flag)
    }

    fn remove_endpoints(
        &mut self,
        dp: &mut Dataplane,
        attached: &BTreeMap<ObjectKey, Attachment>,
        report: &mut SyncReport,
    ) {
        let gone: Vec<ObjectKey> = self
            .endpoints
            .keys()
            .filter(|k| !attached.contains_key(*k))
            .cloned()
            .collect();
        let mut ifindexes = BTreeSet::new();
        for key in gone {
            let Some(w) = self.endpoints.remove(&key) else {
                continue;
            };
            for hook in [Hook::FromPod, Hook::ToPod] {
                record(report, Some(&key), dp.detach(w.attachment.ifindex, hook));
            }
            record(
                report,
                Some(&key),
                dp.remove_endpoint(w.attachment.ifindex, w.record.slot),
            );
            self.free_slots.push(w.record.slot);
            ifindexes.insert(w.attachment.ifindex);
        }
        for (ifindex, old) in std::mem::take(&mut self.adopted) {
            for hook in [Hook::FromPod, Hook::ToPod] {
                record(report, None, dp.detach(ifindex, hook));
            }
            record(report, None, dp.remove_endpoint(ifindex, old.slot));
            ifindexes.insert(ifindex);
        }
        // The flows of removed endpoints go with them (found by the soak: they stayed until
        // LRU pressure evicted them). An interface that is still attached keeps its flows.
        let live: BTreeSet<u32> = self
            .endpoints
            .values()
            .map(|w| w.attachment.ifindex)
            .collect();
        ifindexes.retain(|i| !live.contains(i));
        if !ifindexes.is_empty() {
            record(report, None, dp.forget_flows(&ifindexes).map(drop));
        }
    }

    fn alloc_slot(&mut self) -> Option<u32> {
        if let Some(s) = self.free_slots.pop() {
            return Some(s);
        }
        if self.next_slot >= ENDPOINTS_MAX {
            return None;
        }
        self.next_slot += 1;
        Some(self.next_slot - 1)
    }
}

/// Attaches the programs to a pod whose record could not be written: without a record they drop
/// everything but ARP and neighbour discovery, so the pod is isolated until a later sync succeeds.
fn attach_fail_closed(
    dp: &mut Dataplane,
    key: &ObjectKey,
    att: &Attachment,
    report: &mut SyncReport,
) {
    for hook in [Hook::FromPod, Hook::ToPod] {
        if let Err(e) = dp.attach(&att.ifname, hook) {
            push(
                report,
                Some(key),
                format!("attaching {hook:?} to {}: {e}", att.ifname),
            );
        }
    }
}

fn same_policy(a: &Endpoint, b: &Endpoint) -> bool {
    (
        a.slot,
        a.ingress_table,
        a.egress_table,
        a.flags,
        a.identity,
        a.identity6,
    ) == (
        b.slot,
        b.ingress_table,
        b.egress_table,
        b.flags,
        b.identity,
        b.identity6,
    )
}

fn state_of(fail_closed: bool) -> EndpointState {
    if fail_closed {
        EndpointState::FailClosed
    } else {
        EndpointState::Attached
    }
}

fn push(report: &mut SyncReport, key: Option<&ObjectKey>, message: String) {
    tracing::warn!(endpoint = key.map(ToString::to_string), "{message}");
    report.problems.push(SyncProblem {
        endpoint: key.map(ToString::to_string),
        message,
    });
}

fn record(report: &mut SyncReport, key: Option<&ObjectKey>, r: Result<(), DataplaneError>) {
    match r {
        Ok(()) => report.map_writes += 1,
        Err(e) => push(report, key, e.to_string()),
    }
}
