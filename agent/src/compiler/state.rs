//! The incremental compiler: caches per policy (parsed form, selected pods, rule entries) and per
//! pod (identities), and a step that recomputes only what a batch of changes touched.
use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::cluster_state::ClusterState;
use super::identity::{IdentityChanges, IdentityState};
use super::output::{CompiledOutput, Delta, Direction, PolicyProblem, RuleRef, TableId};
use super::parse::{parse_policy, ParsedPolicy};
use super::problems::{PolicyError, Problems};
use super::rules::{self, RuleState};
use super::CompileOptions;
use crate::model::{Model, ModelChange, ObjectKey};

/// One policy's cached state.
#[derive(Debug)]
pub(super) struct PolicyState {
    pub(super) parsed: ParsedPolicy,
    /// Endpoint pods (any node) its podSelector selects.
    selected: BTreeSet<ObjectKey>,
    ingress: Vec<RuleState>,
    egress: Vec<RuleState>,
    /// Named ports that resolve nowhere (recomputed with the rules).
    warnings: Vec<PolicyProblem>,
}

impl PolicyState {
    pub(super) fn rules(&self, direction: Direction) -> &[RuleState] {
        match direction {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }

    fn rules_mut(&mut self) -> impl Iterator<Item = &mut RuleState> {
        self.ingress.iter_mut().chain(self.egress.iter_mut())
    }
}

/// What a batch of changes touched.
#[derive(Debug, Default)]
pub(super) struct Dirty {
    pub(super) policies: BTreeSet<ObjectKey>,
    pub(super) pods: BTreeSet<ObjectKey>,
    pub(super) namespaces: BTreeSet<String>,
    host: bool,
    /// Policies whose rule entries must be recomputed.
    rules: BTreeSet<ObjectKey>,
    pub(super) endpoints: BTreeSet<ObjectKey>,
    /// ClusterNetworkPolicies changed (by name), and those whose rule entries must be recomputed.
    pub(super) clusters: BTreeSet<String>,
    pub(super) cluster_rules: BTreeSet<String>,
    /// A Node was added, changed or removed (`nodes` peers match node addresses and labels).
    pub(super) nodes: bool,
}

/// The incremental compiler. Feed it changes with [`Compiler::apply`].
#[derive(Debug)]
pub struct Compiler {
    pub(super) options: CompileOptions,
    pub(super) model: Model,
    pub(super) out: CompiledOutput,
    pub(super) ids: IdentityState,
    pub(super) policies: BTreeMap<ObjectKey, PolicyState>,
    /// Pod → policies whose podSelector selects it.
    pub(super) selecting: HashMap<ObjectKey, BTreeSet<ObjectKey>>,
    rule_ids: BTreeMap<RuleRef, u32>,
    free_rule_ids: BTreeSet<u32>,
    next_rule_id: u32,
    pub(super) table_refs: HashMap<TableId, usize>,
    /// ClusterNetworkPolicies by name.
    pub(super) clusters: BTreeMap<String, ClusterState>,
    /// Pod → ClusterNetworkPolicies whose subject selects it.
    pub(super) cluster_selecting: HashMap<ObjectKey, BTreeSet<String>>,
}

impl Compiler {
    pub fn new(options: CompileOptions) -> Self {
        let out = CompiledOutput {
            options: options.clone(),
            ..CompiledOutput::default()
        };
        Self {
            options,
            model: Model::new(),
            out,
            ids: IdentityState::default(),
            policies: BTreeMap::new(),
            selecting: HashMap::new(),
            rule_ids: BTreeMap::new(),
            free_rule_ids: BTreeSet::new(),
            next_rule_id: 1,
            table_refs: HashMap::new(),
            clusters: BTreeMap::new(),
            cluster_selecting: HashMap::new(),
        }
    }

    pub fn output(&self) -> &CompiledOutput {
        &self.out
    }

