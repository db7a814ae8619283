//! Endpoint states and shared allow tables: the last stage of a compile step.
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use super::identity::IdentityChanges;
use super::output::{AllowTable, Delta, Direction, DirectionPolicy, EndpointPolicy, TableId};
use super::rules::{self, RuleState};
use super::state::{Compiler, Dirty, PolicyState};
use crate::model::{ContainerPort, ObjectKey, Pod};

/// What an endpoint direction's table depends on: its rules, and its own ports when a rule has an
/// ingress named port. Endpoints with equal signatures get the same table.
type TableSignature = (Vec<u32>, Option<Vec<ContainerPort>>);

impl Compiler {
    /// Rebuilds the state of every dirty endpoint.
    pub(super) fn update_endpoints(
        &mut self,
        dirty: &Dirty,
        ch: &IdentityChanges,
        delta: &mut Delta,
    ) {
        let mut memo: HashMap<TableSignature, TableId> = HashMap::new();
        // Pod IPs that came or went: another pod claiming the same IP (a terminating pod and
        // the new pod that got its address) may own it now, also when the pod that went was
        // not a local endpoint (found by the fuzzer).
        let mut touched_ips: BTreeSet<IpAddr> = ch.touched_hosts().collect();
        for key in dirty.endpoints.iter().chain(&dirty.pods) {
            let old = self.out.endpoints.get(key).cloned();
            let pod = self
                .model
                .pods
                .get(key)
                .filter(|p| self.is_local_endpoint(p))
                .cloned();
            let new = pod.map(|pod| {
                let ingress = self.direction_policy(&pod, Direction::Ingress, &mut memo, delta);
                let egress = self.direction_policy(&pod, Direction::Egress, &mut memo, delta);
                EndpointPolicy {
                    pod: key.clone(),
                    ips: sorted_ips(&pod),
                    node: pod.node_name.clone(),
                    ingress,
                    egress,
                }
            });
            if old == new {
                // Both built a table reference: give back the extra one.
                for t in new
                    .iter()
                    .flat_map(|e| [e.ingress.table, e.egress.table])
                    .flatten()
                {
                    self.unref_table(t, delta);
                }
                continue;
            }
            for t in old
                .iter()
                .flat_map(|e| [e.ingress.table, e.egress.table])
                .flatten()
            {
                self.unref_table(t, delta);
            }
            touched_ips.extend(old.iter().flat_map(|e| e.ips.iter().copied()));
            match new {
                Some(new) => {
                    touched_ips.extend(new.ips.iter().copied());
                    self.out.endpoints.insert(key.clone(), new);
                    delta.endpoints_changed.insert(key.clone());
                }
                None if old.is_some() => {
                    self.out.endpoints.remove(key);
                    delta.endpoints_removed.insert(key.clone());
                }
                None => {}
            }
        }
        for ip in touched_ips {
            // The smallest local endpoint that claims the IP: a pod elsewhere claiming it too
            // does not hide the local one.
            match self
                .ids
                .ip_owners(ip)
                .find(|k| self.out.endpoints.contains_key(*k))
            {
                Some(owner) => self.out.endpoint_ips.insert(ip, owner.clone()),
                None => self.out.endpoint_ips.remove(&ip),
            };
        }
    }

    fn is_local_endpoint(&self, pod: &Pod) -> bool {
        pod.is_endpoint()
            && self
                .options
                .node
                .as_ref()
                .is_none_or(|n| pod.node_name.as_ref() == Some(n))
    }

    /// "A pod is isolated for a direction iff some policy in its namespace selects it and that
    /// direction is among the policy's effective policyTypes."
    fn direction_policy(
        &mut self,
        pod: &Pod,
        direction: Direction,
        memo: &mut HashMap<TableSignature, TableId>,
        delta: &mut Delta,
    ) -> DirectionPolicy {
        type Built = (Vec<ObjectKey>, TableSignature, Option<AllowTable>);
        let built: Option<Built> = {
            let selecting = self.selecting.get(&pod.key());
            let isolating: Vec<&PolicyState> = selecting
                .into_iter()
                .flatten()
                .filter_map(|k| self.policies.get(k))
                .filter(|p| p.parsed.rules(direction).is_some())
                .collect();
            (!isolating.is_empty()).then(|| {
                let isolated_by = isolating.iter().map(|p| p.parsed.key.clone()).collect();
                let rules: Vec<&RuleState> =
                    isolating.iter().flat_map(|p| p.rules(direction)).collect();
                let ports =
                    rules::needs_endpoint_ports(&rules).then(|| pod.container_ports.clone());
                let signature = (rules.iter().map(|r| r.rule_id).collect::<Vec<_>>(), ports);
                let table = (!memo.contains_key(&signature))
                    .then(|| rules::build_table(&rules, &pod.container_ports));
                (isolated_by, signature, table)
            })
        };
        let Some((isolated_by, signature, table)) = built else {
            return DirectionPolicy::open();
        };
        let id = match (table, memo.get(&signature)) {
            (_, Some(id)) => *id,
            (Some(table), None) => {
                let id = self.intern_table(table, delta);
                memo.insert(signature, id);
                id
            }
            (None, None) => self.intern_table(AllowTable::default(), delta),
        };
        *self.table_refs.entry(id).or_default() += 1;
        DirectionPolicy {
            isolated: true,
            isolated_by,
            table: Some(id),
        }
    }

    /// Stores a table under its content hash (probing past a collision); the caller references it.
    fn intern_table(&mut self, table: AllowTable, delta: &mut Delta) -> TableId {
        let mut id = table.content_hash();
        loop {
            match self.out.tables.get(&id) {
                Some(have) if *have == table => break,
                Some(_) => id = TableId(id.0.wrapping_add(1)),
                None => {
                    self.out.tables.insert(id, table);
                    delta.tables_added.insert(id);
                    break;
                }
            }
        }
        id
    }

    fn unref_table(&mut self, id: TableId, delta: &mut Delta) {
        let Some(count) = self.table_refs.get_mut(&id) else {
            return;
        };
        *count -= 1;
        if *count == 0 {
            self.table_refs.remove(&id);
            self.out.tables.remove(&id);
            delta.tables_removed.insert(id);
        }
    }

    /// Node addresses: Node objects plus hostNetwork pods' IPs ("as peers they appear with the
    /// node's IP").
    pub(super) fn update_host(&mut self, delta: &mut Delta) {
        let mut host: BTreeMap<String, BTreeSet<IpAddr>> = BTreeMap::new();
        if self.options.allow_node_traffic {
            for node in self.model.nodes.values() {
                host.entry(node.name.clone())
                    .or_default()
                    .extend(&node.addresses);
            }
            for pod in self.model.pods.values().filter(|p| p.host_network) {
                if let Some(node) = &pod.node_name {
                    host.entry(node.clone()).or_default().extend(&pod.ips);
                }
            }
            if let Some(local) = &self.options.node {
                host.retain(|name, _| name == local);
            }
        }
        if host != self.out.identities.host {
            self.out.identities.host = host;
            delta.host_changed = true;
        }
    }
}

fn sorted_ips(pod: &Pod) -> Vec<IpAddr> {
    let mut ips = pod.ips.clone();
    ips.sort();
    ips.dedup();
    ips
}
