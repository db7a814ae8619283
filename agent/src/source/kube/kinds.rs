//! The four watched kinds: what is kept of each object (pods are read into [`SlimPod`]; `strip`
//! is applied by `.modify()` before the reflector stores an object) and how it becomes a model
//! object (through the manifest source's reader, so that both sources read every field the same
//! way). `agent/tests/kube_memory.rs` measures what a pod costs.
//!
//! kube-rs: "managed fields typically constitutes around half the size of `ObjectMeta` and can
//! often be dropped"; "you minimally need the spec properties your app relies on". We keep
//! name, namespace, labels, uid and resourceVersion, and of the spec and status only what the
//! policy engine reads.

use std::fmt::Debug;

use k8s_openapi::{
    api::{
        core::v1::{Namespace, Service, ServiceSpec},
        networking::v1::NetworkPolicy,
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{Resource, ResourceExt as _};
use serde::{de::DeserializeOwned, Serialize};

use super::slim::SlimPod;
use crate::{
    model::{Model, ModelChange, ObjectKey},
    source::manifest::{self, ManifestError},
};

/// Which watched resource (the health report's keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ResourceKind {
    Namespaces,
    Pods,
    Services,
    NetworkPolicies,
    /// Optional (a CRD): not in [`ResourceKind::ALL`], watched only once the API server serves
    /// it (`cluster_policy.rs`).
    ClusterNetworkPolicies,
}

impl ResourceKind {
    pub const ALL: [ResourceKind; 4] = [
        Self::Namespaces,
        Self::Pods,
        Self::Services,
        Self::NetworkPolicies,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Namespaces => "namespaces",
            Self::Pods => "pods",
            Self::Services => "services",
            Self::NetworkPolicies => "networkpolicies",
            Self::ClusterNetworkPolicies => "clusternetworkpolicies",
        }
    }

    /// The keys of this kind's objects in `model` (`""` namespace for namespaces).
    pub fn keys(self, model: &Model) -> Vec<ObjectKey> {
        match self {
            Self::Namespaces => model
                .namespaces
                .keys()
                .map(|n| ObjectKey::new("", n))
                .collect(),
            Self::Pods => model.pods.keys().cloned().collect(),
            Self::Services => model.services.keys().cloned().collect(),
            Self::NetworkPolicies => model.policies.keys().cloned().collect(),
            Self::ClusterNetworkPolicies => model
                .cluster_policies
                .keys()
                .map(|n| ObjectKey::new("", n))
                .collect(),
        }
    }

    /// Removes one object. Unlike `ModelChange::DeleteNamespace`, removing a namespace does not
    /// cascade: the API deletes its pods, services and policies itself, and each watcher
    /// reports those deletions.
    pub fn remove(self, model: &mut Model, key: &ObjectKey) -> bool {
        match self {
            Self::Namespaces => model.namespaces.remove(&key.name).is_some(),
            Self::Pods => model.pods.remove(key).is_some(),
            Self::Services => model.services.remove(key).is_some(),
            Self::NetworkPolicies => model.policies.remove(key).is_some(),
            Self::ClusterNetworkPolicies => model.cluster_policies.remove(&key.name).is_some(),
        }
    }
}

/// A watched Kubernetes type.
pub trait Watched:
    Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + Debug + Send + Sync + 'static
{
    const KIND: ResourceKind;
    /// The manifest `kind` the model reader expects.
    const MANIFEST_KIND: &'static str;

    /// Drops what the policy engine never reads.
    fn strip(&mut self);

    /// The model key (`""` namespace for cluster-scoped objects).
    fn model_key(&self) -> ObjectKey {
        ObjectKey::new(self.namespace().unwrap_or_default(), self.name_any())
    }

    /// The model object, read by the manifest source's reader.
    fn to_model(&self) -> Result<ModelChange, ManifestError> {
        let value = serde_json::to_value(self).map_err(ManifestError::Json)?;
        manifest::object(Self::MANIFEST_KIND, &value)
    }
}

/// Keeps name, namespace, labels, uid, resourceVersion, the deletion timestamp and Palisade's
/// own annotations.
fn strip_meta(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    // Only Palisade's own annotations are read (`palisade.dev/audit` on namespaces).
    meta.annotations = meta
        .annotations
        .take()
        .map(|a| {
            a.into_iter()
                .filter(|(k, _)| k.starts_with("palisade.dev/"))
                .collect::<std::collections::BTreeMap<_, _>>()
        })
        .filter(|a| !a.is_empty());
    meta.owner_references = None;
    meta.finalizers = None;
    meta.generate_name = None;
    meta.creation_timestamp = None;
    meta.self_link = None;
}

impl Watched for Namespace {
    const KIND: ResourceKind = ResourceKind::Namespaces;
    const MANIFEST_KIND: &'static str = "Namespace";

    fn strip(&mut self) {
        strip_meta(&mut self.metadata);
        self.spec = None;
        self.status = None;
    }
}

/// Pod phases after which the pod's IP no longer belongs to it. Kubernetes: "Succeeded: All
/// containers in the Pod have terminated in success, and will not be restarted." "Failed: All
/// containers in the Pod have terminated, and at least one container has terminated in
/// failure." Their sandboxes are gone and the IP can be handed to a new pod.
const TERMINAL_PHASES: [&str; 2] = ["Succeeded", "Failed"];

impl Watched for SlimPod {
    const KIND: ResourceKind = ResourceKind::Pods;
    const MANIFEST_KIND: &'static str = "Pod";

