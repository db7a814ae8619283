//! Validation of one ClusterNetworkPolicy into the compiler's rule form: peers and ports become a
//! [`ParsedRule`] (the same form NetworkPolicy rules take, so identities, entries and named ports
//! are computed by the same code), plus the tier, priority, subject and each rule's action.
//!
//! Fail closed as the API asks: "For "Accept" rules, "fail closed" means: "treat the rule as
//! matching no traffic". For "Deny" and "Pass" rules, "fail closed" means: "treat the rule as a
//! 'Deny all' rule"."
use std::net::IpAddr;

use ipnet::IpNet;

use super::parse::{
    parse_cidr, valid_port_name, NamespaceMatch, ParsedPeer, ParsedPort, ParsedRule, Peers, Ports,
};
use super::problems::{PolicyError, Problems};
use super::selector::Selector;
use crate::model::{
    ClusterNetworkPolicy, ClusterPolicyPeer, ClusterPolicyProtocol, ClusterRuleView, Labels,
    NamespacedPod, ObjectKey, Protocol,
};

use super::output::{Direction, PolicyProblem, Tier};

/// A rule's action as the compiler uses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClusterAction {
    /// "Accepts the selected traffic ... No further ... rules will be processed."
    Accept,
    /// "Drops the selected traffic."
    Deny,
    /// "Skips all further ClusterNetworkPolicy rules in the current tier for the selected
    /// traffic, and passes evaluation to the next tier."
    Pass,
}

/// The subject: "Exactly one field must be set."
#[derive(Debug, Clone)]
pub enum Subject {
    Namespaces(Selector),
    Pods {
        namespaces: Selector,
        pods: Selector,
    },
}

impl Subject {
    pub fn matches(&self, namespace_labels: &Labels, pod_labels: &Labels) -> bool {
        match self {
            Self::Namespaces(ns) => ns.matches(namespace_labels),
            Self::Pods { namespaces, pods } => {
                namespaces.matches(namespace_labels) && pods.matches(pod_labels)
            }
        }
    }
}

/// One validated rule.
#[derive(Debug, Clone)]
pub struct ClusterRule {
    pub action: ClusterAction,
    pub name: Option<String>,
    pub rule: ParsedRule,
}

/// A validated ClusterNetworkPolicy. `tier` or `subject` `None` = the policy applies to nothing
/// (reported).
#[derive(Debug, Clone)]
pub struct ParsedCluster {
    pub key: ObjectKey,
    pub tier: Option<Tier>,
    pub priority: i64,
    pub subject: Option<Subject>,
    pub ingress: Vec<ClusterRule>,
    pub egress: Vec<ClusterRule>,
    pub problems: Vec<PolicyProblem>,
}

impl ParsedCluster {
    pub fn rules(&self, direction: Direction) -> &[ClusterRule] {
        match direction {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }

    /// Every `networks` prefix.
    pub fn prefixes(&self) -> impl Iterator<Item = IpNet> + '_ {
        self.all_peers().filter_map(|p| match p {
            ParsedPeer::Block { cidr, .. } => Some(*cidr),
            _ => None,
        })
    }

    /// Whether a rule has a `nodes` peer (node addresses must then be in the identity trie).
    pub fn has_nodes(&self) -> bool {
        self.all_peers().any(|p| matches!(p, ParsedPeer::Nodes(_)))
    }

    fn all_peers(&self) -> impl Iterator<Item = &ParsedPeer> + '_ {
        let rules = self.ingress.iter().chain(&self.egress);
        rules
            .filter_map(|r| match &r.rule.peers {
                Peers::Any => None,
                Peers::List(list) => Some(list),
            })
            .flatten()
    }
}

/// The key a ClusterNetworkPolicy goes by in rule references and problems: cluster-scoped, so
/// the namespace is empty (no namespaced object has an empty namespace).
pub fn cluster_key(name: &str) -> ObjectKey {
    ObjectKey::new("", name)
}

/// Validates a ClusterNetworkPolicy. Never fails: problems are in the result.
pub fn parse_cluster(policy: &ClusterNetworkPolicy) -> ParsedCluster {
    let key = cluster_key(&policy.name);
    let mut problems = Problems::new(key.clone());
    let spec = &policy.spec;
    let tier = match spec.tier.as_str() {
        "Admin" => Some(Tier::Admin),
        "Baseline" => Some(Tier::Baseline),
        other => {
            let value = other.to_owned();
            problems.error("spec.tier", PolicyError::UnknownTier { value });
            None
        }
    };
    if !(0..=1000).contains(&spec.priority) {
        let value = spec.priority;
        problems.warning("spec.priority", PolicyError::PriorityOutOfRange { value });
    }
    let subject = parse_subject(policy, &mut problems);
    let mut rules = |egress: bool| -> Vec<ClusterRule> {
        let dir = if egress { "egress" } else { "ingress" };
        let list = policy.rules(egress);
        list.iter()
            .enumerate()
            .map(|(i, r)| parse_rule(r, &format!("spec.{dir}[{i}]"), &mut problems))
            .collect()
    };
    let ingress = rules(false);
    let egress = rules(true);
    ParsedCluster {
        key,
        tier,
        priority: spec.priority,
        subject,
        ingress,
        egress,
        problems: problems.list,
    }
}

