//! Problems found in policies: what is wrong, and the collector that attaches policy and field.
use thiserror::Error;

use super::output::{PolicyProblem, Severity};
use crate::model::ObjectKey;

/// Everything the compiler can find wrong in a policy field.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PolicyError {
    #[error("invalid CIDR {value:?}: {reason}")]
    InvalidCidr { value: String, reason: String },
    #[error("except {except} is not inside cidr {cidr}; the ipBlock is ignored")]
    ExceptOutsideCidr { except: String, cidr: String },
    #[error("port {value} is out of range 1-65535")]
    PortOutOfRange { value: i64 },
    #[error("endPort {value} is out of range 1-65535")]
    EndPortOutOfRange { value: i64 },
    #[error("endPort {end} is smaller than port {port}")]
    EndPortBeforePort { port: u16, end: u16 },
    #[error("endPort needs a numeric port")]
    EndPortWithoutNumericPort,
    #[error(
        "invalid port name {name:?}: must be 1-15 lowercase letters, digits or '-', with a letter"
    )]
    InvalidPortName { name: String },
    #[error("unknown protocol {value:?}: must be TCP, UDP or SCTP")]
    UnknownProtocol { value: String },
    #[error("named port {name:?}/{protocol} resolves to no containerPort of any {side} pod")]
    NamedPortUnresolved {
        name: String,
        protocol: String,
        side: &'static str,
    },
    #[error("unknown selector operator {operator:?}: must be In, NotIn, Exists or DoesNotExist")]
    UnknownSelectorOperator { operator: String },
    #[error("operator {operator} needs a non-empty values list")]
    SelectorValuesRequired { operator: String },
    #[error("operator {operator} must not have values")]
    SelectorValuesForbidden { operator: String },
    #[error("a peer needs podSelector, namespaceSelector or ipBlock; this one matches nothing")]
    EmptyPeer,
    #[error(
        "ipBlock cannot be combined with podSelector or namespaceSelector; the peer is ignored"
    )]
    IpBlockWithSelectors,
    #[error("unknown policy type {value:?}: must be Ingress or Egress")]
    UnknownPolicyType { value: String },
    #[error("invalid podSelector: the policy isolates every pod of its namespace and allows only through its valid rules")]
    InvalidPodSelector,
    #[error("unknown tier {value:?}: must be Admin or Baseline; the policy applies to nothing")]
    UnknownTier { value: String },
    #[error("priority {value} is outside 0-1000 (used as written)")]
    PriorityOutOfRange { value: i64 },
    #[error("subject needs exactly one of namespaces and pods; the policy applies to nothing")]
    SubjectNotOneField,
    #[error("unknown action {value:?}: must be Accept, Deny or Pass; the rule denies everything")]
    UnknownAction { value: String },
    #[error("a rule needs at least one peer (fails closed)")]
    NoPeers,
    #[error("a peer needs exactly one field (fails closed)")]
    PeerNotOneField,
    #[error("nodes and networks peers are for egress rules only (fails closed)")]
    EgressOnlyPeer,
    #[error("domainNames peers are not implemented (fails closed)")]
    DomainNames,
    #[error("networks needs at least one CIDR (fails closed)")]
    NoNetworks,
    #[error("a protocols entry needs exactly one of tcp, udp, sctp and destinationNamedPort (fails closed)")]
    ProtocolNotOneField,
    #[error("destinationPort needs exactly one of number and range (fails closed)")]
    PortNotOneField,
}

/// Collects problems for one policy.
#[derive(Debug)]
pub struct Problems {
    policy: ObjectKey,
    pub list: Vec<PolicyProblem>,
}

impl Problems {
    pub fn new(policy: ObjectKey) -> Self {
        Self {
            policy,
            list: Vec::new(),
        }
    }

    pub fn error(&mut self, field: impl Into<String>, error: PolicyError) {
        self.push(field.into(), Severity::Error, &error);
    }

    pub fn warning(&mut self, field: impl Into<String>, error: PolicyError) {
        self.push(field.into(), Severity::Warning, &error);
    }

    fn push(&mut self, field: String, severity: Severity, error: &PolicyError) {
        self.list.push(PolicyProblem {
            policy: self.policy.clone(),
            field,
            severity,
            message: error.to_string(),
        });
    }
}