    fn strip(&mut self) {
        strip_meta(&mut self.metadata);
        let terminal = self.status.as_ref().is_some_and(|s| {
            s.phase
                .as_deref()
                .is_some_and(|p| TERMINAL_PHASES.contains(&p))
        });
        if let Some(status) = self.status.as_mut().filter(|_| terminal) {
            status.pod_ip = None;
            status.pod_ips = None;
        }
    }
}

impl Watched for Service {
    const KIND: ResourceKind = ResourceKind::Services;
    const MANIFEST_KIND: &'static str = "Service";

    fn strip(&mut self) {
        strip_meta(&mut self.metadata);
        self.status = None;
        if let Some(spec) = self.spec.take() {
            self.spec = Some(ServiceSpec {
                cluster_ip: spec.cluster_ip,
                cluster_ips: spec.cluster_ips,
                selector: spec.selector,
                ports: spec.ports,
                type_: spec.type_,
                ..ServiceSpec::default()
            });
        }
    }
}

impl Watched for NetworkPolicy {
    const KIND: ResourceKind = ResourceKind::NetworkPolicies;
    const MANIFEST_KIND: &'static str = "NetworkPolicy";

    fn strip(&mut self) {
        strip_meta(&mut self.metadata);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::IntOrString;

    fn pod_json(phase: &str) -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"namespace": "x", "name": "a", "labels": {"app": "a"},
                "annotations": {"big": "blob"}, "uid": "u1", "resourceVersion": "7",
                "managedFields": [{"manager": "kubectl", "operation": "Apply"}]},
            "spec": {"nodeName": "n0", "containers": [{"name": "c", "image": "busybox",
                "env": [{"name": "A", "value": "B"}],
                "ports": [{"name": "http", "containerPort": 80}]}]},
            "status": {"phase": phase, "podIP": "10.244.0.5", "podIPs": [{"ip": "10.244.0.5"}],
                "conditions": [{"type": "Ready", "status": "True"}], "hostIP": "198.18.0.1"}
        })
    }

    #[test]
    fn pod_keeps_only_what_policy_reads() {
        let mut pod: SlimPod = serde_json::from_value(pod_json("Running")).unwrap();
        pod.strip();
        let v = serde_json::to_value(&pod).unwrap();
        assert_eq!(v["metadata"]["annotations"], serde_json::Value::Null);
        assert_eq!(v["metadata"]["managedFields"], serde_json::Value::Null);
        assert_eq!(v["metadata"]["resourceVersion"], "7");
        assert_eq!(v["spec"]["containers"][0]["image"], serde_json::Value::Null);
        assert_eq!(v["status"]["conditions"], serde_json::Value::Null);
        let ModelChange::UpsertPod(p) = pod.to_model().unwrap() else {
            panic!("not a pod")
        };
        assert_eq!(
            p.ips,
            vec!["10.244.0.5".parse::<std::net::IpAddr>().unwrap()]
        );
        assert_eq!(p.node_name.as_deref(), Some("n0"));
        assert_eq!(p.container_ports[0].name.as_deref(), Some("http"));
        assert_eq!(p.labels["app"], "a");
    }

    #[test]
    fn terminated_pods_lose_their_ips() {
        for phase in TERMINAL_PHASES {
            let mut pod: SlimPod = serde_json::from_value(pod_json(phase)).unwrap();
            pod.strip();
            let ModelChange::UpsertPod(p) = pod.to_model().unwrap() else {
                panic!("not a pod")
            };
            assert!(p.ips.is_empty(), "{phase}");
        }
    }

    #[test]
    fn service_and_policy_and_namespace_convert() {
        let mut svc: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"namespace": "x", "name": "s"},
            "spec": {"clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"], "selector": {"app": "a"},
                "ports": [{"port": 80, "targetPort": "http", "protocol": "TCP"}],
                "sessionAffinity": "None"},
            "status": {"loadBalancer": {}}
        }))
        .unwrap();
        svc.strip();
        let ModelChange::UpsertService(s) = svc.to_model().unwrap() else {
            panic!("not a service")
        };
        assert_eq!(s.ports[0].target_port, IntOrString::String("http".into()));
        let np: NetworkPolicy = serde_json::from_value(serde_json::json!({
            "metadata": {"namespace": "x", "name": "deny"},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}
        }))
        .unwrap();
        assert!(matches!(
            np.to_model().unwrap(),
            ModelChange::UpsertPolicy(_)
        ));
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "x", "labels": {"team": "a"}}
        }))
        .unwrap();
        let ModelChange::UpsertNamespace(n) = ns.to_model().unwrap() else {
            panic!("not a namespace")
        };
        assert_eq!(n.labels["kubernetes.io/metadata.name"], "x");
        assert_eq!(ns.model_key(), ObjectKey::new("", "x"));
    }

    #[test]
    fn namespace_keeps_only_palisade_annotations() {
        let mut ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "x", "annotations": {"palisade.dev/audit": "true", "big": "blob"}}
        }))
        .unwrap();
        ns.strip();
        let v = serde_json::to_value(&ns).unwrap();
        assert_eq!(
            v["metadata"]["annotations"],
            serde_json::json!({"palisade.dev/audit": "true"})
        );
        let ModelChange::UpsertNamespace(n) = ns.to_model().unwrap() else {
            panic!("not a namespace")
        };
        assert!(n.audit(), "audit mode reaches the model");
    }
}
