//! The cluster model: Namespaces, Pods, Services and NetworkPolicies as plain Rust types, and the
//! [`Model`] store that every source (manifest directory, Kubernetes API) fills in.
//!
//! The types keep what the policy engine needs and nothing more. NetworkPolicy objects are kept
//! as the API sends them (no defaulting, no validation: ports are `i64`, protocols are strings)
//! so that the compiler can report bad input per field instead of a source rejecting it.

mod cluster_policy;
mod policy;
mod store;

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

pub use cluster_policy::{
    ClusterEgressRule, ClusterIngressRule, ClusterNetworkPolicy, ClusterNetworkPolicySpec,
    ClusterPolicyPeer, ClusterPolicyProtocol, ClusterPolicySubject, ClusterPort, ClusterPortRange,
    ClusterRuleView, NamespacedPod, ProtocolMatch, CLUSTER_POLICY_API_VERSION, CLUSTER_POLICY_KIND,
};
pub use policy::{
    EgressRule, IngressRule, IntOrString, IpBlock, LabelSelector, LabelSelectorRequirement,
    NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec,
};
pub use store::{Model, ModelChange};

/// Labels of an object; a `BTreeMap` so iteration and serialisation are deterministic.
pub type Labels = BTreeMap<String, String>;

/// The label every namespace carries: "The Kubernetes control plane sets an immutable label
/// `kubernetes.io/metadata.name` on all namespaces, the value of the label is the namespace name."
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// A `namespace/name` reference to a namespaced object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ObjectKey {
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// Parses `ns/name`; `None` when there is no `/` or a side is empty.
    pub fn parse(text: &str) -> Option<Self> {
        let (namespace, name) = text.split_once('/')?;
        (!namespace.is_empty() && !name.is_empty() && !name.contains('/'))
            .then(|| Self::new(namespace, name))
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// An L4 protocol that NetworkPolicy polices. The discriminant is the IP protocol number, which is
/// what the dataplane keys on.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "UPPERCASE")]
pub enum Protocol {
    #[default]
    Tcp = 6,
    Udp = 17,
    Sctp = 132,
}

impl Protocol {
    pub const ALL: [Protocol; 3] = [Protocol::Tcp, Protocol::Udp, Protocol::Sctp];

    /// Parses the API spelling (`TCP`, `UDP`, `SCTP`). The API is case-sensitive; so are we.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "TCP" => Some(Self::Tcp),
            "UDP" => Some(Self::Udp),
            "SCTP" => Some(Self::Sctp),
            _ => None,
        }
    }

    /// Parses case-insensitively, for command-line arguments.
    pub fn parse_loose(text: &str) -> Option<Self> {
        Self::parse(&text.to_ascii_uppercase())
    }

    /// The IP protocol number (6, 17, 132).
    pub fn number(self) -> u8 {
        self as u8
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "TCP",
            Self::Udp => "UDP",
            Self::Sctp => "SCTP",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The namespace annotation that puts a namespace's pods in audit mode (value `"true"`): policy
/// denies are logged and counted, not enforced.
pub const AUDIT_ANNOTATION: &str = "palisade.dev/audit";

/// A Namespace. `labels` always include [`NAMESPACE_NAME_LABEL`] (the store adds it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Namespace {
    pub name: String,
    pub labels: Labels,
    /// Only Palisade's own annotations (`palisade.dev/...`); others are dropped by the sources.
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub annotations: Labels,
}

impl Namespace {
    /// A namespace with the given labels plus `kubernetes.io/metadata.name=<name>`, which
    /// "Namespaces always carry ... even where an old API server does not add it".
    pub fn new(name: impl Into<String>, mut labels: Labels) -> Self {
        let name = name.into();
        labels.insert(NAMESPACE_NAME_LABEL.to_owned(), name.clone());
        Self {
            name,
            labels,
            annotations: Labels::new(),
        }
    }

    /// Whether the namespace asks for audit mode ([`AUDIT_ANNOTATION`]).
    pub fn audit(&self) -> bool {
        self.annotations
            .get(AUDIT_ANNOTATION)
            .is_some_and(|v| v == "true")
    }
}

/// One `containerPort` of a pod: what named ports resolve against.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ContainerPort {
    pub name: Option<String>,
    pub port: u16,
    pub protocol: Protocol,
}

/// A Pod as the policy engine sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pod {
    pub namespace: String,
    pub name: String,
    pub labels: Labels,
    /// `status.podIPs` (or `status.podIP`), at most one per family in practice.
    pub ips: Vec<IpAddr>,
    pub node_name: Option<String>,
    /// hostNetwork pods "are not endpoints; as peers they appear with the node's IP".
    pub host_network: bool,
    pub container_ports: Vec<ContainerPort>,
}

impl Pod {
    pub fn key(&self) -> ObjectKey {
        ObjectKey::new(&self.namespace, &self.name)
    }

    /// Whether policy applies to this pod: it has an IP and does not share the node's network.
    pub fn is_endpoint(&self) -> bool {
        !self.host_network && !self.ips.is_empty()
    }
}

/// One port of a Service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServicePort {
    pub name: Option<String>,
    pub protocol: Protocol,
    pub port: u16,
    /// `targetPort`: a number or the name of a container port.
    pub target_port: IntOrString,
}

/// A Service: used to translate ClusterIP destinations in `explain`, since "Policy applies after
/// Service translation: egress rules see the backend pod IP and targetPort, not the ClusterIP".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    pub namespace: String,
    pub name: String,
    pub cluster_ips: Vec<IpAddr>,
    /// `None` for a Service without selector (its endpoints are managed by hand).
    pub selector: Option<Labels>,
    pub ports: Vec<ServicePort>,
}

/// A Node: its addresses (traffic between a pod and its own node is allowed) and its labels
/// (what a ClusterNetworkPolicy `nodes` peer selects).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub name: String,
    pub addresses: Vec<IpAddr>,
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub labels: Labels,
}
