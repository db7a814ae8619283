//! Builds packets for tests: host parser tests and `BPF_PROG_TEST_RUN` packet tests use the same
//! frames. Only compiled for tests and user space.

extern crate std;
use std::vec::Vec;

use crate::proto;

/// An IP address in either family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Addr {
    V4([u8; 4]),
    V6([u8; 16]),
}

/// What to put above IP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L4 {
    Tcp {
        sport: u16,
        dport: u16,
        flags: u8,
    },
    Udp {
        sport: u16,
        dport: u16,
    },
    Sctp {
        sport: u16,
        dport: u16,
        chunk: u8,
    },
    IcmpEcho {
        request: bool,
        id: u16,
    },
    /// An ICMP error (destination unreachable) quoting `inner`.
    IcmpError {
        inner: Quoted,
    },
    /// IPv6 neighbour solicitation (ICMPv6 135).
    NeighbourSolicitation,
    /// Raw protocol number with no header.
    Raw(u8),
}

/// The packet an ICMP error quotes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quoted {
    pub src: Addr,
    pub dst: Addr,
    pub protocol: u8,
    pub sport: u16,
    pub dport: u16,
}

/// A frame description.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub src: Addr,
    pub dst: Addr,
    pub l4: L4,
    /// IPv6 extension headers to insert before L4 (next-header values: 0, 43, 60).
    pub ext_headers: Vec<u8>,
    /// `(id, offset in 8-byte units, more fragments)`.
    pub fragment: Option<(u32, u16, bool)>,
    /// IPv4 header options length in bytes (multiple of 4).
    pub ipv4_options: usize,
}

impl Frame {
    pub fn new(src: Addr, dst: Addr, l4: L4) -> Self {
        Self {
            src,
            dst,
            l4,
            ext_headers: Vec::new(),
            fragment: None,
            ipv4_options: 0,
        }
    }

    pub fn tcp(src: Addr, dst: Addr, sport: u16, dport: u16, flags: u8) -> Self {
        Self::new(
            src,
            dst,
            L4::Tcp {
                sport,
                dport,
                flags,
            },
        )
    }

    /// Serialises to an Ethernet frame.
    pub fn build(&self) -> Vec<u8> {
        let v6 = matches!(self.src, Addr::V6(_));
        let mut out = std::vec![0u8; 12];
        out.extend_from_slice(if v6 { &[0x86, 0xdd] } else { &[0x08, 0x00] });
        let l4 = l4_bytes(&self.l4, v6);
        let proto = l4_proto(&self.l4, v6);
        if v6 {
            ipv6(&mut out, self, proto, &l4);
        } else {
            ipv4(&mut out, self, proto, &l4);
        }
        out
    }
}

/// An ARP frame.
pub fn arp() -> Vec<u8> {
    let mut out = std::vec![0u8; 12];
    out.extend_from_slice(&[0x08, 0x06]);
    out.extend_from_slice(&[0u8; 28]);
    out
}

fn l4_proto(l4: &L4, v6: bool) -> u8 {
    match l4 {
        L4::Tcp { .. } => proto::TCP,
        L4::Udp { .. } => proto::UDP,
        L4::Sctp { .. } => proto::SCTP,
        L4::IcmpEcho { .. } | L4::IcmpError { .. } | L4::NeighbourSolicitation => {
            if v6 {
                proto::ICMPV6
            } else {
                proto::ICMP
            }
        }
        L4::Raw(p) => *p,
    }
}

fn ports(sport: u16, dport: u16) -> Vec<u8> {
    let mut v = sport.to_be_bytes().to_vec();
    v.extend_from_slice(&dport.to_be_bytes());
    v
}

