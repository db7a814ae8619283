//! Validation of one NetworkPolicy into a form that is cheap to match. Problems are collected per
//! field; whatever is invalid is dropped in the direction that allows less (never fail open).
use ipnet::IpNet;

use super::problems::{PolicyError, Problems};
use super::selector::Selector;
use crate::model::{
    IntOrString, IpBlock, NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort, ObjectKey, Protocol,
};

use super::output::{Direction, PolicyProblem};

/// A validated policy.
#[derive(Debug, Clone)]
pub struct ParsedPolicy {
    pub key: ObjectKey,
    pub pod_selector: Selector,
    /// `None` when Ingress is not among the effective policyTypes.
    pub ingress: Option<Vec<ParsedRule>>,
    pub egress: Option<Vec<ParsedRule>>,
    pub problems: Vec<PolicyProblem>,
}

impl ParsedPolicy {
    pub fn rules(&self, direction: Direction) -> Option<&[ParsedRule]> {
        match direction {
            Direction::Ingress => self.ingress.as_deref(),
            Direction::Egress => self.egress.as_deref(),
        }
    }

    /// Every ipBlock prefix (cidr and except) of the policy.
    pub fn prefixes(&self) -> impl Iterator<Item = IpNet> + '_ {
        let rules = self.ingress.iter().chain(self.egress.iter()).flatten();
        rules
            .filter_map(|r| match &r.peers {
                Peers::Any => None,
                Peers::List(list) => Some(list),
            })
            .flatten()
            .filter_map(|p| match p {
                ParsedPeer::Block { cidr, except } => Some(std::iter::once(cidr).chain(except)),
                ParsedPeer::Select { .. } | ParsedPeer::Nodes(_) => None,
            })
            .flatten()
            .copied()
    }
}

/// One rule: "missing or empty from/to = all peers", "missing or empty ports = all ports".
#[derive(Debug, Clone)]
pub struct ParsedRule {
    pub peers: Peers,
    pub ports: Ports,
}

#[derive(Debug, Clone)]
pub enum Peers {
    Any,
    /// Possibly empty when every peer was invalid: then the rule matches nothing.
    List(Vec<ParsedPeer>),
}

#[derive(Debug, Clone)]
pub enum ParsedPeer {
    /// "podSelector alone = the policy's namespace; namespaceSelector alone = all pods of matching
    /// namespaces; both in one peer = AND".
    Select {
        namespace: NamespaceMatch,
        pods: Option<Selector>,
    },
    /// "ipBlock = CIDR minus except, and it matches pod IPs too".
    Block { cidr: IpNet, except: Vec<IpNet> },
    /// A ClusterNetworkPolicy `nodes` peer: the addresses of the nodes whose labels match (each
    /// a host prefix in the identity trie while some policy has such a peer).
    Nodes(Selector),
}

#[derive(Debug, Clone)]
pub enum NamespaceMatch {
    Own(String),
    Selector(Selector),
}

