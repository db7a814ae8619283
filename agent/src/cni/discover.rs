//! Finding the host-side interface of a pod that was wired before Palisade was installed (no
//! CNI ADD will ever tell the agent about it), from what the node's kernel knows:
//!
//! - routed pods (the `ptp` plugin, Calico-style routing): a host route to the pod's address
//!   with no gateway names its veth (`/proc/net/route`, `/proc/net/ipv6_route`);
//! - bridged pods (the `bridge` plugin): the route names the bridge; the neighbour table gives
//!   the pod's MAC and the bridge's forwarding database the port that MAC was learned on (both
//!   over rtnetlink). If the neighbour is not known yet, one UDP datagram to the pod's discard
//!   port makes the kernel ask (ARP, neighbour solicitation), and the pod's answer teaches the
//!   bridge its port.
//!
//! Not covered: pods behind other devices (macvlan, ipvlan, OVS) and pods that never answer.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket},
    path::PathBuf,
    sync::mpsc,
    time::{Duration, Instant},
};

use super::netlink;

/// One route of the kernel's main table.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Route {
    dst: IpAddr,
    prefix: u8,
    gateway: bool,
    ifname: String,
}

fn contains(r: &Route, ip: IpAddr) -> bool {
    match (r.dst, ip) {
        (IpAddr::V4(d), IpAddr::V4(a)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(r.prefix)).unwrap_or(0);
            u32::from(d) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(d), IpAddr::V6(a)) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(r.prefix))
                .unwrap_or(0);
            u128::from(d) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

/// `/proc/net/route`: `Iface Destination Gateway Flags ... Mask ...`, addresses as
/// little-endian hex.
fn parse_route4(text: &str) -> Vec<Route> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // The kernel prints each __be32 as a native (little-endian) u32.
            let hex = |s: &str| u32::from_str_radix(s, 16).ok();
            Some(Route {
                dst: IpAddr::V4(Ipv4Addr::from(hex(f.get(1)?)?.to_le_bytes())),
                prefix: hex(f.get(7)?)?.count_ones() as u8,
                gateway: hex(f.get(2)?)? != 0,
                ifname: (*f.first()?).to_owned(),
            })
        })
        .collect()
}

/// `/proc/net/ipv6_route`: `dst dst_len src src_len nexthop metric refcnt use flags iface`.
fn parse_route6(text: &str) -> Vec<Route> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let dst = u128::from_str_radix(f.first()?, 16).ok()?;
            let prefix = u8::from_str_radix(f.get(1)?, 16).ok()?;
            let nexthop = u128::from_str_radix(f.get(4)?, 16).ok()?;
            Some(Route {
                dst: IpAddr::V6(Ipv6Addr::from(dst)),
                prefix,
                gateway: nexthop != 0,
                ifname: (*f.get(9)?).to_owned(),
            })
        })
        .collect()
}

fn routes() -> Vec<Route> {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let mut all = parse_route4(&read("/proc/net/route"));
    all.extend(parse_route6(&read("/proc/net/ipv6_route")));
    all
}

/// The interface the node reaches `ip` through directly (no gateway), most specific first.
fn direct_route(routes: &[Route], ip: IpAddr) -> Option<&Route> {
    routes
        .iter()
        .filter(|r| !r.gateway && contains(r, ip))
        .max_by_key(|r| r.prefix)
}

/// The port of `bridge` behind which the pod with address `ip` sits.
fn via_bridge(bridge: &str, ip: IpAddr) -> Option<String> {
    let bridge_index = netlink::ifindex(bridge);
    let lookup = || {
        let mac = netlink::neighbours()
            .ok()?
            .into_iter()
            .find(|n| n.ifindex == bridge_index && n.dst == Some(ip))?
            .mac?;
        let port = netlink::fdb()
            .ok()?
            .into_iter()
            .find(|e| e.mac == Some(mac) && e.master == Some(bridge_index))?;
        netlink::ifname(port.ifindex)
    };
    lookup().or_else(|| {
        // Make the kernel resolve the neighbour: one datagram to the discard port.
        let any: IpAddr = if ip.is_ipv4() {
            Ipv4Addr::UNSPECIFIED.into()
        } else {
            Ipv6Addr::UNSPECIFIED.into()
        };
        if let Ok(sock) = UdpSocket::bind((any, 0)) {
            let _ = sock.send_to(b"", SocketAddr::from((ip, 9)));
        }
        std::thread::sleep(Duration::from_millis(200));
        lookup()
    })
}

/// The host-side interface of the pod with address `ip`, if the node's tables tell.
pub fn host_interface(ip: IpAddr) -> Option<String> {
    let all = routes();
    let route = direct_route(&all, ip)?;
    if netlink::is_bridge(&route.ifname) {
        return via_bridge(&route.ifname, ip);
    }
    // A host route (/32, /128) straight to a device: the pod's own veth.
    let host_prefix = if ip.is_ipv4() { 32 } else { 128 };
    (route.prefix == host_prefix).then(|| route.ifname.clone())
}

