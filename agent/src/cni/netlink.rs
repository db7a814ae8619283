//! The few rtnetlink dumps discovery needs: links (is it a bridge?), neighbours (IP to MAC)
//! and the bridge forwarding database (MAC to port). Netlink answers for the network namespace
//! of the calling thread, unlike `/sys/class/net`, which shows the namespace that mounted it.

use std::{io, net::IpAddr};

const NLMSG_HDRLEN: usize = 16;
const NLMSG_DONE: u16 = 3;
const NLMSG_ERROR: u16 = 2;
const RTM_GETLINK: u16 = 18;
const RTM_NEWLINK: u16 = 16;
const RTM_GETNEIGH: u16 = 30;
const RTM_NEWNEIGH: u16 = 28;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;
const NDA_MASTER: u16 = 9;
const AF_BRIDGE: u8 = 7;

fn align(n: usize) -> usize {
    (n + 3) & !3
}

/// The route attributes of a message body after its fixed header: (type, payload).
fn attrs(mut buf: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while buf.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([buf[0], buf[1]]));
        let kind = u16::from_ne_bytes([buf[2], buf[3]]) & 0x3fff;
        if len < 4 || len > buf.len() {
            break;
        }
        out.push((kind, &buf[4..len]));
        buf = &buf[align(len).min(buf.len())..];
    }
    out
}

