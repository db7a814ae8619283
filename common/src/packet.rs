//! The packet parser, pure and generic over how bytes are read, so the same code runs in the TC
//! programs (through `bpf_skb_load_bytes`) and in host unit tests (over a slice).
//!
//! It reads Ethernet, IPv4 (options, fragments), IPv6 (extension header chains, fragments), TCP,
//! UDP, SCTP, ICMP and ICMPv6 (echo, errors with their embedded tuple, neighbour discovery).

use crate::proto;

/// Reads bytes of a packet. `load` returns `None` when the range is outside the packet.
pub trait Packet {
    fn load<const N: usize>(&self, offset: usize) -> Option<[u8; N]>;
}

impl Packet for &[u8] {
    fn load<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        let bytes = self.get(offset..offset.checked_add(N)?)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Some(out)
    }
}

/// Why a packet could not be parsed. Each maps to `DropReason::Unparseable` in an isolated
/// direction; the variant tells tests which check fired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    Truncated,
    BadIpVersion,
    BadIhl,
    BadTotalLength,
    BadTcpOffset,
    TooManyExtensionHeaders,
}

/// What sits above Ethernet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L3 {
    Ipv4,
    Ipv6,
    Arp,
    /// Any other EtherType.
    Other,
}

/// Fragment position of an IP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fragment {
    /// Not fragmented.
    None,
    /// The first fragment (offset 0, more fragments follow): carries the L4 header.
    First { id: u32 },
    /// A later fragment: no L4 header; its flow is only known through the first fragment.
    Later { id: u32 },
}

/// ICMP and ICMPv6 message classes that matter to policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Icmp {
    NotIcmp,
    EchoRequest,
    EchoReply,
    /// An error quoting a packet; `inner` is that packet's tuple as sent (from the error's
    /// receiver's point of view, the reply direction of a flow it opened).
    Error,
    /// IPv6 neighbour discovery (router/neighbour solicitation/advertisement, redirect).
    NeighbourDiscovery,
    Other,
}

/// The L4 tuple of a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Tuple {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// Source port, or ICMP echo identifier.
    pub sport: u16,
    /// Destination port; 0 for ICMP echo.
    pub dport: u16,
    pub protocol: u8,
}

/// A parsed packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parsed {
    pub l3: L3,
    pub tuple: Tuple,
    pub fragment: Fragment,
    pub icmp: Icmp,
    /// For `Icmp::Error`: the quoted packet's tuple.
    pub inner: Tuple,
    /// TCP flags, or for SCTP 0x02 when the first chunk is INIT.
    pub tcp_flags: u8,
}

const ETH_LEN: usize = 14;
const MAX_EXTENSION_HEADERS: usize = 8;

impl Parsed {
    /// An empty parse result of the given L3 kind.
    pub const fn non_ip(l3: L3) -> Self {
        Self {
            l3,
            tuple: Tuple {
                src: [0; 16],
                dst: [0; 16],
                sport: 0,
                dport: 0,
                protocol: 0,
            },
            fragment: Fragment::None,
            icmp: Icmp::NotIcmp,
            inner: Tuple {
                src: [0; 16],
                dst: [0; 16],
                sport: 0,
                dport: 0,
                protocol: 0,
            },
            tcp_flags: 0,
        }
    }
}

/// Parses an Ethernet frame into a fresh [`Parsed`] (host convenience over [`parse_into`]).
pub fn parse<P: Packet>(p: &P) -> Result<Parsed, ParseError> {
    let mut out = Parsed::non_ip(L3::Other);
    parse_into(p, &mut out)?;
    Ok(out)
}

