//! `policy.networking.k8s.io/v1alpha2` ClusterNetworkPolicy, field for field as the API sends it,
//! without defaulting or validation (tier, action and priority are kept as sent so that the
//! compiler can report a bad value per field instead of a source rejecting the object).
//!
//! Semantics and the choices Palisade makes are in `docs/cluster-network-policy.md`.
use serde::{Deserialize, Serialize};

use super::LabelSelector;

/// The API group/version of the kind.
pub const CLUSTER_POLICY_API_VERSION: &str = "policy.networking.k8s.io/v1alpha2";
/// The kind name.
pub const CLUSTER_POLICY_KIND: &str = "ClusterNetworkPolicy";

/// A ClusterNetworkPolicy: cluster-scoped (a name, no namespace) and its spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterNetworkPolicy {
    pub name: String,
    pub spec: ClusterNetworkPolicySpec,
}

/// `spec`: "Tier is used as the top-level grouping for network policy prioritization" (`Admin`
/// or `Baseline`); "Priority is a value from 0 to 1000 ... lower priority values have higher
/// precedence".
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterNetworkPolicySpec {
    #[serde(default)]
    pub tier: String,
    #[serde(default)]
    pub priority: i64,
    #[serde(default)]
    pub subject: ClusterPolicySubject,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<Vec<ClusterIngressRule>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<Vec<ClusterEgressRule>>,
}

/// `spec.subject`: "Exactly one field must be set."
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterPolicySubject {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<NamespacedPod>,
}

/// "select a given set of pod(s) in selected namespace(s)": both selectors, ANDed; an empty
/// selector selects all.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NamespacedPod {
    #[serde(default)]
    pub namespace_selector: LabelSelector,
    #[serde(default)]
    pub pod_selector: LabelSelector,
}

/// One ingress rule: `action` (`Accept`, `Deny`, `Pass`), `from` peers, optional `protocols`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterIngressRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default)]
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Vec<ClusterPolicyPeer>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocols: Option<Vec<ClusterPolicyProtocol>>,
}

/// One egress rule: `action`, `to` peers, optional `protocols`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterEgressRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default)]
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Vec<ClusterPolicyPeer>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocols: Option<Vec<ClusterPolicyProtocol>>,
}

/// A peer: "Exactly one of the fields must be set". Ingress peers may only use `namespaces` and
/// `pods`; egress peers also `nodes`, `networks` and `domainNames` (not implemented: such a
/// peer matches nothing, reported).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterPolicyPeer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<NamespacedPod>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub networks: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain_names: Option<Vec<String>>,
}

/// One `protocols` entry: "Exactly one field must be set."
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterPolicyProtocol {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<ProtocolMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udp: Option<ProtocolMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sctp: Option<ProtocolMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_named_port: Option<String>,
}

/// `tcp`/`udp`/`sctp`: an optional `destinationPort` (absent = every port of the protocol).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProtocolMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_port: Option<ClusterPort>,
}

/// "Port matches on port number. You must specify either Port or Range."
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ClusterPort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<ClusterPortRange>,
}

/// "an inclusive range of ports from the assigned Start value to End value".
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ClusterPortRange {
    #[serde(default)]
    pub start: i64,
    #[serde(default)]
    pub end: i64,
}

impl ClusterNetworkPolicy {
    /// One direction's rules as (name, action, peers, protocols), for code that treats both
    /// directions alike.
    pub fn rules(&self, egress: bool) -> Vec<ClusterRuleView<'_>> {
        if egress {
            let rules = self.spec.egress.iter().flatten();
            rules
                .map(|r| ClusterRuleView {
                    egress: true,
                    name: r.name.as_deref(),
                    action: &r.action,
                    peers: r.to.as_deref(),
                    protocols: r.protocols.as_deref(),
                })
                .collect()
        } else {
            let rules = self.spec.ingress.iter().flatten();
            rules
                .map(|r| ClusterRuleView {
                    egress: false,
                    name: r.name.as_deref(),
                    action: &r.action,
                    peers: r.from.as_deref(),
                    protocols: r.protocols.as_deref(),
                })
                .collect()
        }
    }
}

/// A borrowed view of one rule, whichever the direction.
#[derive(Debug, Clone, Copy)]
pub struct ClusterRuleView<'a> {
    /// Whether this is an egress rule (its peers are `to`).
    pub egress: bool,
    pub name: Option<&'a str>,
    pub action: &'a str,
    pub peers: Option<&'a [ClusterPolicyPeer]>,
    pub protocols: Option<&'a [ClusterPolicyProtocol]>,
}