fn parse_subject(policy: &ClusterNetworkPolicy, problems: &mut Problems) -> Option<Subject> {
    let subject = &policy.spec.subject;
    match (&subject.namespaces, &subject.pods) {
        (Some(ns), None) => {
            Selector::parse(ns, "spec.subject.namespaces", problems).map(Subject::Namespaces)
        }
        (None, Some(pods)) => {
            let (namespaces, pods) = namespaced_pod(pods, "spec.subject.pods", problems)?;
            Some(Subject::Pods { namespaces, pods })
        }
        _ => {
            problems.error("spec.subject", PolicyError::SubjectNotOneField);
            None
        }
    }
}

fn namespaced_pod(
    sel: &NamespacedPod,
    field: &str,
    problems: &mut Problems,
) -> Option<(Selector, Selector)> {
    let ns_field = format!("{field}.namespaceSelector");
    let namespaces = Selector::parse(&sel.namespace_selector, &ns_field, problems);
    let pod_field = format!("{field}.podSelector");
    let pods = Selector::parse(&sel.pod_selector, &pod_field, problems);
    Some((namespaces?, pods?))
}

/// The whole rule becomes "Deny all": any peer, all protocols and ports.
fn deny_all(name: Option<String>) -> ClusterRule {
    ClusterRule {
        action: ClusterAction::Deny,
        name,
        rule: ParsedRule {
            peers: Peers::Any,
            ports: Ports::All,
        },
    }
}

fn parse_rule(rule: &ClusterRuleView<'_>, field: &str, problems: &mut Problems) -> ClusterRule {
    let name = rule.name.map(str::to_owned);
    let action = match rule.action {
        "Accept" => ClusterAction::Accept,
        "Deny" => ClusterAction::Deny,
        "Pass" => ClusterAction::Pass,
        other => {
            let value = other.to_owned();
            problems.error(
                format!("{field}.action"),
                PolicyError::UnknownAction { value },
            );
            return deny_all(name);
        }
    };
    let before = problems.list.len();
    let peers_name = if rule.egress { "to" } else { "from" };
    let peers = rule.peers.unwrap_or_default();
    if peers.is_empty() {
        let field = format!("{field}.{peers_name}");
        problems.error(field, PolicyError::NoPeers);
    }
    let peers: Vec<ParsedPeer> = peers
        .iter()
        .enumerate()
        .filter_map(|(i, p)| {
            let field = format!("{field}.{peers_name}[{i}]");
            parse_peer(p, rule.egress, &field, problems)
        })
        .flatten()
        .collect();
    let ports = match rule.protocols {
        None | Some([]) => Ports::All,
        Some(list) => Ports::List(
            list.iter()
                .enumerate()
                .filter_map(|(i, p)| {
                    parse_protocol(p, &format!("{field}.protocols[{i}]"), problems)
                })
                .flatten()
                .collect(),
        ),
    };
    let invalid = problems.list.len() > before;
    if invalid && action != ClusterAction::Accept {
        return deny_all(name);
    }
    ClusterRule {
        action,
        name,
        rule: ParsedRule {
            peers: Peers::List(peers),
            ports,
        },
    }
}