/// A pod to look for: its key, IPs, and where its report goes.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub namespace: String,
    pub name: String,
    pub ips: Vec<IpAddr>,
    /// The endpoint report to write when found (the name the socket's `cni_add` uses).
    pub report: PathBuf,
}

/// How long before a pod that was not found is looked for again.
pub const RETRY: Duration = Duration::from_secs(30);

/// Looks for pods on a thread of its own (a lookup may wait for a neighbour to answer), and
/// writes an endpoint report for each one it finds, as the CNI plugin would have; the agent's
/// loop picks reports up like any other. Only pods that never had a report are looked for:
/// once the CNI plugin has reported a pod, its DEL is the truth about it.
#[derive(Debug)]
pub struct Discoverer {
    tx: mpsc::Sender<Vec<Candidate>>,
}

impl Discoverer {
    pub fn start() -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Vec<Candidate>>();
        std::thread::Builder::new()
            .name("discovery".into())
            .spawn(move || {
                let mut tried: BTreeMap<String, Instant> = BTreeMap::new();
                let mut reported: BTreeSet<String> = BTreeSet::new();
                while let Ok(mut latest) = rx.recv() {
                    while let Ok(newer) = rx.try_recv() {
                        latest = newer;
                    }
                    look_for(&latest, &mut tried, &mut reported);
                }
            })?;
        Ok(Self { tx })
    }

    /// Offers the node's current pods (those with IPs); returns at once.
    pub fn offer(&self, pods: Vec<Candidate>) {
        let _ = self.tx.send(pods);
    }
}

fn look_for(
    pods: &[Candidate],
    tried: &mut BTreeMap<String, Instant>,
    reported: &mut BTreeSet<String>,
) {
    let keys: BTreeSet<String> = pods
        .iter()
        .map(|p| format!("{}/{}", p.namespace, p.name))
        .collect();
    tried.retain(|k, _| keys.contains(k));
    reported.retain(|k| keys.contains(k));
    for pod in pods {
        let key = format!("{}/{}", pod.namespace, pod.name);
        if pod.report.exists() {
            reported.insert(key);
            continue;
        }
        if reported.contains(&key) || tried.get(&key).is_some_and(|t| t.elapsed() < RETRY) {
            continue;
        }
        tried.insert(key.clone(), Instant::now());
        let Some(ifname) = pod.ips.iter().find_map(|ip| host_interface(*ip)) else {
            tracing::warn!(pod = key, ips = ?pod.ips, "pod not found on this node's interfaces; looking again in {} s", RETRY.as_secs());
            continue;
        };
        match write_report(pod, &ifname) {
            Ok(()) => tracing::info!(
                pod = key,
                ifname,
                "discovered a pod the CNI plugin did not report (wired before the agent)"
            ),
            Err(e) => tracing::warn!(pod = key, "writing its endpoint report: {e}"),
        }
    }
}

fn write_report(pod: &Candidate, ifname: &str) -> std::io::Result<()> {
    let record = serde_json::json!({"namespace": pod.namespace, "name": pod.name,
        "ifname": ifname, "ips": pod.ips});
    if let Some(dir) = pod.report.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = pod.report.with_extension("discovered-tmp");
    std::fs::write(&tmp, record.to_string())?;
    std::fs::rename(&tmp, &pod.report)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTE4: &str =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
ul0\t00000000\t010012C6\t0003\t0\t0\t0\t00000000\t0\t0\t0
cni0\t0000F40A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
veth1a2b\t0201F40A\t00000000\t0005\t0\t0\t0\tFFFFFFFF\t0\t0\t0
";

    #[test]
    fn routes_name_a_routed_pods_veth_and_a_bridged_pods_bridge() {
        let r = parse_route4(ROUTE4);
        let pod = |s: &str| s.parse::<IpAddr>().unwrap();
        let routed = direct_route(&r, pod("10.244.1.2")).unwrap();
        assert_eq!((routed.ifname.as_str(), routed.prefix), ("veth1a2b", 32));
        let bridged = direct_route(&r, pod("10.244.0.7")).unwrap();
        assert_eq!((bridged.ifname.as_str(), bridged.prefix), ("cni0", 24));
        assert!(
            direct_route(&r, pod("8.8.8.8")).is_none(),
            "only via a gateway"
        );
    }

    #[test]
    fn ipv6_routes_parse() {
        let text = "fd000010024400010000000000000002 80 00000000000000000000000000000000 00 00000000000000000000000000000000 00000400 00000001 00000000 00200001    veth9
00000000000000000000000000000000 00 00000000000000000000000000000000 00 fd000198001800000000000000000001 00000400 00000001 00000000 00000003      ul0";
        let r = parse_route6(text);
        assert_eq!(r[0].ifname, "veth9");
        assert_eq!(r[0].prefix, 0x80);
        assert!(r[1].gateway);
    }
}
