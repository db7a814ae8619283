//! The cluster state a case describes (namespaces, pods, policies), and how each action
//! changes it. Pure: the environment turns the changes into pods, Services and manifests.

use std::collections::BTreeMap;

use serde_json::Value;

use super::case::{split_key, Action, ContainerPort, InitialState, Labels, Protocol};

/// The label every namespace carries.
pub const NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// An action cannot be applied to the current state.
#[derive(Debug, thiserror::Error)]
pub enum WorldError {
    #[error("namespace {0} does not exist")]
    NoNamespace(String),
    #[error("namespace {0} already exists")]
    NamespaceExists(String),
    #[error("pod {0} does not exist")]
    NoPod(String),
    #[error("pod {0} already exists")]
    PodExists(String),
    #[error("{0:?} is not a pod key (ns/name)")]
    BadPodKey(String),
    #[error("policy {namespace}/{name} does not exist")]
    NoPolicy { namespace: String, name: String },
    #[error("ClusterNetworkPolicy {0} already exists")]
    ClusterPolicyExists(String),
    #[error("ClusterNetworkPolicy {0} does not exist")]
    NoClusterPolicy(String),
    #[error("ClusterNetworkPolicy without metadata.name")]
    ClusterPolicyName,
    #[error("policy in namespace {namespace}: {reason}")]
    BadPolicy { namespace: String, reason: String },
    #[error("{what} labels after the merge are {merged:?}, but the case says {resulting:?}")]
    LabelMismatch {
        what: String,
        merged: Labels,
        resulting: Labels,
    },
    #[error("the probe lists pods {listed:?}, but the pods that exist are {existing:?}")]
    PodsMismatch {
        listed: Vec<String>,
        existing: Vec<String>,
    },
}

/// A pod as the case describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodState {
    pub namespace: String,
    pub name: String,
    pub labels: Labels,
    pub ports: Vec<ContainerPort>,
}

impl PodState {
    /// The ports it serves and its Service exposes: SCTP ones only where the kernel has SCTP.
    pub fn served_ports(&self) -> impl Iterator<Item = &ContainerPort> {
        let sctp = crate::probe::sctp_supported().is_ok();
        self.ports
            .iter()
            .filter(move |p| sctp || p.protocol != Protocol::Sctp)
    }
}

/// What an action did, beyond changing manifests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Effects {
    pub pods_created: Vec<String>,
    pub pods_deleted: Vec<String>,
}

/// The state a case has reached.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct World {
    /// Name → labels (always including `kubernetes.io/metadata.name`).
    pub namespaces: BTreeMap<String, Labels>,
    /// `ns/name` → pod.
    pub pods: BTreeMap<String, PodState>,
    /// (namespace, name) → the policy object as the case gives it (templates unfilled).
    pub policies: BTreeMap<(String, String), Value>,
    /// What a `create_pod` serves: the initial pods' containerPorts.
    pub default_ports: Vec<ContainerPort>,
    /// Name → ClusterNetworkPolicy object (cluster-scoped; templates filled in).
    pub cluster_policies: BTreeMap<String, Value>,
}

impl World {
    pub fn new(init: &InitialState) -> Result<Self, WorldError> {
        let mut world = World::default();
        for (name, ns) in &init.namespaces {
            world
                .namespaces
                .insert(name.clone(), ns_labels(name, &ns.labels));
        }
        for (key, pod) in &init.pods {
            world.add_pod(key, pod.labels.clone(), pod.container_ports.clone())?;
            for p in &pod.container_ports {
                let known = world
                    .default_ports
                    .iter()
                    .any(|d| (d.container_port, d.protocol) == (p.container_port, p.protocol));
                if !known {
                    world.default_ports.push(p.clone());
                }
            }
        }
        Ok(world)
    }