fn l4_bytes(l4: &L4, v6: bool) -> Vec<u8> {
    match *l4 {
        L4::Tcp {
            sport,
            dport,
            flags,
        } => {
            let mut v = ports(sport, dport);
            v.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
            v
        }
        L4::Udp { sport, dport } => {
            let mut v = ports(sport, dport);
            v.extend_from_slice(&[0, 8, 0, 0]);
            v
        }
        L4::Sctp {
            sport,
            dport,
            chunk,
        } => {
            let mut v = ports(sport, dport);
            v.extend_from_slice(&[0; 8]);
            v.extend_from_slice(&[chunk, 0, 0, 4]);
            v
        }
        L4::IcmpEcho { request, id } => {
            let kind = match (v6, request) {
                (false, true) => 8,
                (false, false) => 0,
                (true, true) => 128,
                (true, false) => 129,
            };
            let mut v = std::vec![kind, 0, 0, 0];
            v.extend_from_slice(&id.to_be_bytes());
            v.extend_from_slice(&[0, 1]);
            v
        }
        L4::IcmpError { inner } => {
            let mut v = std::vec![if v6 { 1 } else { 3 }, 0, 0, 0, 0, 0, 0, 0];
            let quoted = Frame::new(
                inner.src,
                inner.dst,
                L4::Udp {
                    sport: inner.sport,
                    dport: inner.dport,
                },
            );
            let mut q = quoted.build();
            // Rewrite the quoted protocol; ports sit at the same place for TCP, UDP and SCTP.
            let proto_at = if v6 { 14 + 6 } else { 14 + 9 };
            q[proto_at] = inner.protocol;
            v.extend_from_slice(&q[14..]);
            v
        }
        L4::NeighbourSolicitation => std::vec![135, 0, 0, 0, 0, 0, 0, 0],
        L4::Raw(_) => Vec::new(),
    }
}

fn ipv4(out: &mut Vec<u8>, f: &Frame, proto: u8, l4: &[u8]) {
    let (Addr::V4(src), Addr::V4(dst)) = (f.src, f.dst) else {
        panic!("mixed address families");
    };
    let ihl = 20 + f.ipv4_options;
    let total = u16::try_from(ihl + l4.len()).unwrap_or(u16::MAX);
    let (id, frag) = match f.fragment {
        Some((id, off, more)) => (id as u16, off | if more { 0x2000 } else { 0 }),
        None => (0, 0),
    };
    out.push(0x40 | u8::try_from(ihl / 4).unwrap_or(15));
    out.push(0);
    out.extend_from_slice(&total.to_be_bytes());
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&frag.to_be_bytes());
    out.extend_from_slice(&[64, proto, 0, 0]);
    out.extend_from_slice(&src);
    out.extend_from_slice(&dst);
    out.extend(std::iter::repeat_n(1u8, f.ipv4_options));
    if !matches!(f.fragment, Some((_, off, _)) if off > 0) {
        out.extend_from_slice(l4);
    } else {
        out.extend_from_slice(&[0xaa; 8]);
    }
}

fn ipv6(out: &mut Vec<u8>, f: &Frame, proto: u8, l4: &[u8]) {
    let (Addr::V6(src), Addr::V6(dst)) = (f.src, f.dst) else {
        panic!("mixed address families");
    };
    let mut chain: Vec<u8> = f.ext_headers.clone();
    if f.fragment.is_some() {
        chain.push(44);
    }
    let mut body = Vec::new();
    for (i, &h) in chain.iter().enumerate() {
        let next = chain.get(i + 1).copied().unwrap_or(proto);
        if h == 44 {
            let (id, off, more) = f.fragment.unwrap_or((0, 0, false));
            body.extend_from_slice(&[next, 0]);
            body.extend_from_slice(&((off << 3) | u16::from(more)).to_be_bytes());
            body.extend_from_slice(&id.to_be_bytes());
        } else {
            body.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]);
        }
    }
    if !matches!(f.fragment, Some((_, off, _)) if off > 0) {
        body.extend_from_slice(l4);
    } else {
        body.extend_from_slice(&[0xaa; 8]);
    }
    out.extend_from_slice(&[0x60, 0, 0, 0]);
    out.extend_from_slice(&u16::try_from(body.len()).unwrap_or(u16::MAX).to_be_bytes());
    out.push(chain.first().copied().unwrap_or(proto));
    out.push(64);
    out.extend_from_slice(&src);
    out.extend_from_slice(&dst);
    out.extend_from_slice(&body);
}
