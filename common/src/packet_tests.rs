use super::*;
use crate::{
    conntrack::{TCP_ACK, TCP_SYN},
    craft::{arp, Addr, Frame, Quoted, L4},
};

const A4: Addr = Addr::V4([10, 244, 0, 5]);
const B4: Addr = Addr::V4([10, 244, 0, 6]);
const A6: Addr = Addr::V6([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5]);
const B6: Addr = Addr::V6([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 6]);

fn parse_frame(f: &Frame) -> Result<Parsed, ParseError> {
    let bytes = f.build();
    parse(&bytes.as_slice())
}

#[test]
fn tcp_v4_ports_and_flags() {
    let p = parse_frame(&Frame::tcp(A4, B4, 40000, 80, TCP_SYN)).unwrap();
    assert_eq!(p.l3, L3::Ipv4);
    assert_eq!(
        (p.tuple.sport, p.tuple.dport, p.tuple.protocol),
        (40000, 80, proto::TCP)
    );
    assert_eq!(p.tuple.src, crate::v4_mapped([10, 244, 0, 5]));
    assert_eq!(p.tcp_flags, TCP_SYN);
}

#[test]
fn ipv4_options_shift_l4() {
    let mut f = Frame::new(
        A4,
        B4,
        L4::Udp {
            sport: 5,
            dport: 53,
        },
    );
    f.ipv4_options = 8;
    let p = parse_frame(&f).unwrap();
    assert_eq!((p.tuple.sport, p.tuple.dport), (5, 53));
}

#[test]
fn bad_ihl_is_rejected() {
    let mut bytes = Frame::tcp(A4, B4, 1, 2, TCP_SYN).build();
    bytes[14] = 0x44;
    assert_eq!(parse(&bytes.as_slice()), Err(ParseError::BadIhl));
}

#[test]
fn truncated_headers_are_rejected() {
    let bytes = Frame::tcp(A4, B4, 1, 2, TCP_SYN).build();
    for cut in [13, 20, 33, 40, 47] {
        assert_eq!(
            parse(&&bytes[..cut]),
            Err(ParseError::Truncated),
            "cut at {cut}"
        );
    }
    let bytes6 = Frame::tcp(A6, B6, 1, 2, TCP_SYN).build();
    for cut in [20, 50, 60] {
        assert_eq!(
            parse(&&bytes6[..cut]),
            Err(ParseError::Truncated),
            "v6 cut at {cut}"
        );
    }
}

#[test]
fn bad_tcp_offset_is_rejected() {
    let mut bytes = Frame::tcp(A4, B4, 1, 2, TCP_ACK).build();
    bytes[14 + 20 + 12] = 0x20;
    assert_eq!(parse(&bytes.as_slice()), Err(ParseError::BadTcpOffset));
}

#[test]
fn ipv6_extension_chain_is_walked() {
    let mut f = Frame::new(
        A6,
        B6,
        L4::Udp {
            sport: 7,
            dport: 81,
        },
    );
    f.ext_headers = std::vec![0, 60, 43];
    let p = parse_frame(&f).unwrap();
    assert_eq!((p.tuple.protocol, p.tuple.dport), (proto::UDP, 81));
}

#[test]
fn too_many_extension_headers_are_rejected() {
    let mut f = Frame::new(
        A6,
        B6,
        L4::Udp {
            sport: 7,
            dport: 81,
        },
    );
    f.ext_headers = std::vec![60; 9];
    assert_eq!(parse_frame(&f), Err(ParseError::TooManyExtensionHeaders));
}

#[test]
fn fragments_are_classified() {
    for (src, dst) in [(A4, B4), (A6, B6)] {
        let mut f = Frame::tcp(src, dst, 1000, 80, TCP_SYN);
        f.fragment = Some((77, 0, true));
        let first = parse_frame(&f).unwrap();
        assert_eq!(first.fragment, Fragment::First { id: 77 });
        assert_eq!(first.tuple.dport, 80);
        f.fragment = Some((77, 185, false));
        let later = parse_frame(&f).unwrap();
        assert_eq!(later.fragment, Fragment::Later { id: 77 });
        assert_eq!(later.tuple.dport, 0);
    }
}

#[test]
fn icmp_error_quotes_inner_tuple() {
    for (a, b) in [(A4, B4), (A6, B6)] {
        let inner = Quoted {
            src: a,
            dst: b,
            protocol: proto::TCP,
            sport: 40000,
            dport: 80,
        };
        let p = parse_frame(&Frame::new(b, a, L4::IcmpError { inner })).unwrap();
        assert_eq!(p.icmp, Icmp::Error);
        assert_eq!(
            (p.inner.sport, p.inner.dport, p.inner.protocol),
            (40000, 80, proto::TCP)
        );
    }
}

#[test]
fn echo_and_nd_and_sctp_and_arp() {
    let echo = parse_frame(&Frame::new(
        A4,
        B4,
        L4::IcmpEcho {
            request: true,
            id: 9,
        },
    ))
    .unwrap();
    assert_eq!((echo.icmp, echo.tuple.sport), (Icmp::EchoRequest, 9));
    let nd = parse_frame(&Frame::new(A6, B6, L4::NeighbourSolicitation)).unwrap();
    assert_eq!(nd.icmp, Icmp::NeighbourDiscovery);
    let init = parse_frame(&Frame::new(
        A4,
        B4,
        L4::Sctp {
            sport: 3,
            dport: 80,
            chunk: 1,
        },
    ))
    .unwrap();
    assert_eq!((init.tuple.dport, init.tcp_flags), (80, TCP_SYN));
    let a = arp();
    assert_eq!(parse(&a.as_slice()).unwrap().l3, L3::Arp);
}