    fn add_pod(
        &mut self,
        key: &str,
        labels: Labels,
        ports: Vec<ContainerPort>,
    ) -> Result<(), WorldError> {
        let (ns, name) = split_key(key).ok_or_else(|| WorldError::BadPodKey(key.to_owned()))?;
        if !self.namespaces.contains_key(ns) {
            return Err(WorldError::NoNamespace(ns.to_owned()));
        }
        if self.pods.contains_key(key) {
            return Err(WorldError::PodExists(key.to_owned()));
        }
        let pod = PodState {
            namespace: ns.to_owned(),
            name: name.to_owned(),
            labels,
            ports,
        };
        self.pods.insert(key.to_owned(), pod);
        Ok(())
    }

    fn pod_mut(&mut self, key: &str) -> Result<&mut PodState, WorldError> {
        self.pods
            .get_mut(key)
            .ok_or_else(|| WorldError::NoPod(key.to_owned()))
    }

    fn ns_mut(&mut self, ns: &str) -> Result<&mut Labels, WorldError> {
        self.namespaces
            .get_mut(ns)
            .ok_or_else(|| WorldError::NoNamespace(ns.to_owned()))
    }

    /// Applies one action (a probe changes nothing).
    pub fn apply(&mut self, action: &Action) -> Result<Effects, WorldError> {
        match action {
            Action::DeleteNamespace { namespace } => self.delete_namespace(namespace),
            Action::CreatePod {
                pod,
                labels,
                container_ports,
            } => {
                let ports = container_ports
                    .clone()
                    .unwrap_or_else(|| self.default_ports.clone());
                self.add_pod(pod, labels.clone(), ports)?;
                Ok(Effects {
                    pods_created: vec![pod.clone()],
                    ..Effects::default()
                })
            }
            Action::DeletePod { pod } => {
                self.pods
                    .remove(pod)
                    .ok_or_else(|| WorldError::NoPod(pod.clone()))?;
                Ok(Effects {
                    pods_deleted: vec![pod.clone()],
                    ..Effects::default()
                })
            }
            Action::CreateClusterPolicy { policy } => {
                let name = cluster_policy_name(policy)?;
                if self.cluster_policies.contains_key(&name) {
                    return Err(WorldError::ClusterPolicyExists(name));
                }
                self.cluster_policies.insert(name, policy.clone());
                Ok(Effects::default())
            }
            Action::UpdateClusterPolicy { policy } => {
                let name = cluster_policy_name(policy)?;
                let slot = self
                    .cluster_policies
                    .get_mut(&name)
                    .ok_or(WorldError::NoClusterPolicy(name))?;
                *slot = policy.clone();
                Ok(Effects::default())
            }
            Action::DeleteClusterPolicy { name } => self
                .cluster_policies
                .remove(name)
                .map(|_| Effects::default())
                .ok_or_else(|| WorldError::NoClusterPolicy(name.clone())),
            other => self.relabel_or_policy(other).map(|()| Effects::default()),
        }
    }

    /// The actions that only change labels or policies.
    fn relabel_or_policy(&mut self, action: &Action) -> Result<(), WorldError> {
        match action {
            Action::CreatePolicy { namespace, policy }
            | Action::UpdatePolicy { namespace, policy } => self.put_policy(namespace, policy),
            Action::DeletePolicy { namespace, name } => {
                let key = (namespace.clone(), name.clone());
                self.policies
                    .remove(&key)
                    .map(drop)
                    .ok_or_else(|| WorldError::NoPolicy {
                        namespace: namespace.clone(),
                        name: name.clone(),
                    })
            }
            Action::DeleteAllPolicies {} => {
                self.policies.clear();
                Ok(())
            }
            Action::AddNamespaceLabels {
                namespace,
                labels,
                resulting_labels,
            } => self.add_ns_labels(namespace, labels, resulting_labels.as_ref()),
            Action::SetNamespaceLabels { namespace, labels } => {
                *self.ns_mut(namespace)? = ns_labels(namespace, labels);
                Ok(())
            }
            Action::AddPodLabels {
                pod,
                labels,
                resulting_labels,
            } => self.add_pod_labels(pod, labels, resulting_labels.as_ref()),
            Action::SetPodLabels { pod, labels } => {
                self.pod_mut(pod)?.labels = labels.clone();
                Ok(())
            }
            Action::CreateNamespace { namespace, labels } => {
                if self.namespaces.contains_key(namespace) {
                    return Err(WorldError::NamespaceExists(namespace.clone()));
                }
                self.namespaces
                    .insert(namespace.clone(), ns_labels(namespace, labels));
                Ok(())
            }
            Action::DeleteNamespace { .. }
            | Action::CreatePod { .. }
            | Action::DeletePod { .. }
            | Action::CreateClusterPolicy { .. }
            | Action::UpdateClusterPolicy { .. }
            | Action::DeleteClusterPolicy { .. }
            | Action::Probe(_) => Ok(()),
        }
    }