/// Sends one dump request and collects the answers' bodies of type `want`.
fn dump(request: u16, want: u16, body: &[u8]) -> io::Result<Vec<Vec<u8>>> {
    // SAFETY: plain socket(2); the descriptor is owned below.
    let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    let sock = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let raw = std::os::fd::AsRawFd::as_raw_fd(&sock);
    let len = NLMSG_HDRLEN + body.len();
    let mut msg = Vec::with_capacity(len);
    msg.extend_from_slice(&(len as u32).to_ne_bytes());
    msg.extend_from_slice(&request.to_ne_bytes());
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16;
    msg.extend_from_slice(&flags.to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    msg.extend_from_slice(&0u32.to_ne_bytes()); // port: the kernel
    msg.extend_from_slice(body);
    // SAFETY: `msg` is a valid buffer of `msg.len()` bytes.
    if unsafe { libc::send(raw, msg.as_ptr().cast(), msg.len(), 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // SAFETY: `buf` is writable for `buf.len()` bytes.
        let n = unsafe { libc::recv(raw, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut chunk = &buf[..n as usize];
        while chunk.len() >= NLMSG_HDRLEN {
            let mlen = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]) as usize;
            let kind = u16::from_ne_bytes([chunk[4], chunk[5]]);
            if mlen < NLMSG_HDRLEN || mlen > chunk.len() {
                return Ok(out);
            }
            match kind {
                NLMSG_DONE => return Ok(out),
                NLMSG_ERROR => {
                    let code = i32::from_ne_bytes([chunk[16], chunk[17], chunk[18], chunk[19]]);
                    return Err(io::Error::from_raw_os_error(-code));
                }
                k if k == want => out.push(chunk[NLMSG_HDRLEN..mlen].to_vec()),
                _ => {}
            }
            chunk = &chunk[align(mlen).min(chunk.len())..];
        }
    }
}

/// The ifindexes of every bridge (link kind "bridge").
pub fn bridges() -> io::Result<Vec<u32>> {
    // struct ifinfomsg: family, pad, type u16, index i32, flags u32, change u32 (16 bytes).
    let body = [0u8; 16];
    let mut out = Vec::new();
    for m in dump(RTM_GETLINK, RTM_NEWLINK, &body)? {
        if m.len() < 16 {
            continue;
        }
        let index = u32::from_ne_bytes([m[4], m[5], m[6], m[7]]);
        let is_bridge = attrs(&m[16..])
            .into_iter()
            .filter(|(k, _)| *k == IFLA_LINKINFO)
            .flat_map(|(_, info)| attrs(info))
            .any(|(k, v)| k == IFLA_INFO_KIND && v.strip_suffix(&[0]).unwrap_or(v) == b"bridge");
        if is_bridge {
            out.push(index);
        }
    }
    Ok(out)
}

/// One neighbour or forwarding-database entry.
#[derive(Debug, Clone)]
pub struct Neighbour {
    pub ifindex: u32,
    pub dst: Option<IpAddr>,
    pub mac: Option<[u8; 6]>,
    /// For forwarding-database entries: the bridge the port belongs to.
    pub master: Option<u32>,
}

fn neighbours_of(family: u8) -> io::Result<Vec<Neighbour>> {
    // struct ndmsg: family u8, pad u8, pad u16, ifindex i32, state u16, flags u8, type u8.
    let mut body = [0u8; 12];
    body[0] = family;
    let mut out = Vec::new();
    for m in dump(RTM_GETNEIGH, RTM_NEWNEIGH, &body)? {
        if m.len() < 12 {
            continue;
        }
        let mut n = Neighbour {
            ifindex: u32::from_ne_bytes([m[4], m[5], m[6], m[7]]),
            dst: None,
            mac: None,
            master: None,
        };
        for (k, v) in attrs(&m[12..]) {
            match (k, v.len()) {
                (NDA_DST, 4) => {
                    n.dst = Some(IpAddr::from(<[u8; 4]>::try_from(v).unwrap_or_default()))
                }
                (NDA_DST, 16) => {
                    n.dst = Some(IpAddr::from(<[u8; 16]>::try_from(v).unwrap_or_default()))
                }
                (NDA_LLADDR, 6) => n.mac = <[u8; 6]>::try_from(v).ok(),
                (NDA_MASTER, 4) => n.master = Some(u32::from_ne_bytes([v[0], v[1], v[2], v[3]])),
                _ => {}
            }
        }
        out.push(n);
    }
    Ok(out)
}

/// The IPv4 and IPv6 neighbour tables.
pub fn neighbours() -> io::Result<Vec<Neighbour>> {
    let mut all = neighbours_of(libc::AF_INET as u8)?;
    all.extend(neighbours_of(libc::AF_INET6 as u8)?);
    Ok(all)
}

/// The bridges' forwarding databases (MAC learned on port `ifindex` of bridge `master`).
pub fn fdb() -> io::Result<Vec<Neighbour>> {
    neighbours_of(AF_BRIDGE)
}

/// The name of an interface of this namespace.
pub fn ifname(index: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `buf` has IF_NAMESIZE bytes, as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: on success the buffer holds a NUL-terminated name.
    let name = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
    Some(name.to_string_lossy().into_owned())
}

/// The index of an interface of this namespace (0 if there is none).
pub fn ifindex(name: &str) -> u32 {
    let Ok(c) = std::ffi::CString::new(name) else {
        return 0;
    };
    // SAFETY: `c` is a valid NUL-terminated string.
    unsafe { libc::if_nametoindex(c.as_ptr()) }
}

/// Whether interface `name` is a bridge.
pub fn is_bridge(name: &str) -> bool {
    let index = ifindex(name);
    index != 0 && bridges().is_ok_and(|b| b.contains(&index))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_parse_and_stop_at_garbage() {
        let mut buf = Vec::new();
        buf.extend_from_slice(&8u16.to_ne_bytes());
        buf.extend_from_slice(&NDA_DST.to_ne_bytes());
        buf.extend_from_slice(&[10, 244, 0, 3]);
        buf.extend_from_slice(&5u16.to_ne_bytes());
        buf.extend_from_slice(&IFLA_INFO_KIND.to_ne_bytes());
        buf.extend_from_slice(&[b'x', 0, 0, 0]);
        buf.extend_from_slice(&[0xff, 0xff]);
        let a = attrs(&buf);
        assert_eq!(a.len(), 2);
        assert_eq!(a[0], (NDA_DST, &[10, 244, 0, 3][..]));
        assert_eq!(a[1].1, b"x");
    }

    #[test]
    fn loopback_is_not_a_bridge_and_dumps_work() {
        assert_eq!(ifname(ifindex("lo")).as_deref(), Some("lo"));
        assert!(!is_bridge("lo"));
        assert!(neighbours().is_ok());
        assert!(fdb().is_ok());
    }
}