#[derive(Debug, Clone)]
pub enum Ports {
    All,
    /// Possibly empty when every entry was invalid: then the rule matches nothing.
    List(Vec<ParsedPort>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParsedPort {
    /// "a port entry with only a protocol = all ports of it".
    Protocol(Protocol),
    /// "endPort is an inclusive range"; a single port is `start == end`.
    Range {
        protocol: Protocol,
        start: u16,
        end: u16,
    },
    /// Resolved per destination pod on its containerPorts (name and protocol).
    Named {
        protocol: Protocol,
        name: String,
        field: String,
    },
}

/// Validates a policy. Never fails: problems are in the result.
pub fn parse_policy(policy: &NetworkPolicy) -> ParsedPolicy {
    let key = policy.key();
    let mut problems = Problems::new(key.clone());
    let spec = &policy.spec;
    let pod_selector = Selector::parse(&spec.pod_selector, "spec.podSelector", &mut problems)
        .unwrap_or_else(|| {
            // Fail closed: a policy whose selector we cannot evaluate isolates the whole namespace.
            problems.error("spec.podSelector", PolicyError::InvalidPodSelector);
            Selector::everything()
        });
    let (ingress_on, egress_on) = policy_types(policy, &mut problems);
    let ns = &policy.namespace;
    let ingress = ingress_on.then(|| {
        let rules = spec.ingress.iter().flatten().enumerate();
        rules
            .map(|(i, r)| {
                let field = format!("spec.ingress[{i}]");
                parse_rule(
                    ns,
                    r.from.as_deref(),
                    "from",
                    r.ports.as_deref(),
                    &field,
                    &mut problems,
                )
            })
            .collect()
    });
    let egress = egress_on.then(|| {
        let rules = spec.egress.iter().flatten().enumerate();
        rules
            .map(|(i, r)| {
                let field = format!("spec.egress[{i}]");
                parse_rule(
                    ns,
                    r.to.as_deref(),
                    "to",
                    r.ports.as_deref(),
                    &field,
                    &mut problems,
                )
            })
            .collect()
    });
    ParsedPolicy {
        key,
        pod_selector,
        ingress,
        egress,
        problems: problems.list,
    }
}

/// Effective policyTypes: "explicit list; else Ingress, plus Egress when egress has rules".
fn policy_types(policy: &NetworkPolicy, problems: &mut Problems) -> (bool, bool) {
    let spec = &policy.spec;
    match spec.policy_types.as_deref() {
        Some(types) if !types.is_empty() => {
            let (mut ingress, mut egress) = (false, false);
            for (i, t) in types.iter().enumerate() {
                match t.as_str() {
                    "Ingress" => ingress = true,
                    "Egress" => egress = true,
                    other => problems.error(
                        format!("spec.policyTypes[{i}]"),
                        PolicyError::UnknownPolicyType {
                            value: other.to_owned(),
                        },
                    ),
                }
            }
            if !ingress && !egress {
                // Only unknown types: isolate both ways rather than neither.
                return (true, true);
            }
            (ingress, egress)
        }
        _ => (true, spec.egress.as_ref().is_some_and(|e| !e.is_empty())),
    }
}

fn parse_rule(
    namespace: &str,
    peers: Option<&[NetworkPolicyPeer]>,
    peers_name: &str,
    ports: Option<&[NetworkPolicyPort]>,
    field: &str,
    problems: &mut Problems,
) -> ParsedRule {
    let peers = match peers {
        None | Some([]) => Peers::Any,
        Some(list) => Peers::List(
            list.iter()
                .enumerate()
                .filter_map(|(i, p)| {
                    parse_peer(
                        namespace,
                        p,
                        &format!("{field}.{peers_name}[{i}]"),
                        problems,
                    )
                })
                .collect(),
        ),
    };
    let ports = match ports {
        None | Some([]) => Ports::All,
        Some(list) => Ports::List(
            list.iter()
                .enumerate()
                .filter_map(|(i, p)| parse_port(p, &format!("{field}.ports[{i}]"), problems))
                .collect(),
        ),
    };
    ParsedRule { peers, ports }
}

fn parse_peer(
    namespace: &str,
    peer: &NetworkPolicyPeer,
    field: &str,
    problems: &mut Problems,
) -> Option<ParsedPeer> {
    match (&peer.pod_selector, &peer.namespace_selector, &peer.ip_block) {
        (None, None, None) => {
            problems.error(field, PolicyError::EmptyPeer);
            None
        }
        (None, None, Some(block)) => parse_block(block, &format!("{field}.ipBlock"), problems),
        (_, _, Some(_)) => {
            problems.error(field, PolicyError::IpBlockWithSelectors);
            None
        }
        (pods, namespaces, None) => {
            let pods = match pods {
                Some(sel) => Some(Selector::parse(
                    sel,
                    &format!("{field}.podSelector"),
                    problems,
                )?),
                None => None,
            };
            let namespace = match namespaces {
                Some(sel) => NamespaceMatch::Selector(Selector::parse(
                    sel,
                    &format!("{field}.namespaceSelector"),
                    problems,
                )?),
                None => NamespaceMatch::Own(namespace.to_owned()),
            };
            Some(ParsedPeer::Select { namespace, pods })
        }
    }
}

pub(super) fn parse_cidr(text: &str, field: &str, problems: &mut Problems) -> Option<IpNet> {
    match text.trim().parse::<IpNet>() {
        // Host bits set (`10.1.2.3/4`) were accepted by older API servers; use the network.
        Ok(net) => Some(net.trunc()),
        Err(err) => {
            problems.error(
                field,
                PolicyError::InvalidCidr {
                    value: text.to_owned(),
                    reason: err.to_string(),
                },
            );
            None
        }
    }
}

fn parse_block(block: &IpBlock, field: &str, problems: &mut Problems) -> Option<ParsedPeer> {
    let cidr = parse_cidr(&block.cidr, &format!("{field}.cidr"), problems)?;
    let mut except = Vec::new();
    let mut ok = true;
    for (i, text) in block.except.iter().flatten().enumerate() {
        let field = format!("{field}.except[{i}]");
        match parse_cidr(text, &field, problems) {
            Some(net) if cidr.contains(&net) => except.push(net),
            Some(_) => {
                let error = PolicyError::ExceptOutsideCidr {
                    except: text.clone(),
                    cidr: block.cidr.clone(),
                };
                problems.error(field, error);
                ok = false;
            }
            None => ok = false,
        }
    }
    // A dropped except would widen the block: drop the whole peer instead.
    ok.then_some(ParsedPeer::Block { cidr, except })
}

fn parse_port(
    port: &NetworkPolicyPort,
    field: &str,
    problems: &mut Problems,
) -> Option<ParsedPort> {
    // "protocol defaults to TCP".
    let protocol = match port.protocol.as_deref() {
        None => Protocol::Tcp,
        Some(text) => match Protocol::parse(text) {
            Some(p) => p,
            None => {
                let value = text.to_owned();
                problems.error(
                    format!("{field}.protocol"),
                    PolicyError::UnknownProtocol { value },
                );
                return None;
            }
        },
    };
    let number = |value: i64, end: bool, problems: &mut Problems| match u16::try_from(value) {
        Ok(n) if n > 0 => Some(n),
        _ if end => {
            problems.error(
                format!("{field}.endPort"),
                PolicyError::EndPortOutOfRange { value },
            );
            None
        }
        _ => {
            problems.error(
                format!("{field}.port"),
                PolicyError::PortOutOfRange { value },
            );
            None
        }
    };
    match (&port.port, port.end_port) {
        (None, None) => Some(ParsedPort::Protocol(protocol)),
        (Some(IntOrString::Int(n)), end) => {
            let start = number(*n, false, problems)?;
            let end = match end {
                None => start,
                Some(e) => number(e, true, problems)?,
            };
            if end < start {
                let error = PolicyError::EndPortBeforePort { port: start, end };
                problems.error(format!("{field}.endPort"), error);
                return None;
            }
            Some(ParsedPort::Range {
                protocol,
                start,
                end,
            })
        }
        (Some(IntOrString::String(name)), None) => {
            if !valid_port_name(name) {
                let error = PolicyError::InvalidPortName { name: name.clone() };
                problems.error(format!("{field}.port"), error);
                return None;
            }
            Some(ParsedPort::Named {
                protocol,
                name: name.clone(),
                field: format!("{field}.port"),
            })
        }
        (_, Some(_)) => {
            problems.error(
                format!("{field}.endPort"),
                PolicyError::EndPortWithoutNumericPort,
            );
            None
        }
    }
}

/// IANA service name rules, as the API validates containerPort and NetworkPolicyPort names.
pub(super) fn valid_port_name(name: &str) -> bool {
    let chars_ok = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    (1..=15).contains(&name.len())
        && chars_ok
        && name.chars().any(|c| c.is_ascii_lowercase())
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--")
}
