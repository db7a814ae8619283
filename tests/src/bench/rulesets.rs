//! One set of ingress rules for the server pods, written three ways: NetworkPolicies for
//! Palisade, an iptables + ipset ruleset built the way kube-router builds its (a chain per pod,
//! a chain per policy, an ipset per rule's peers, mark-and-return matching, REJECT at the end),
//! and an nftables ruleset built the way kube-network-policies builds its table (an inet table
//! hooked at postrouting, `podips` sets, established flows accepted first), with the verdict
//! decided in the kernel through a verdict map to a per-pod chain and a concatenated
//! `peer . protocol . port` set instead of kube-network-policies' NFQUEUE to user space.
//! Rulesets are loaded in a node's namespace and removed again by name.

use std::{fmt::Write as _, net::Ipv4Addr};

use serde_json::{json, Value};

use crate::{exec, netns};

/// Rules per NetworkPolicy (and per kube-router policy chain).
pub const RULES_PER_POLICY: usize = 100;
/// The nftables table's name.
pub const NFT_TABLE: &str = "pal-bench-knp";

/// Why a ruleset could not be loaded or removed.
#[derive(Debug, thiserror::Error)]
pub enum RulesetError {
    #[error(transparent)]
    Netns(#[from] netns::NetnsError),
    #[error(transparent)]
    Exec(#[from] exec::ExecError),
}

/// One allow rule: TCP from `peer`/`prefix` to `ports` of the server pods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub peer: Ipv4Addr,
    pub prefix: u8,
    pub ports: Vec<u16>,
}

/// `rules` rules: `rules - 1` from addresses that never send (172.16.0.0/12, one port each),
/// and, last, the client's address on `client_ports`. The rule that matches the measured traffic
/// is the last one evaluated by the linear methods (their worst case, and their usual case for
/// any rule past the first few).
pub fn rule_set(rules: usize, client: Ipv4Addr, client_ports: &[u16]) -> Vec<Rule> {
    let mut out: Vec<Rule> = (0..rules.saturating_sub(1))
        .map(|i| {
            let n = u32::try_from(i).unwrap_or(0);
            Rule {
                peer: Ipv4Addr::from(u32::from(Ipv4Addr::new(172, 16, 0, 1)) + n),
                prefix: 32,
                ports: vec![10_000 + u16::try_from(i % 1000).unwrap_or(0)],
            }
        })
        .collect();
    out.push(Rule {
        peer: client,
        prefix: 32,
        ports: client_ports.to_vec(),
    });
    out
}

/// The rules as NetworkPolicies in namespace `ns` selecting `app=<app>`, `RULES_PER_POLICY`
/// rules each: `(name, object)`.
pub fn policies(rules: &[Rule], ns: &str, app: &str) -> Vec<(String, Value)> {
    rules
        .chunks(RULES_PER_POLICY)
        .enumerate()
        .map(|(j, chunk)| {
            let ingress: Vec<Value> = chunk
                .iter()
                .map(|r| {
                    let ports: Vec<Value> =
                        r.ports.iter().map(|p| json!({"protocol":"TCP","port":p})).collect();
                    json!({"from":[{"ipBlock":{"cidr":format!("{}/{}", r.peer, r.prefix)}}],"ports":ports})
                })
                .collect();
            let name = format!("bench-{j}");
            let obj = json!({"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy",
                "metadata":{"namespace":ns,"name":name},
                "spec":{"podSelector":{"matchLabels":{"app":app}},"policyTypes":["Ingress"],"ingress":ingress}});
            (name, obj)
        })
        .collect()
}

/// kube-router's ruleset for the server pods local to one node: `(ipset restore, iptables
/// restore)` scripts.
pub fn kube_router(rules: &[Rule], local_pods: &[Ipv4Addr]) -> (String, String) {
    let mut sets = String::new();
    let mut ipt = String::from("*filter\n:KUBE-ROUTER-FORWARD - [0:0]\n");
    let policies: Vec<&[Rule]> = rules.chunks(RULES_PER_POLICY).collect();
    for j in 0..policies.len() {
        let _ = writeln!(ipt, ":KUBE-NWPLCY-{j} - [0:0]");
        let _ = writeln!(sets, "create KUBE-DST-{j} hash:ip family inet");
        for pod in local_pods {
            let _ = writeln!(sets, "add KUBE-DST-{j} {pod}");
        }
    }
    for (p, _) in local_pods.iter().enumerate() {
        let _ = writeln!(ipt, ":KUBE-POD-FW-{p} - [0:0]");
    }
    ipt.push_str(
        "-I FORWARD 1 -m comment --comment \"kube-router netpol\" -j KUBE-ROUTER-FORWARD\n",
    );
    for (p, pod) in local_pods.iter().enumerate() {
        let _ = writeln!(
            ipt,
            "-A KUBE-ROUTER-FORWARD -d {pod}/32 -m comment --comment \"rule to jump traffic destined to POD to chain KUBE-POD-FW-{p}\" -j KUBE-POD-FW-{p}\n\
             -A KUBE-ROUTER-FORWARD -d {pod}/32 -m physdev --physdev-is-bridged -j KUBE-POD-FW-{p}\n\
             -A KUBE-POD-FW-{p} -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment \"rule for stateful firewall for pod\" -j ACCEPT\n\
             -A KUBE-POD-FW-{p} -m conntrack --ctstate INVALID -j DROP\n\
             -A KUBE-POD-FW-{p} -d {pod}/32 -m addrtype --src-type LOCAL -m comment --comment \"rule to permit the traffic to pods when source is the pod's local node\" -j ACCEPT"
        );
        for j in 0..policies.len() {
            let _ = writeln!(ipt, "-A KUBE-POD-FW-{p} -d {pod}/32 -j KUBE-NWPLCY-{j}");
        }
        let _ = writeln!(
            ipt,
            "-A KUBE-POD-FW-{p} -m mark ! --mark 0x10000/0x10000 -m comment --comment \"rule to REJECT traffic destined for POD\" -j REJECT --reject-with icmp-port-unreachable\n\
             -A KUBE-POD-FW-{p} -j MARK --set-xmark 0x0/0x10000\n\
             -A KUBE-POD-FW-{p} -j MARK --set-xmark 0x20000/0x20000"
        );
    }
    ipt.push_str("-A KUBE-ROUTER-FORWARD -m mark --mark 0x20000/0x20000 -j ACCEPT\n");
    let mut r = 0;
    for (j, chunk) in policies.iter().enumerate() {
        for rule in *chunk {
            let _ = writeln!(sets, "create KUBE-SRC-{r} hash:net family inet");
            let _ = writeln!(sets, "add KUBE-SRC-{r} {}/{}", rule.peer, rule.prefix);
            for port in &rule.ports {
                let m = format!("-m set --match-set KUBE-SRC-{r} src -m set --match-set KUBE-DST-{j} dst -p tcp -m tcp --dport {port}");
                let _ = writeln!(
                    ipt,
                    "-A KUBE-NWPLCY-{j} {m} -j MARK --set-xmark 0x10000/0x10000\n\
                     -A KUBE-NWPLCY-{j} {m} -m mark --mark 0x10000/0x10000 -j RETURN"
                );
            }
            r += 1;
        }
    }
    ipt.push_str("COMMIT\n");
    (sets, ipt)
}

/// Removes what [`kube_router`] loaded: `(iptables restore, ipset restore)` scripts.
fn kube_router_removal(rules: usize, local_pods: usize) -> (String, String) {
    let policies = rules.div_ceil(RULES_PER_POLICY);
    let mut chains = vec!["KUBE-ROUTER-FORWARD".to_owned()];
    chains.extend((0..local_pods).map(|p| format!("KUBE-POD-FW-{p}")));
    chains.extend((0..policies).map(|j| format!("KUBE-NWPLCY-{j}")));
    let mut ipt = String::from(
        "*filter\n-D FORWARD -m comment --comment \"kube-router netpol\" -j KUBE-ROUTER-FORWARD\n",
    );
    for c in &chains {
        let _ = writeln!(ipt, ":{c} - [0:0]");
    }
    for c in &chains {
        let _ = writeln!(ipt, "-X {c}");
    }
    ipt.push_str("COMMIT\n");
    let mut sets = String::new();
    for r in 0..rules {
        let _ = writeln!(sets, "destroy KUBE-SRC-{r}");
    }
    for j in 0..policies {
        let _ = writeln!(sets, "destroy KUBE-DST-{j}");
    }
    (ipt, sets)
}

/// The nftables ruleset for the server pods local to one node (an `nft -f` script).
/// `node_ips` are the node's own addresses (traffic from the pod's node is allowed).
pub fn knp_nft(rules: &[Rule], local_pods: &[Ipv4Addr], node_ips: &[Ipv4Addr]) -> String {
    let nodes: Vec<String> = node_ips.iter().map(ToString::to_string).collect();
    let mut t = format!(
        "table inet {NFT_TABLE} {{\n  set node-v4 {{\n    type ipv4_addr\n    elements = {{ {} }}\n  }}\n  set podips-v4 {{\n    type ipv4_addr\n",
        nodes.join(", ")
    );
    let ips: Vec<String> = local_pods.iter().map(ToString::to_string).collect();
    if !ips.is_empty() {
        let _ = writeln!(t, "    elements = {{ {} }}", ips.join(", "));
    }
    t.push_str("  }\n  map ingress-v4 {\n    type ipv4_addr : verdict\n");
    let jumps: Vec<String> = local_pods
        .iter()
        .enumerate()
        .map(|(p, ip)| format!("{ip} : jump pod-{p}-ingress"))
        .collect();
    if !jumps.is_empty() {
        let _ = writeln!(t, "    elements = {{ {} }}", jumps.join(", "));
    }
    t.push_str("  }\n");
    let elements: Vec<String> = rules
        .iter()
        .flat_map(|r| {
            r.ports
                .iter()
                .map(move |p| format!("{}/{} . tcp . {p}", r.peer, r.prefix))
        })
        .collect();
    for (p, _) in local_pods.iter().enumerate() {
        let _ = writeln!(
            t,
            "  set pod-{p}-allow-v4 {{\n    type ipv4_addr . inet_proto . inet_service\n    flags interval\n    elements = {{ {} }}\n  }}\n\
             \x20 chain pod-{p}-ingress {{\n    ip saddr . meta l4proto . th dport @pod-{p}-allow-v4 accept\n    ip saddr @node-v4 accept\n    drop\n  }}",
            elements.join(", ")
        );
    }
    t.push_str(
        "  chain postrouting {\n    type filter hook postrouting priority srcnat - 5; policy accept;\n    ct state established,related accept\n    ip daddr @podips-v4 ip daddr vmap @ingress-v4\n  }\n}\n",
    );
    t
}

fn run_in(node_ns: &str, program: &str, args: &[&str], input: &str) -> Result<(), RulesetError> {
    let mut cmd = netns::command_in(node_ns, program)?;
    cmd.args(args);
    exec::run_with_input(&mut cmd, input.as_bytes())?;
    Ok(())
}

/// Loads the kube-router ruleset into node namespace `node_ns`.
pub fn load_kube_router(
    node_ns: &str,
    rules: &[Rule],
    local_pods: &[Ipv4Addr],
) -> Result<(), RulesetError> {
    let (sets, ipt) = kube_router(rules, local_pods);
    run_in(node_ns, "ipset", &["restore"], &sets)?;
    run_in(node_ns, "iptables-restore", &["-w", "--noflush"], &ipt)
}

/// Removes it again (chains, then sets).
pub fn unload_kube_router(
    node_ns: &str,
    rules: usize,
    local_pods: usize,
) -> Result<(), RulesetError> {
    let (ipt, sets) = kube_router_removal(rules, local_pods);
    run_in(node_ns, "iptables-restore", &["-w", "--noflush"], &ipt)?;
    run_in(node_ns, "ipset", &["restore"], &sets)
}

/// Loads the nftables ruleset into node namespace `node_ns`.
pub fn load_nft(
    node_ns: &str,
    rules: &[Rule],
    local_pods: &[Ipv4Addr],
    node_ips: &[Ipv4Addr],
) -> Result<(), RulesetError> {
    run_in(
        node_ns,
        "nft",
        &["-f", "-"],
        &knp_nft(rules, local_pods, node_ips),
    )
}

/// Removes the nftables table.
pub fn unload_nft(node_ns: &str) -> Result<(), RulesetError> {
    run_in(
        node_ns,
        "nft",
        &["-f", "-"],
        &format!("delete table inet {NFT_TABLE}\n"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_forms_hold_the_same_rules() {
        let client = Ipv4Addr::new(10, 244, 0, 2);
        let rules = rule_set(250, client, &[5201, 7000]);
        assert_eq!(rules.len(), 250);
        assert_eq!(rules.last().map(|r| r.peer), Some(client));
        let pols = policies(&rules, "bench", "server");
        assert_eq!(pols.len(), 3);
        assert_eq!(
            pols[2].1["spec"]["ingress"].as_array().map(Vec::len),
            Some(50)
        );
        let pods = [Ipv4Addr::new(10, 244, 1, 2)];
        let (sets, ipt) = kube_router(&rules, &pods);
        assert_eq!(sets.matches("create KUBE-SRC-").count(), 250);
        // Two iptables rules per (rule, port): mark, then return.
        assert_eq!(
            ipt.matches("-j MARK --set-xmark 0x10000/0x10000").count(),
            251
        );
        assert!(ipt.contains("-A KUBE-POD-FW-0 -d 10.244.1.2/32 -j KUBE-NWPLCY-2"));
        let nft = knp_nft(&rules, &pods, &[Ipv4Addr::new(10, 244, 1, 1)]);
        assert!(nft.contains("10.244.0.2/32 . tcp . 7000"));
        assert!(nft.contains("10.244.1.2 : jump pod-0-ingress"));
        let (rm, rmsets) = kube_router_removal(250, 1);
        assert!(rm.contains("-X KUBE-NWPLCY-2") && rmsets.contains("destroy KUBE-DST-2"));
    }
}
