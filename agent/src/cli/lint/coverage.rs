//! Coverage: which pods no policy isolates, per namespace and direction, and egress-isolated pods
//! that cannot reach DNS.

use std::collections::BTreeMap;

use super::{
    cluster_select::{subject_pods, tier},
    select::{has_type, selects, side_allows, Dir},
    Finding, Severity,
};
use crate::model::{LabelSelector, Model, Pod, Protocol};

/// Pods policy applies to (hostNetwork pods are not endpoints).
fn endpoints(model: &Model) -> impl Iterator<Item = &Pod> {
    model.pods.values().filter(|p| !p.host_network)
}

/// Isolated by NetworkPolicy, or under a ClusterNetworkPolicy default deny for `dir`.
fn isolated(model: &Model, pod: &Pod, dir: Dir) -> bool {
    model
        .policies
        .values()
        .any(|p| selects(p, pod) && has_type(p, dir))
        || cluster_default_deny(model, pod, dir)
}

/// A ClusterNetworkPolicy (either tier) that applies to `pod` with a Deny rule for `dir` on
/// every port from or to every namespace (`namespaces: {}`): the pod is locked down for that
/// direction as a NetworkPolicy default deny would.
fn cluster_default_deny(model: &Model, pod: &Pod, dir: Dir) -> bool {
    let egress = dir == Dir::Egress;
    let every_namespace = |sel: &LabelSelector| {
        sel.match_labels.as_ref().is_none_or(|m| m.is_empty())
            && sel.match_expressions.as_ref().is_none_or(|e| e.is_empty())
    };
    model
        .cluster_policies
        .values()
        .filter(|p| tier(p).is_some())
        .filter(|p| subject_pods(model, p).iter().any(|s| s.key() == pod.key()))
        .flat_map(|p| p.rules(egress))
        .any(|r| {
            r.action == "Deny"
                && r.protocols.is_none_or(|l| l.is_empty())
                && r.peers
                    .into_iter()
                    .flatten()
                    .any(|peer| peer.namespaces.as_ref().is_some_and(every_namespace))
        })
}

fn names(pods: &[&Pod]) -> String {
    let mut list: Vec<&str> = pods.iter().take(5).map(|p| p.name.as_str()).collect();
    if pods.len() > 5 {
        list.push("...");
    }
    list.join(", ")
}

/// `unisolated-ingress` / `unisolated-egress` (warnings) and `isolation-coverage` (info), per
/// namespace that has pods.
pub fn isolation(model: &Model, out: &mut Vec<Finding>) {
    let mut by_ns: BTreeMap<&str, Vec<&Pod>> = BTreeMap::new();
    for pod in endpoints(model) {
        by_ns.entry(pod.namespace.as_str()).or_default().push(pod);
    }
    for (ns, pods) in by_ns {
        let mut coverage = Vec::new();
        for dir in [Dir::Ingress, Dir::Egress] {
            let open: Vec<&Pod> = pods
                .iter()
                .copied()
                .filter(|p| !isolated(model, p, dir))
                .collect();
            let done = pods.len() - open.len();
            coverage.push(format!("{} {done}/{}", dir.name(), pods.len()));
            if open.is_empty() {
                continue;
            }
            let (code, kind) = match dir {
                Dir::Ingress => ("unisolated-ingress", "Ingress"),
                Dir::Egress => ("unisolated-egress", "Egress"),
            };
            let verb = match dir {
                Dir::Ingress => "accept connections from anywhere",
                Dir::Egress => "may connect anywhere",
            };
            out.push(
                Finding::new(code, Severity::Warning, ns, format!("Namespace/{ns}")).says(
                    format!(
                        "{} of {} pods are not isolated for {} and {verb}: {}",
                        open.len(),
                        pods.len(),
                        dir.name(),
                        names(&open)
                    ),
                    format!(
                        "add a default-deny policy to namespace {ns} (podSelector: {{}}, policyTypes: [{kind}]) and allow what is needed"
                    ),
                ),
            );
        }
        out.push(
            Finding::new(
                "isolation-coverage",
                Severity::Info,
                ns,
                format!("Namespace/{ns}"),
            )
            .says(format!("isolated pods: {}", coverage.join(", ")), ""),
        );
    }
}

/// DNS servers: pods labelled `k8s-app=kube-dns`, or selected by a Service named `kube-dns`.
fn dns_servers(model: &Model) -> Vec<&Pod> {
    let selected = |pod: &Pod| {
        model.services.values().any(|s| {
            s.name == "kube-dns"
                && s.namespace == pod.namespace
                && s.selector.as_ref().is_some_and(|sel| {
                    !sel.is_empty() && sel.iter().all(|(k, v)| pod.labels.get(k) == Some(v))
                })
        })
    };
    endpoints(model)
        .filter(|p| p.labels.get("k8s-app").is_some_and(|v| v == "kube-dns") || selected(p))
        .collect()
}

/// Whether `pod` can reach `server` on UDP 53: its egress and the server's ingress.
fn reaches(model: &Model, pod: &Pod, server: &Pod) -> bool {
    let target = (Protocol::Udp, 53);
    side_allows(model, pod, Dir::Egress, server, server, target) != Some(false)
        && side_allows(model, server, Dir::Ingress, pod, server, target) != Some(false)
}

/// Whether some egress rule of a policy isolating `pod` allows UDP 53 at all (when the model has
/// no DNS server to check against, e.g. an ipBlock to an outside resolver).
fn allows_port_53(model: &Model, pod: &Pod) -> bool {
    model
        .policies
        .values()
        .filter(|p| selects(p, pod) && has_type(p, Dir::Egress))
        .flat_map(|p| p.spec.egress.iter().flatten())
        .any(|r| {
            r.ports.as_ref().is_none_or(|ports| {
                ports.is_empty()
                    || ports.iter().any(|e| {
                        let udp = e.protocol.as_deref().unwrap_or("TCP") == "UDP";
                        let port = match &e.port {
                            None => true,
                            Some(crate::model::IntOrString::Int(n)) => {
                                (*n..=e.end_port.unwrap_or(*n)).contains(&53)
                            }
                            Some(crate::model::IntOrString::String(n)) => n == "dns",
                        };
                        udp && port
                    })
            })
        })
}

/// `egress-without-dns` (error): an egress-isolated pod that cannot reach any DNS server.
pub fn dns(model: &Model, out: &mut Vec<Finding>) {
    let servers = dns_servers(model);
    for pod in endpoints(model).filter(|p| isolated(model, p, Dir::Egress)) {
        if servers
            .iter()
            .any(|s| s.namespace == pod.namespace && s.name == pod.name)
        {
            continue;
        }
        let ok = if servers.is_empty() {
            allows_port_53(model, pod)
        } else {
            servers.iter().any(|s| reaches(model, pod, s))
        };
        if ok {
            continue;
        }
        let target = if servers.is_empty() {
            "any address on UDP 53".to_owned()
        } else {
            let list: Vec<String> = servers.iter().map(|s| s.key().to_string()).collect();
            format!("the DNS server ({}) on UDP 53", list.join(", "))
        };
        out.push(
            Finding::new(
                "egress-without-dns",
                Severity::Error,
                &pod.namespace,
                format!("Pod/{}", pod.name),
            )
            .says(
                format!("pod is isolated for egress and cannot reach {target}: name lookups fail"),
                "allow egress to the DNS pods, e.g. to: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: kube-system}}, podSelector: {matchLabels: {k8s-app: kube-dns}}}] ports: [{port: 53, protocol: UDP}, {port: 53, protocol: TCP}] (and the DNS pods' ingress from this namespace)",
            ),
        );
    }
}