    fn put_policy(&mut self, namespace: &str, policy: &Value) -> Result<(), WorldError> {
        let bad = |reason: &str| WorldError::BadPolicy {
            namespace: namespace.to_owned(),
            reason: reason.to_owned(),
        };
        let name = policy
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("no metadata.name"))?;
        if let Some(ns) = policy
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
        {
            if ns != namespace {
                return Err(bad(&format!("metadata.namespace is {ns}")));
            }
        }
        if !self.namespaces.contains_key(namespace) {
            return Err(WorldError::NoNamespace(namespace.to_owned()));
        }
        self.policies
            .insert((namespace.to_owned(), name.to_owned()), policy.clone());
        Ok(())
    }

    fn add_ns_labels(
        &mut self,
        namespace: &str,
        labels: &Labels,
        resulting: Option<&Labels>,
    ) -> Result<(), WorldError> {
        let current = self.ns_mut(namespace)?;
        current.extend(labels.clone());
        check_result(&format!("namespace {namespace}"), current, resulting)
    }

    fn add_pod_labels(
        &mut self,
        pod: &str,
        labels: &Labels,
        resulting: Option<&Labels>,
    ) -> Result<(), WorldError> {
        let current = &mut self.pod_mut(pod)?.labels;
        current.extend(labels.clone());
        check_result(&format!("pod {pod}"), current, resulting)
    }

    fn delete_namespace(&mut self, namespace: &str) -> Result<Effects, WorldError> {
        self.namespaces
            .remove(namespace)
            .ok_or_else(|| WorldError::NoNamespace(namespace.to_owned()))?;
        self.policies.retain(|(ns, _), _| ns != namespace);
        let gone: Vec<String> = self
            .pods
            .iter()
            .filter(|(_, p)| p.namespace == namespace)
            .map(|(k, _)| k.clone())
            .collect();
        for key in &gone {
            self.pods.remove(key);
        }
        Ok(Effects {
            pods_deleted: gone,
            ..Effects::default()
        })
    }

    /// Checks a probe's `pods` list against the pods that exist.
    pub fn check_pods(&self, listed: Option<&[String]>) -> Result<(), WorldError> {
        let Some(listed) = listed else {
            return Ok(());
        };
        let mut sorted = listed.to_vec();
        sorted.sort();
        let existing: Vec<String> = self.pods.keys().cloned().collect();
        if sorted != existing {
            return Err(WorldError::PodsMismatch {
                listed: listed.to_vec(),
                existing,
            });
        }
        Ok(())
    }
}

/// A ClusterNetworkPolicy's `metadata.name` (it is cluster-scoped: the name is the key).
fn cluster_policy_name(policy: &Value) -> Result<String, WorldError> {
    policy
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or(WorldError::ClusterPolicyName)
}

/// A namespace's labels with `kubernetes.io/metadata.name` added.
pub fn ns_labels(name: &str, labels: &Labels) -> Labels {
    let mut out = labels.clone();
    out.insert(NAME_LABEL.to_owned(), name.to_owned());
    out
}

fn check_result(what: &str, merged: &Labels, resulting: Option<&Labels>) -> Result<(), WorldError> {
    match resulting {
        Some(r) if r != merged => Err(WorldError::LabelMismatch {
            what: what.to_owned(),
            merged: merged.clone(),
            resulting: r.clone(),
        }),
        _ => Ok(()),
    }
}
