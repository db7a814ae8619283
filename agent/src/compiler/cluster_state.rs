//! The incremental steps for ClusterNetworkPolicies: parse, rule ids, subject selection and rule
//! entries, cached per policy like NetworkPolicies are.
use std::collections::BTreeSet;

use ipnet::IpNet;

use super::cluster::{node_prefixes, parse_cluster, ClusterAction, ParsedCluster};
use super::output::{Direction, RuleRef, Tier};
use super::rules::{self, RuleState};
use super::state::{Compiler, Dirty};
use crate::model::{ObjectKey, Pod};

/// One ClusterNetworkPolicy's cached state.
#[derive(Debug)]
pub(super) struct ClusterState {
    pub(super) parsed: ParsedCluster,
    /// Endpoint pods (any node) its subject selects.
    pub(super) selected: BTreeSet<ObjectKey>,
    ingress: Vec<RuleState>,
    egress: Vec<RuleState>,
}

impl ClusterState {
    pub(super) fn rules(&self, direction: Direction) -> &[RuleState] {
        match direction {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }

    pub(super) fn rules_mut(&mut self) -> impl Iterator<Item = &mut RuleState> {
        self.ingress.iter_mut().chain(self.egress.iter_mut())
    }

    /// The rules of one direction with their actions, in rule order.
    pub(super) fn ranked(&self, direction: Direction) -> Vec<(&RuleState, ClusterAction)> {
        let actions = self.parsed.rules(direction).iter().map(|r| r.action);
        self.rules(direction).iter().zip(actions).collect()
    }
}

/// One ClusterNetworkPolicy rule applying to an endpoint direction, in evaluation order.
pub(super) type TierRule<'a> = (&'a RuleState, ClusterAction);

impl Compiler {
    /// Re-parses changed ClusterNetworkPolicies (and, when nodes changed, those with `nodes`
    /// peers, whose matches depend on node labels and addresses).
    pub(super) fn update_clusters(&mut self, dirty: &mut Dirty) {
        if dirty.nodes {
            let with_nodes = self.clusters.iter().filter(|(_, c)| c.parsed.has_nodes());
            let names: Vec<String> = with_nodes.map(|(n, _)| n.clone()).collect();
            dirty.clusters.extend(names);
        }
        let names: Vec<String> = dirty.clusters.iter().cloned().collect();
        for name in names {
            if let Some(old) = self.clusters.remove(&name) {
                dirty.endpoints.extend(old.selected.iter().cloned());
                for pod in &old.selected {
                    if let Some(set) = self.cluster_selecting.get_mut(pod) {
                        set.remove(&name);
                        if set.is_empty() {
                            self.cluster_selecting.remove(pod);
                        }
                    }
                }
            }
            let key = super::cluster::cluster_key(&name);
            let Some(policy) = self.model.cluster_policies.get(&name) else {
                self.release_rule_ids_except(&key, &BTreeSet::new());
                continue;
            };
            let parsed = parse_cluster(policy);
            let ingress = self.cluster_rule_states(&parsed, Direction::Ingress);
            let egress = self.cluster_rule_states(&parsed, Direction::Egress);
            let keep = ingress
                .iter()
                .chain(&egress)
                .map(|r| r.rule.clone())
                .collect();
            self.release_rule_ids_except(&key, &keep);
            let state = ClusterState {
                parsed,
                selected: BTreeSet::new(),
                ingress,
                egress,
            };
            self.clusters.insert(name.clone(), state);
            dirty.cluster_rules.insert(name);
        }
    }

    fn cluster_rule_states(
        &mut self,
        parsed: &ParsedCluster,
        direction: Direction,
    ) -> Vec<RuleState> {
        let tier = parsed.tier.unwrap_or(Tier::Admin);
        let mut out = Vec::new();
        for (index, rule) in parsed.rules(direction).iter().enumerate() {
            let rule_ref = RuleRef {
                policy: parsed.key.clone(),
                direction,
                index: u32::try_from(index).unwrap_or(u32::MAX),
                tier,
                rule_name: rule.name.clone(),
            };
            out.push(RuleState {
                rule_id: self.rule_id(&rule_ref),
                rule: rule_ref,
                parsed: rule.rule.clone(),
                matched: BTreeSet::new(),
                peers: Vec::new(),
                entries: Vec::new(),
                ingress_named: Vec::new(),
            });
        }
        out
    }

