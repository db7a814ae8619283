//! Endpoint states and shared allow tables: the last stage of a compile step.
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use super::cluster_state::TierRule;
use super::identity::IdentityChanges;
use super::output::{AllowTable, Delta, Direction, DirectionPolicy, EndpointPolicy, TableId};
use super::rules::{self, RuleState};
use super::state::{Compiler, Dirty, PolicyState};
use super::tiers::{build_tiered, Tiers};
use crate::model::{ContainerPort, ObjectKey, Pod};

/// What an endpoint direction's table depends on: its rules by tier, whether NetworkPolicy
/// isolates it, and its own ports when a rule has an ingress named port. Endpoints with equal
/// signatures get the same table.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct TableSignature {
    admin: Vec<u32>,
    network_policy: Option<Vec<u32>>,
    baseline: Vec<u32>,
    ports: Option<Vec<ContainerPort>>,
}

/// One direction's state before its table is interned.
struct Built {
    isolated_by: Vec<ObjectKey>,
    cluster_policies: Vec<String>,
    signature: TableSignature,
    table: Option<AllowTable>,
}

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
    /// direction is among the policy's effective policyTypes." A direction also needs a table
    /// when a ClusterNetworkPolicy with rules for it selects the pod.
    fn direction_policy(
        &mut self,
        pod: &Pod,
        direction: Direction,
        memo: &mut HashMap<TableSignature, TableId>,
        delta: &mut Delta,
    ) -> DirectionPolicy {
        let Some(built) = self.build_direction(pod, direction, memo) else {
            return DirectionPolicy::open();
        };
        let isolated = built.signature.network_policy.is_some();
        let id = match (built.table, memo.get(&built.signature)) {
            (_, Some(id)) => *id,
            (Some(table), None) => {
                let id = self.intern_table(table, delta);
                memo.insert(built.signature, id);
                id
            }
            (None, None) => self.intern_table(AllowTable::default(), delta),
        };
        *self.table_refs.entry(id).or_default() += 1;
        DirectionPolicy {
            isolated,
            isolated_by: built.isolated_by,
            cluster_policies: built.cluster_policies,
            table: Some(id),
        }
    }

    /// The rules of one direction, and its table unless an equal signature was built already.
    fn build_direction(
        &self,
        pod: &Pod,
        direction: Direction,
        memo: &HashMap<TableSignature, TableId>,
    ) -> Option<Built> {
        let selecting = self.selecting.get(&pod.key());
        let isolating: Vec<&PolicyState> = selecting
            .into_iter()
            .flatten()
            .filter_map(|k| self.policies.get(k))
            .filter(|p| p.parsed.rules(direction).is_some())
            .collect();
        let (admin, baseline, cluster_policies) = self.cluster_rules_for(&pod.key(), direction);
        if isolating.is_empty() && cluster_policies.is_empty() {
            return None;
        }
        let isolated_by = isolating.iter().map(|p| p.parsed.key.clone()).collect();
        let np: Vec<&RuleState> = isolating.iter().flat_map(|p| p.rules(direction)).collect();
        let all_rules = admin.iter().map(|(r, _)| *r).chain(np.iter().copied());
        let all_rules: Vec<&RuleState> =
            all_rules.chain(baseline.iter().map(|(r, _)| *r)).collect();
        let ports = rules::needs_endpoint_ports(&all_rules).then(|| pod.container_ports.clone());
        let ids = |rules: &[TierRule<'_>]| rules.iter().map(|(r, _)| r.rule_id).collect();
        let signature = TableSignature {
            admin: ids(&admin),
            network_policy: (!isolating.is_empty()).then(|| np.iter().map(|r| r.rule_id).collect()),
            baseline: ids(&baseline),
            ports,
        };
        let table = (!memo.contains_key(&signature)).then(|| {
            if cluster_policies.is_empty() {
                return rules::build_table(&np, &pod.container_ports);
            }
            let tiers = Tiers {
                admin: &admin,
                network_policy: (!isolating.is_empty()).then_some(np.as_slice()),
                baseline: &baseline,
            };
            build_tiered(&tiers, &pod.container_ports)
        });
        Some(Built {
            isolated_by,
            cluster_policies,
            signature,
            table,
        })
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