/// Parses an Ethernet frame into `out`. Writing in place keeps the eBPF stack small: the
/// programs pass a per-CPU scratch slot.
#[inline(always)]
pub fn parse_into<P: Packet>(p: &P, out: &mut Parsed) -> Result<(), ParseError> {
    *out = Parsed::non_ip(L3::Other);
    let eth: [u8; 2] = p.load(12).ok_or(ParseError::Truncated)?;
    match u16::from_be_bytes(eth) {
        0x0800 => {
            out.l3 = L3::Ipv4;
            let (fragment, l4) = ipv4_header(p, ETH_LEN, &mut out.tuple)?;
            finish_ip(p, out, fragment, l4)
        }
        0x86dd => {
            out.l3 = L3::Ipv6;
            let (fragment, l4) = ipv6_header(p, ETH_LEN, &mut out.tuple)?;
            finish_ip(p, out, fragment, l4)
        }
        0x0806 => {
            out.l3 = L3::Arp;
            Ok(())
        }
        _ => Ok(()),
    }
}

#[inline(always)]
fn finish_ip<P: Packet>(
    p: &P,
    out: &mut Parsed,
    fragment: Fragment,
    l4: usize,
) -> Result<(), ParseError> {
    out.fragment = fragment;
    if matches!(fragment, Fragment::Later { .. }) {
        return Ok(());
    }
    parse_l4(p, l4, out)
}

/// Reads an IPv4 header at `off` into `t` (addresses, protocol): (fragment, L4 offset).
#[inline(always)]
fn ipv4_header<P: Packet>(
    p: &P,
    off: usize,
    t: &mut Tuple,
) -> Result<(Fragment, usize), ParseError> {
    let h: [u8; 20] = p.load(off).ok_or(ParseError::Truncated)?;
    if h[0] >> 4 != 4 {
        return Err(ParseError::BadIpVersion);
    }
    let ihl = usize::from(h[0] & 0x0f) * 4;
    if ihl < 20 {
        return Err(ParseError::BadIhl);
    }
    if usize::from(u16::from_be_bytes([h[2], h[3]])) < ihl {
        return Err(ParseError::BadTotalLength);
    }
    let id = u32::from(u16::from_be_bytes([h[4], h[5]]));
    let frag = u16::from_be_bytes([h[6], h[7]]);
    let (more, offset) = (frag & 0x2000 != 0, frag & 0x1fff);
    let fragment = match (offset, more) {
        (0, false) => Fragment::None,
        (0, true) => Fragment::First { id },
        _ => Fragment::Later { id },
    };
    t.src = crate::v4_mapped([h[12], h[13], h[14], h[15]]);
    t.dst = crate::v4_mapped([h[16], h[17], h[18], h[19]]);
    t.protocol = h[9];
    Ok((fragment, off + ihl))
}

/// Reads an IPv6 header into `t` and walks its extension headers: (fragment, L4 offset).
#[inline(always)]
fn ipv6_header<P: Packet>(
    p: &P,
    off: usize,
    t: &mut Tuple,
) -> Result<(Fragment, usize), ParseError> {
    let h: [u8; 8] = p.load(off).ok_or(ParseError::Truncated)?;
    if h[0] >> 4 != 6 {
        return Err(ParseError::BadIpVersion);
    }
    t.src = p.load(off + 8).ok_or(ParseError::Truncated)?;
    t.dst = p.load(off + 24).ok_or(ParseError::Truncated)?;
    let mut next = h[6];
    let mut cur = off + 40;
    let mut fragment = Fragment::None;
    for _ in 0..MAX_EXTENSION_HEADERS {
        match next {
            // Hop-by-hop, routing, destination options: length in 8-octet units after the first 8.
            0 | 43 | 60 => {
                let e: [u8; 2] = p.load(cur).ok_or(ParseError::Truncated)?;
                next = e[0];
                cur += (usize::from(e[1]) + 1) * 8;
            }
            // Authentication header: length in 4-octet units, minus 2.
            51 => {
                let e: [u8; 2] = p.load(cur).ok_or(ParseError::Truncated)?;
                next = e[0];
                cur += (usize::from(e[1]) + 2) * 4;
            }
            44 => {
                let e: [u8; 8] = p.load(cur).ok_or(ParseError::Truncated)?;
                next = e[0];
                let offset = u16::from_be_bytes([e[2], e[3]]) >> 3;
                let id = u32::from_be_bytes([e[4], e[5], e[6], e[7]]);
                fragment = match (offset, e[3] & 1 != 0) {
                    (0, false) => Fragment::None,
                    (0, true) => Fragment::First { id },
                    _ => Fragment::Later { id },
                };
                cur += 8;
                if matches!(fragment, Fragment::Later { .. }) {
                    break;
                }
            }
            _ => {
                t.protocol = next;
                return Ok((fragment, cur));
            }
        }
    }
    if matches!(fragment, Fragment::Later { .. }) {
        t.protocol = next;
        return Ok((fragment, cur));
    }
    Err(ParseError::TooManyExtensionHeaders)
}