    pub fn into_output(self) -> CompiledOutput {
        self.out
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Applies a batch of changes and recompiles what they affect.
    pub fn apply(&mut self, changes: impl IntoIterator<Item = ModelChange>) -> Delta {
        let mut dirty = Dirty::default();
        for change in changes {
            // Whether a hostNetwork pod goes away must be read before the change is applied:
            // afterwards the model no longer has it, and its IP would stay a HOST address.
            dirty.host |= self.removes_host_pod(&change);
            for done in self.model.apply(change) {
                self.mark(&done, &mut dirty);
            }
        }
        let mut delta = Delta::default();
        let mut ch = IdentityChanges::default();
        self.update_policies(&mut dirty);
        self.update_clusters(&mut dirty);
        self.update_prefixes(&mut dirty, &mut ch);
        for key in &dirty.pods {
            let pod = self.model.pods.get(key);
            self.ids
                .assign_pod(key, pod, &mut self.out.identities, &mut ch);
        }
        self.update_matches(&mut dirty, &ch);
        self.update_selection(&mut dirty);
        self.update_cluster_selection(&mut dirty);
        self.update_rules(&mut dirty);
        self.update_cluster_rules(&mut dirty);
        self.update_endpoints(&dirty, &ch, &mut delta);
        if dirty.host {
            self.update_host(&mut delta);
        }
        self.ids.finish(&mut self.out.identities, &ch, &mut delta);
        let both: Vec<TableId> = delta
            .tables_added
            .intersection(&delta.tables_removed)
            .copied()
            .collect();
        for id in both {
            delta.tables_added.remove(&id);
            delta.tables_removed.remove(&id);
        }
        self.out.problems = self.problems();
        delta
    }

    /// Whether `change` removes a hostNetwork pod or turns hostNetwork off for one.
    fn removes_host_pod(&self, change: &ModelChange) -> bool {
        let was_host = |key: &ObjectKey| self.model.pods.get(key).is_some_and(|p| p.host_network);
        match change {
            ModelChange::UpsertPod(pod) => was_host(&pod.key()),
            ModelChange::DeletePod(key) => was_host(key),
            ModelChange::DeleteNamespace(name) => self
                .model
                .pods
                .values()
                .any(|p| p.host_network && &p.namespace == name),
            _ => false,
        }
    }

    fn mark(&self, change: &ModelChange, dirty: &mut Dirty) {
        match change {
            ModelChange::UpsertNamespace(ns) => {
                dirty.namespaces.insert(ns.name.clone());
            }
            ModelChange::DeleteNamespace(name) => {
                dirty.namespaces.insert(name.clone());
            }
            ModelChange::UpsertPod(pod) => {
                let was_host = self
                    .model
                    .pods
                    .get(&pod.key())
                    .is_some_and(|p| p.host_network);
                dirty.host |= pod.host_network || was_host;
                dirty.pods.insert(pod.key());
            }
            ModelChange::DeletePod(key) => {
                dirty.host |= self.model.pods.get(key).is_some_and(|p| p.host_network);
                dirty.pods.insert(key.clone());
            }
            ModelChange::UpsertPolicy(p) => {
                dirty.policies.insert(p.key());
            }
            ModelChange::DeletePolicy(key) => {
                dirty.policies.insert(key.clone());
            }
            ModelChange::UpsertNode(_) | ModelChange::DeleteNode(_) => {
                dirty.host = true;
                dirty.nodes = true;
            }
            ModelChange::UpsertService(_) | ModelChange::DeleteService(_) => {}
            ModelChange::UpsertClusterPolicy(p) => {
                dirty.clusters.insert(p.name.clone());
            }
            ModelChange::DeleteClusterPolicy(name) => {
                dirty.clusters.insert(name.clone());
            }
        }
    }

    /// Re-parses changed policies.
    fn update_policies(&mut self, dirty: &mut Dirty) {
        for key in &dirty.policies {
            if let Some(old) = self.policies.remove(key) {
                dirty.endpoints.extend(old.selected.iter().cloned());
                for pod in &old.selected {
                    if let Some(set) = self.selecting.get_mut(pod) {
                        set.remove(key);
                    }
                }
            }
            let Some(policy) = self.model.policies.get(key) else {
                self.release_rule_ids(key, 0, 0);
                continue;
            };
            let parsed = parse_policy(policy);
            let counts = (
                parsed.ingress.as_ref().map_or(0, Vec::len),
                parsed.egress.as_ref().map_or(0, Vec::len),
            );
            self.release_rule_ids(key, counts.0, counts.1);
            let ingress = self.rule_states(key, &parsed, Direction::Ingress);
            let egress = self.rule_states(key, &parsed, Direction::Egress);
            let state = PolicyState {
                parsed,
                selected: BTreeSet::new(),
                ingress,
                egress,
                warnings: Vec::new(),
            };
            self.policies.insert(key.clone(), state);
            dirty.rules.insert(key.clone());
        }
    }

    /// If the prefix set (ipBlock prefixes, ClusterNetworkPolicy networks, node addresses while a
    /// `nodes` peer exists) changed, reclassifies all pods.
    fn update_prefixes(&mut self, dirty: &mut Dirty, ch: &mut IdentityChanges) {
        if dirty.policies.is_empty() && dirty.clusters.is_empty() && !dirty.nodes {
            return;
        }
        let mut prefixes: BTreeSet<_> = self
            .policies
            .values()
            .flat_map(|p| p.parsed.prefixes())
            .collect();
        prefixes.extend(self.cluster_prefixes());
        if self
            .ids
            .set_prefixes(prefixes, &mut self.out.identities, ch)
        {
            dirty.pods.extend(self.model.pods.keys().cloned());
            dirty.pods.extend(self.ids.pod_ids.keys().cloned());
        }
    }

    fn rule_states(
        &mut self,
        key: &ObjectKey,
        parsed: &ParsedPolicy,
        direction: Direction,
    ) -> Vec<RuleState> {
        let rules = parsed.rules(direction).unwrap_or_default();
        let mut out = Vec::with_capacity(rules.len());
        for (index, rule) in rules.iter().enumerate() {
            let index = u32::try_from(index).unwrap_or(u32::MAX);
            let rule_ref = RuleRef::network_policy(key.clone(), direction, index);
            out.push(RuleState {
                rule_id: self.rule_id(&rule_ref),
                rule: rule_ref,
                parsed: rule.clone(),
                matched: BTreeSet::new(),
                peers: Vec::new(),
                entries: Vec::new(),
                ingress_named: Vec::new(),
            });
        }
        out
    }

    pub(super) fn rule_id(&mut self, rule: &RuleRef) -> u32 {
        if let Some(id) = self.rule_ids.get(rule) {
            return *id;
        }
        let id = self.free_rule_ids.pop_first().unwrap_or_else(|| {
            self.next_rule_id += 1;
            self.next_rule_id - 1
        });
        self.rule_ids.insert(rule.clone(), id);
        self.out.rules.insert(id, rule.clone());
        id
    }

    /// Frees the rule ids of `policy` that are not in `keep` (ClusterNetworkPolicy rules: a rule's
    /// name is part of its reference).
    pub(super) fn release_rule_ids_except(&mut self, policy: &ObjectKey, keep: &BTreeSet<RuleRef>) {
        let gone: Vec<RuleRef> = self
            .rule_ids
            .keys()
            .filter(|r| &r.policy == policy && !keep.contains(*r))
            .cloned()
            .collect();
        for rule in gone {
            if let Some(id) = self.rule_ids.remove(&rule) {
                self.out.rules.remove(&id);
                self.free_rule_ids.insert(id);
            }
        }
    }

    /// Frees the rule ids of `policy` beyond the given rule counts.
    fn release_rule_ids(&mut self, policy: &ObjectKey, ingress: usize, egress: usize) {
        let gone: Vec<RuleRef> = self
            .rule_ids
            .keys()
            .filter(|r| &r.policy == policy)
            .filter(|r| {
                let keep = match r.direction {
                    Direction::Ingress => ingress,
                    Direction::Egress => egress,
                };
                usize::try_from(r.index).unwrap_or(usize::MAX) >= keep
            })
            .cloned()
            .collect();
        for rule in gone {
            if let Some(id) = self.rule_ids.remove(&rule) {
                self.out.rules.remove(&id);
                self.free_rule_ids.insert(id);
            }
        }
    }

    /// Keeps every tracked rule's `matched` identity set current.
    fn update_matches(&mut self, dirty: &mut Dirty, ch: &IdentityChanges) {
        let relabelled: BTreeSet<u32> = dirty
            .namespaces
            .iter()
            .filter_map(|ns| self.ids.by_namespace.get(ns))
            .flatten()
            .copied()
            .collect();
        let ctx = MatchCtx {
            ids: &self.ids,
            table: &self.out.identities,
            model: &self.model,
            ch,
            relabelled: &relabelled,
        };
        for (key, policy) in &mut self.policies {
            let fresh = dirty.policies.contains(key);
            if ctx.refresh(policy.rules_mut(), fresh) {
                dirty.rules.insert(key.clone());
            }
        }
        for (name, cluster) in &mut self.clusters {
            let fresh = dirty.clusters.contains(name);
            if ctx.refresh(cluster.rules_mut(), fresh) {
                dirty.cluster_rules.insert(name.clone());
            }
        }
    }

    /// Keeps every policy's selected pods (and the reverse index) current.
    fn update_selection(&mut self, dirty: &mut Dirty) {
        for (key, policy) in &mut self.policies {
            let ns = &policy.parsed.key.namespace;
            let candidates: Vec<ObjectKey> = if dirty.policies.contains(key) {
                let range = self.model.pods.range(ObjectKey::new(ns, "")..);
                range
                    .take_while(|(k, _)| &k.namespace == ns)
                    .map(|(k, _)| k.clone())
                    .collect()
            } else {
                dirty
                    .pods
                    .iter()
                    .filter(|k| &k.namespace == ns)
                    .cloned()
                    .collect()
            };
            let mut changed = false;
            for pod_key in candidates {
                let selects = self.model.pods.get(&pod_key).is_some_and(|pod| {
                    pod.is_endpoint() && policy.parsed.pod_selector.matches(&pod.labels)
                });
                let had = policy.selected.contains(&pod_key);
                if selects == had {
                    continue;
                }
                changed = true;
                dirty.endpoints.insert(pod_key.clone());
                let set = self.selecting.entry(pod_key.clone()).or_default();
                if selects {
                    policy.selected.insert(pod_key);
                    set.insert(key.clone());
                } else {
                    set.remove(key);
                    if set.is_empty() {
                        self.selecting.remove(&pod_key);
                    }
                    policy.selected.remove(&pod_key);
                }
            }
            if changed {
                dirty.rules.insert(key.clone());
            }
        }
    }

    /// Recomputes the entries of dirty policies' rules and marks their endpoints.
    fn update_rules(&mut self, dirty: &mut Dirty) {
        let table = &self.out.identities;
        for key in &dirty.rules {
            let Some(policy) = self.policies.get_mut(key) else {
                continue;
            };
            let mut problems = Problems::new(key.clone());
            for rule in policy.rules_mut() {
                for (protocol, name, field) in rules::compute_entries(rule, table) {
                    let side = "destination";
                    let protocol = protocol.to_string();
                    problems.warning(
                        field,
                        PolicyError::NamedPortUnresolved {
                            name,
                            protocol,
                            side,
                        },
                    );
                }
            }
            for (protocol, name, field) in ingress_named_unresolved(policy, &self.model) {
                let protocol = protocol.to_string();
                let side = "selected";
                problems.warning(
                    field,
                    PolicyError::NamedPortUnresolved {
                        name,
                        protocol,
                        side,
                    },
                );
            }
            policy.warnings = problems.list;
            dirty.endpoints.extend(policy.selected.iter().cloned());
        }
    }

    fn problems(&self) -> Vec<PolicyProblem> {
        let all = self.policies.values();
        let mut out: Vec<PolicyProblem> = all
            .flat_map(|p| p.parsed.problems.iter().chain(&p.warnings))
            .cloned()
            .collect();
        out.extend(
            self.clusters
                .values()
                .flat_map(|c| c.parsed.problems.iter().cloned()),
        );
        out
    }
}

/// What keeping rules' matched identity sets current needs.
struct MatchCtx<'a> {
    ids: &'a IdentityState,
    table: &'a super::output::IdentityTable,
    model: &'a Model,
    ch: &'a IdentityChanges,
    relabelled: &'a BTreeSet<u32>,
}

impl MatchCtx<'_> {
    /// Updates the matched sets of `rules` (all of them when `fresh`); returns whether one changed.
    fn refresh<'r>(&self, rules: impl Iterator<Item = &'r mut RuleState>, fresh: bool) -> bool {
        let mut changed = false;
        for rule in rules {
            if !rule.tracks_identities() {
                continue;
            }
            if fresh {
                rule.matched = rules::match_all(&rule.parsed, self.ids, self.table, self.model);
                continue;
            }
            for id in &self.ch.freed {
                changed |= rule.matched.remove(id);
            }
            for id in self.ch.created.iter().chain(self.relabelled) {
                let Some(info) = self.table.identities.get(id) else {
                    continue;
                };
                let now = rules::rule_matches(&rule.parsed, &info.key, self.model);
                let before = if now {
                    !rule.matched.insert(*id)
                } else {
                    rule.matched.remove(id)
                };
                changed |= now != before;
            }
        }
        changed
    }
}

/// Ingress named ports that no selected pod has.
fn ingress_named_unresolved(
    policy: &PolicyState,
    model: &Model,
) -> Vec<(crate::model::Protocol, String, String)> {
    let mut out = Vec::new();
    for rule in policy.parsed.ingress.iter().flatten() {
        let super::parse::Ports::List(list) = &rule.ports else {
            continue;
        };
        for port in list {
            let super::parse::ParsedPort::Named {
                protocol,
                name,
                field,
            } = port
            else {
                continue;
            };
            let resolves = policy
                .selected
                .iter()
                .filter_map(|k| model.pods.get(k))
                .any(|pod| {
                    rules::resolve_named(&pod.container_ports, *protocol, name)
                        .next()
                        .is_some()
                });
            if !resolves {
                out.push((*protocol, name.clone(), field.clone()));
            }
        }
    }
    out
}
