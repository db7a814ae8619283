//! Finding the host-side interface of a pod that was wired before Palisade was installed (no
//! CNI ADD will ever tell the agent about it), from what the node's kernel knows:
//!
//! - routed pods (the `ptp` plugin, Calico-style routing): a host route to the pod's address
//!   with no gateway names its veth (`/proc/net/route`, `/proc/net/ipv6_route`);
//! - bridged pods (the `bridge` plugin, kindnet's bridge mode): the route names the bridge; the
//!   neighbour table gives the pod's MAC (`/proc/net/arp`, IPv4) and the bridge's forwarding
//!   database gives the port that MAC was learned on (`/sys/class/net/<br>/brforward`). If the
//!   neighbour is not known yet, one UDP datagram to the pod's discard port makes the kernel
//!   ask (ARP) and the pod's answer teaches the bridge its port.
//!
//! Not covered: IPv6-only pods behind a bridge (the IPv6 neighbour table is only exposed over
//! netlink), and pods behind other devices (macvlan, ipvlan, OVS).

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket},
    path::Path,
    time::Duration,
};

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

/// `/proc/net/arp`: `IP address  HW type  Flags  HW address  Mask  Device`; complete entries
/// only (flag 0x2).
fn parse_arp(text: &str) -> BTreeMap<(Ipv4Addr, String), [u8; 6]> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let flags = u32::from_str_radix(f.get(2)?.trim_start_matches("0x"), 16).ok()?;
            if flags & 0x2 == 0 {
                return None;
            }
            Some((
                (f.first()?.parse().ok()?, (*f.get(5)?).to_owned()),
                parse_mac(f.get(3)?)?,
            ))
        })
        .collect()
}

fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for b in &mut mac {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    Some(mac)
}

/// The bridge's forwarding database (`brforward`: packed `struct __fdb_entry` of 16 bytes:
/// mac[6], port_no, is_local, ageing_timer_value u32, port_hi, pad, unused u16): MAC to port.
fn parse_fdb(bytes: &[u8]) -> BTreeMap<[u8; 6], u16> {
    bytes
        .chunks_exact(16)
        .filter(|e| e[7] == 0)
        .map(|e| {
            let mut mac = [0u8; 6];
            mac.copy_from_slice(&e[..6]);
            (mac, u16::from(e[12]) << 8 | u16::from(e[6]))
        })
        .collect()
}

/// The bridge's ports by number (`brif/<ifname>/port_no`, "0x1").
fn bridge_ports(bridge: &str) -> BTreeMap<u16, String> {
    let dir = Path::new("/sys/class/net").join(bridge).join("brif");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return BTreeMap::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let text = std::fs::read_to_string(e.path().join("port_no")).ok()?;
            let port = u16::from_str_radix(text.trim().trim_start_matches("0x"), 16).ok()?;
            Some((port, e.file_name().to_string_lossy().into_owned()))
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

fn via_bridge(bridge: &str, ip: Ipv4Addr) -> Option<String> {
    let lookup = || {
        let arp = parse_arp(&std::fs::read_to_string("/proc/net/arp").unwrap_or_default());
        let mac = *arp.get(&(ip, bridge.to_owned()))?;
        let fdb_path = Path::new("/sys/class/net").join(bridge).join("brforward");
        let port = *parse_fdb(&std::fs::read(fdb_path).ok()?).get(&mac)?;
        bridge_ports(bridge).remove(&port)
    };
    lookup().or_else(|| {
        // Make the kernel resolve the neighbour: one datagram to the discard port.
        if let Ok(sock) = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)) {
            let _ = sock.send_to(b"", SocketAddr::from((ip, 9)));
        }
        std::thread::sleep(Duration::from_millis(100));
        lookup()
    })
}

/// The host-side interface of the pod with address `ip`, if the node's tables tell.
pub fn host_interface(ip: IpAddr) -> Option<String> {
    let all = routes();
    let route = direct_route(&all, ip)?;
    let is_bridge = Path::new("/sys/class/net")
        .join(&route.ifname)
        .join("bridge")
        .is_dir();
    match (is_bridge, ip) {
        // A host route (/32, /128) straight to a device: the pod's own veth.
        (false, _) if route.prefix == if ip.is_ipv4() { 32 } else { 128 } => {
            Some(route.ifname.clone())
        }
        (true, IpAddr::V4(v4)) => via_bridge(&route.ifname, v4),
        _ => None,
    }
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

    #[test]
    fn arp_and_fdb_map_an_ip_to_a_bridge_port() {
        let arp = "IP address       HW type     Flags       HW address            Mask     Device
10.244.0.3       0x1         0x2         9a:1b:2c:3d:4e:5f     *        cni0
10.244.0.4       0x1         0x0         00:00:00:00:00:00     *        cni0
";
        let table = parse_arp(arp);
        let mac = table[&("10.244.0.3".parse().unwrap(), "cni0".to_owned())];
        assert_eq!(mac, [0x9a, 0x1b, 0x2c, 0x3d, 0x4e, 0x5f]);
        assert_eq!(table.len(), 1, "incomplete entries are skipped");
        let mut fdb = vec![0u8; 32];
        fdb[..6].copy_from_slice(&mac);
        fdb[6] = 3;
        fdb[16..22].copy_from_slice(&[1, 2, 3, 4, 5, 6]);
        fdb[22] = 1;
        fdb[23] = 1; // local: the bridge's own address
        let ports = parse_fdb(&fdb);
        assert_eq!(ports.get(&mac), Some(&3));
        assert_eq!(ports.len(), 1);
    }
}