/// Reads ports (or echo id) and flags for `parsed.tuple.protocol` at `off`.
#[inline(always)]
fn parse_l4<P: Packet>(p: &P, off: usize, parsed: &mut Parsed) -> Result<(), ParseError> {
    match parsed.tuple.protocol {
        proto::TCP => {
            let h: [u8; 14] = p.load(off).ok_or(ParseError::Truncated)?;
            if h[12] >> 4 < 5 {
                return Err(ParseError::BadTcpOffset);
            }
            set_ports(&mut parsed.tuple, h[0], h[1], h[2], h[3]);
            parsed.tcp_flags = h[13];
        }
        proto::UDP => {
            let h: [u8; 8] = p.load(off).ok_or(ParseError::Truncated)?;
            set_ports(&mut parsed.tuple, h[0], h[1], h[2], h[3]);
        }
        proto::SCTP => {
            // Common header (12 bytes) and the first chunk's type.
            let h: [u8; 13] = p.load(off).ok_or(ParseError::Truncated)?;
            set_ports(&mut parsed.tuple, h[0], h[1], h[2], h[3]);
            if h[12] == SCTP_CHUNK_INIT {
                parsed.tcp_flags = crate::conntrack::TCP_SYN;
            }
        }
        proto::ICMP | proto::ICMPV6 => parse_icmp(p, off, parsed)?,
        _ => {}
    }
    Ok(())
}

/// SCTP chunk type INIT, the only chunk that opens an association.
pub const SCTP_CHUNK_INIT: u8 = 1;

#[inline(always)]
fn set_ports(t: &mut Tuple, a: u8, b: u8, c: u8, d: u8) {
    t.sport = u16::from_be_bytes([a, b]);
    t.dport = u16::from_be_bytes([c, d]);
}

#[inline(always)]
fn parse_icmp<P: Packet>(p: &P, off: usize, parsed: &mut Parsed) -> Result<(), ParseError> {
    let h: [u8; 8] = p.load(off).ok_or(ParseError::Truncated)?;
    let v6 = parsed.tuple.protocol == proto::ICMPV6;
    parsed.icmp = classify_icmp(h[0], v6);
    match parsed.icmp {
        Icmp::EchoRequest | Icmp::EchoReply => {
            parsed.tuple.sport = u16::from_be_bytes([h[4], h[5]]);
        }
        Icmp::Error => {
            let inner_off = off + 8;
            let inner = &mut parsed.inner;
            let (_, l4) = if v6 {
                ipv6_header(p, inner_off, inner)?
            } else {
                ipv4_header(p, inner_off, inner)?
            };
            // The first 8 bytes of the quoted L4 header hold the ports of TCP, UDP and SCTP.
            let ports: [u8; 4] = p.load(l4).ok_or(ParseError::Truncated)?;
            set_ports(inner, ports[0], ports[1], ports[2], ports[3]);
        }
        _ => {}
    }
    Ok(())
}

#[inline(always)]
const fn classify_icmp(kind: u8, v6: bool) -> Icmp {
    if v6 {
        match kind {
            128 => Icmp::EchoRequest,
            129 => Icmp::EchoReply,
            1..=4 => Icmp::Error,
            133..=137 => Icmp::NeighbourDiscovery,
            _ => Icmp::Other,
        }
    } else {
        match kind {
            8 => Icmp::EchoRequest,
            0 => Icmp::EchoReply,
            3 | 11 | 12 => Icmp::Error,
            _ => Icmp::Other,
        }
    }
}

#[cfg(test)]
#[path = "packet_tests.rs"]
mod tests;