    /// `networks` prefixes, and every node address while some policy has a `nodes` peer.
    pub(super) fn cluster_prefixes(&self) -> Vec<IpNet> {
        let mut out: Vec<IpNet> = self
            .clusters
            .values()
            .flat_map(|c| c.parsed.prefixes())
            .collect();
        if self.clusters.values().any(|c| c.parsed.has_nodes()) {
            let addresses = self.model.nodes.values().flat_map(|n| &n.addresses);
            out.extend(node_prefixes(addresses));
        }
        out
    }

    /// Keeps every ClusterNetworkPolicy's selected pods current: all pods for a changed policy,
    /// else changed pods and the pods of namespaces whose labels changed.
    pub(super) fn update_cluster_selection(&mut self, dirty: &mut Dirty) {
        let mut touched: BTreeSet<ObjectKey> = dirty.pods.clone();
        for ns in &dirty.namespaces {
            let range = self.model.pods.range(ObjectKey::new(ns, "")..);
            touched.extend(
                range
                    .take_while(|(k, _)| &k.namespace == ns)
                    .map(|(k, _)| k.clone()),
            );
        }
        for (name, cluster) in &mut self.clusters {
            let candidates: Vec<ObjectKey> = if dirty.clusters.contains(name) {
                self.model.pods.keys().cloned().collect()
            } else {
                touched.iter().cloned().collect()
            };
            for pod_key in candidates {
                let pod = self.model.pods.get(&pod_key);
                let selects = pod.is_some_and(|p| selects(&cluster.parsed, &self.model, p));
                if selects == cluster.selected.contains(&pod_key) {
                    continue;
                }
                dirty.endpoints.insert(pod_key.clone());
                let set = self.cluster_selecting.entry(pod_key.clone()).or_default();
                if selects {
                    cluster.selected.insert(pod_key);
                    set.insert(name.clone());
                } else {
                    set.remove(name);
                    if set.is_empty() {
                        self.cluster_selecting.remove(&pod_key);
                    }
                    cluster.selected.remove(&pod_key);
                }
            }
        }
    }

    /// Recomputes the entries of dirty ClusterNetworkPolicies' rules and marks their endpoints.
    /// (Named ports that resolve nowhere are not reported: a `destinationNamedPort` is tried
    /// for every protocol, and most of those never resolve.)
    pub(super) fn update_cluster_rules(&mut self, dirty: &mut Dirty) {
        let table = &self.out.identities;
        for name in &dirty.cluster_rules {
            let Some(cluster) = self.clusters.get_mut(name) else {
                continue;
            };
            for rule in cluster.rules_mut() {
                rules::compute_entries(rule, table);
            }
            dirty.endpoints.extend(cluster.selected.iter().cloned());
        }
    }

    /// The ClusterNetworkPolicy rules that apply to `pod` in `direction`, split by tier, each in
    /// evaluation order ("Policies with lower priority values have higher precedence"; same
    /// priority: by name; then rule order), and the policies' names in that order.
    pub(super) fn cluster_rules_for(
        &self,
        pod: &ObjectKey,
        direction: Direction,
    ) -> (Vec<TierRule<'_>>, Vec<TierRule<'_>>, Vec<String>) {
        let mut policies: Vec<&ClusterState> = self
            .cluster_selecting
            .get(pod)
            .into_iter()
            .flatten()
            .filter_map(|name| self.clusters.get(name))
            .filter(|c| !c.rules(direction).is_empty())
            .collect();
        policies.sort_by(|a, b| {
            let key = |c: &ClusterState| (c.parsed.tier, c.parsed.priority, c.parsed.key.clone());
            key(a).cmp(&key(b))
        });
        let names = policies.iter().map(|c| c.parsed.key.name.clone()).collect();
        let (mut admin, mut baseline) = (Vec::new(), Vec::new());
        for c in policies {
            match c.parsed.tier {
                Some(Tier::Admin) => admin.extend(c.ranked(direction)),
                Some(Tier::Baseline) => baseline.extend(c.ranked(direction)),
                _ => {}
            }
        }
        (admin, baseline, names)
    }
}

/// "Subject defines the pods to which this ClusterNetworkPolicy applies"; "host-networked pods
/// are not included in subject selection". A policy with an unknown tier applies to nothing.
fn selects(parsed: &ParsedCluster, model: &crate::model::Model, pod: &Pod) -> bool {
    let Some(subject) = &parsed.subject else {
        return false;
    };
    parsed.tier.is_some()
        && pod.is_endpoint()
        && subject.matches(&rules::namespace_labels(model, &pod.namespace), &pod.labels)
}