/// One peer: "Exactly one of the fields must be set". `None` (reported) when unreadable.
fn parse_peer(
    peer: &ClusterPolicyPeer,
    egress: bool,
    field: &str,
    problems: &mut Problems,
) -> Option<Vec<ParsedPeer>> {
    let set = [
        peer.namespaces.is_some(),
        peer.pods.is_some(),
        peer.nodes.is_some(),
        peer.networks.is_some(),
        peer.domain_names.is_some(),
    ];
    if set.iter().filter(|s| **s).count() != 1 {
        problems.error(field, PolicyError::PeerNotOneField);
        return None;
    }
    if !egress && (peer.nodes.is_some() || peer.networks.is_some()) {
        problems.error(field, PolicyError::EgressOnlyPeer);
        return None;
    }
    if peer.domain_names.is_some() {
        problems.error(format!("{field}.domainNames"), PolicyError::DomainNames);
        return None;
    }
    if let Some(ns) = &peer.namespaces {
        // "Namespaces defines a way to select all pods within a set of Namespaces."
        let sel = Selector::parse(ns, &format!("{field}.namespaces"), problems)?;
        return Some(vec![ParsedPeer::Select {
            namespace: NamespaceMatch::Selector(sel),
            pods: None,
        }]);
    }
    if let Some(pods) = &peer.pods {
        let (namespaces, pods) = namespaced_pod(pods, &format!("{field}.pods"), problems)?;
        return Some(vec![ParsedPeer::Select {
            namespace: NamespaceMatch::Selector(namespaces),
            pods: Some(pods),
        }]);
    }
    if let Some(nodes) = &peer.nodes {
        let sel = Selector::parse(nodes, &format!("{field}.nodes"), problems)?;
        return Some(vec![ParsedPeer::Nodes(sel)]);
    }
    let networks = peer.networks.as_deref().unwrap_or_default();
    if networks.is_empty() {
        problems.error(format!("{field}.networks"), PolicyError::NoNetworks);
        return None;
    }
    let mut out = Vec::new();
    for (i, text) in networks.iter().enumerate() {
        let cidr = parse_cidr(text, &format!("{field}.networks[{i}]"), problems)?;
        out.push(ParsedPeer::Block {
            cidr,
            except: Vec::new(),
        });
    }
    Some(out)
}

/// One `protocols` entry: "Exactly one field must be set." A `destinationNamedPort` resolves on
/// the destination pod's container port of that name, whatever its protocol.
fn parse_protocol(
    entry: &ClusterPolicyProtocol,
    field: &str,
    problems: &mut Problems,
) -> Option<Vec<ParsedPort>> {
    let fields = [
        entry.tcp.as_ref().map(|m| (Protocol::Tcp, "tcp", m)),
        entry.udp.as_ref().map(|m| (Protocol::Udp, "udp", m)),
        entry.sctp.as_ref().map(|m| (Protocol::Sctp, "sctp", m)),
    ];
    let set: Vec<_> = fields.into_iter().flatten().collect();
    match (set.as_slice(), &entry.destination_named_port) {
        ([(protocol, name, m)], None) => {
            let Some(port) = &m.destination_port else {
                return Some(vec![ParsedPort::Protocol(*protocol)]);
            };
            let field = format!("{field}.{name}.destinationPort");
            let (start, end) = port_range(port.number, port.range.as_ref(), &field, problems)?;
            Some(vec![ParsedPort::Range {
                protocol: *protocol,
                start,
                end,
            }])
        }
        ([], Some(name)) => {
            let field = format!("{field}.destinationNamedPort");
            if !valid_port_name(name) {
                let error = PolicyError::InvalidPortName { name: name.clone() };
                problems.error(field, error);
                return None;
            }
            let named = Protocol::ALL.map(|protocol| ParsedPort::Named {
                protocol,
                name: name.clone(),
                field: field.clone(),
            });
            Some(named.to_vec())
        }
        _ => {
            problems.error(field, PolicyError::ProtocolNotOneField);
            None
        }
    }
}

/// "You must specify either Port or Range"; ports 1-65535, a range inclusive.
fn port_range(
    number: Option<i64>,
    range: Option<&crate::model::ClusterPortRange>,
    field: &str,
    problems: &mut Problems,
) -> Option<(u16, u16)> {
    let port = |value: i64, field: String, problems: &mut Problems| match u16::try_from(value) {
        Ok(n) if n > 0 => Some(n),
        _ => {
            problems.error(field, PolicyError::PortOutOfRange { value });
            None
        }
    };
    match (number, range) {
        (Some(n), None) => {
            let n = port(n, format!("{field}.number"), problems)?;
            Some((n, n))
        }
        (None, Some(r)) => {
            let start = port(r.start, format!("{field}.range.start"), problems)?;
            let end = port(r.end, format!("{field}.range.end"), problems)?;
            if end < start {
                let error = PolicyError::EndPortBeforePort { port: start, end };
                problems.error(format!("{field}.range.end"), error);
                return None;
            }
            Some((start, end))
        }
        _ => {
            problems.error(field, PolicyError::PortNotOneField);
            None
        }
    }
}

/// Host prefixes of every node address: the trie entries `nodes` peers match.
pub fn node_prefixes<'a>(addresses: impl Iterator<Item = &'a IpAddr>) -> Vec<IpNet> {
    addresses.map(|a| IpNet::from(*a)).collect()
}
