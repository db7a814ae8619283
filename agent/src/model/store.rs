//! The store: the whole cluster as the policy engine sees it, and the changes sources make to it.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{
    ClusterNetworkPolicy, Labels, Namespace, NetworkPolicy, Node, ObjectKey, Pod, Service,
};

/// Every object Palisade knows about, keyed deterministically.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Model {
    pub namespaces: BTreeMap<String, Namespace>,
    pub pods: BTreeMap<ObjectKey, Pod>,
    pub services: BTreeMap<ObjectKey, Service>,
    pub policies: BTreeMap<ObjectKey, NetworkPolicy>,
    pub nodes: BTreeMap<String, Node>,
    /// ClusterNetworkPolicies by name (cluster-scoped).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub cluster_policies: BTreeMap<String, ClusterNetworkPolicy>,
}

/// One change to the model, as a watcher event or a manifest reload produces it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ModelChange {
    UpsertNamespace(Namespace),
    /// Deleting a namespace deletes its pods, services and policies too (as the API does).
    DeleteNamespace(String),
    UpsertPod(Pod),
    DeletePod(ObjectKey),
    UpsertService(Service),
    DeleteService(ObjectKey),
    UpsertPolicy(NetworkPolicy),
    DeletePolicy(ObjectKey),
    UpsertNode(Node),
    DeleteNode(String),
    UpsertClusterPolicy(ClusterNetworkPolicy),
    DeleteClusterPolicy(String),
}

impl Model {
    pub fn new() -> Self {
        Self::default()
    }

    /// The changes that turn `self` into `new` (a source's reload fed to the incremental
    /// compiler as the difference from what it holds).
    pub fn changes_to(&self, new: &Model) -> Vec<ModelChange> {
        let mut out = Vec::new();
        macro_rules! section {
            ($field:ident, $upsert:ident, $delete:ident) => {
                for (k, v) in &new.$field {
                    if self.$field.get(k) != Some(v) {
                        out.push(ModelChange::$upsert(v.clone()));
                    }
                }
                for k in self.$field.keys() {
                    if !new.$field.contains_key(k) {
                        out.push(ModelChange::$delete(k.clone()));
                    }
                }
            };
        }
        section!(namespaces, UpsertNamespace, DeleteNamespace);
        section!(nodes, UpsertNode, DeleteNode);
        section!(pods, UpsertPod, DeletePod);
        section!(services, UpsertService, DeleteService);
        section!(policies, UpsertPolicy, DeletePolicy);
        section!(cluster_policies, UpsertClusterPolicy, DeleteClusterPolicy);
        out
    }

    /// Labels of a namespace. A namespace that is not (yet) known still carries its name label,
    /// so that `kubernetes.io/metadata.name` selectors work before the Namespace object arrives.
    pub fn namespace_labels(&self, namespace: &str) -> Labels {
        match self.namespaces.get(namespace) {
            Some(ns) => ns.labels.clone(),
            None => Namespace::new(namespace, Labels::new()).labels,
        }
    }

    /// Whether `namespace` is annotated for audit mode.
    pub fn namespace_audited(&self, namespace: &str) -> bool {
        self.namespaces.get(namespace).is_some_and(Namespace::audit)
    }

    /// Applies a change and returns the primitive changes it amounted to (a namespace deletion
    /// expands into the deletion of everything in it), so that an incremental consumer sees each.
    pub fn apply(&mut self, change: ModelChange) -> Vec<ModelChange> {
        match change {
            ModelChange::DeleteNamespace(name) => {
                let mut done = Vec::new();
                let pods = keys_in(&self.pods, &name);
                let services = keys_in(&self.services, &name);
                let policies = keys_in(&self.policies, &name);
                done.extend(pods.into_iter().map(ModelChange::DeletePod));
                done.extend(services.into_iter().map(ModelChange::DeleteService));
                done.extend(policies.into_iter().map(ModelChange::DeletePolicy));
                done.push(ModelChange::DeleteNamespace(name));
                for change in &done {
                    self.apply_one(change.clone());
                }
                done
            }
            other => {
                self.apply_one(other.clone());
                vec![other]
            }
        }
    }

    fn apply_one(&mut self, change: ModelChange) {
        match change {
            ModelChange::UpsertNamespace(ns) => {
                // Re-add the name label in case the source built the value by hand.
                let ns = Namespace {
                    annotations: ns.annotations,
                    ..Namespace::new(ns.name, ns.labels)
                };
                self.namespaces.insert(ns.name.clone(), ns);
            }
            ModelChange::DeleteNamespace(name) => {
                self.namespaces.remove(&name);
            }
            ModelChange::UpsertPod(pod) => {
                self.pods.insert(pod.key(), pod);
            }
            ModelChange::DeletePod(key) => {
                self.pods.remove(&key);
            }
            ModelChange::UpsertService(svc) => {
                self.services
                    .insert(ObjectKey::new(&svc.namespace, &svc.name), svc);
            }
            ModelChange::DeleteService(key) => {
                self.services.remove(&key);
            }
            ModelChange::UpsertPolicy(policy) => {
                self.policies.insert(policy.key(), policy);
            }
            ModelChange::DeletePolicy(key) => {
                self.policies.remove(&key);
            }
            ModelChange::UpsertNode(node) => {
                self.nodes.insert(node.name.clone(), node);
            }
            ModelChange::DeleteNode(name) => {
                self.nodes.remove(&name);
            }
            ModelChange::UpsertClusterPolicy(policy) => {
                self.cluster_policies.insert(policy.name.clone(), policy);
            }
            ModelChange::DeleteClusterPolicy(name) => {
                self.cluster_policies.remove(&name);
            }
        }
    }

    /// The changes that build this model from an empty one (namespaces and nodes first).
    pub fn as_changes(&self) -> Vec<ModelChange> {
        let mut out = Vec::new();
        out.extend(
            self.namespaces
                .values()
                .cloned()
                .map(ModelChange::UpsertNamespace),
        );
        out.extend(self.nodes.values().cloned().map(ModelChange::UpsertNode));
        out.extend(self.pods.values().cloned().map(ModelChange::UpsertPod));
        out.extend(
            self.services
                .values()
                .cloned()
                .map(ModelChange::UpsertService),
        );
        out.extend(
            self.policies
                .values()
                .cloned()
                .map(ModelChange::UpsertPolicy),
        );
        out.extend(
            self.cluster_policies
                .values()
                .cloned()
                .map(ModelChange::UpsertClusterPolicy),
        );
        out
    }
}

fn keys_in<V>(map: &BTreeMap<ObjectKey, V>, namespace: &str) -> Vec<ObjectKey> {
    map.keys()
        .filter(|k| k.namespace == namespace)
        .cloned()
        .collect()
}
