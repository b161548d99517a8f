//! ICMP errors (fragmentation needed / packet too big, port unreachable) relayed to the flow they
//! concern, with the quoted header rewritten too, in NAT and FULLNAT, IPv4 and IPv6.

use std::net::{IpAddr, SocketAddr};

use slb_core::time::Instant;
use slb_l4::craft::{self, CLIENT_MAC, PORT0_MAC, PORT1_MAC, REAL_MACS, flags::*};
use slb_l4::frame::FrameBuf;
use slb_l4::fwd::{DropReason, ForwarderConfig, Mode, PortId, Verdict};
use slb_l4::wire::{self, Kind, be16};
use smoltcp::wire::{IpAddress, TcpPacket};

const P0: PortId = PortId(0);
const P1: PortId = PortId(1);
const T: Instant = Instant::ZERO;

fn meta(f: &[u8]) -> wire::IpMeta {
    match wire::parse(f) {
        Ok(Kind::Ip(m)) => m,
        other => panic!("{other:?}"),
    }
}

/// The quoted packet of an ICMP error frame: (src, sport, dst, dport) and whether its TCP
/// checksum verifies (the quote here is the whole segment, so it can be checked).
fn quoted(f: &[u8]) -> (SocketAddr, SocketAddr, bool) {
    let m = meta(f);
    let q = m.l4 + 8;
    let (src, dst, l4) = if m.v6 {
        let s: [u8; 16] = f[q + 8..q + 24].try_into().unwrap();
        let d: [u8; 16] = f[q + 24..q + 40].try_into().unwrap();
        (IpAddr::from(s), IpAddr::from(d), q + 40)
    } else {
        assert!(wire::ipv4_checksum_ok(f, q), "quoted IPv4 header checksum");
        let s: [u8; 4] = f[q + 12..q + 16].try_into().unwrap();
        let d: [u8; 4] = f[q + 16..q + 20].try_into().unwrap();
        (IpAddr::from(s), IpAddr::from(d), q + 20)
    };
    let seg = &f[l4..m.end];
    let ok = TcpPacket::new_checked(seg)
        .is_ok_and(|t| t.verify_checksum(&IpAddress::from(src), &IpAddress::from(dst)));
    (SocketAddr::new(src, be16(f, l4)), SocketAddr::new(dst, be16(f, l4 + 2)), ok)
}

fn relay(mode: Mode, v6: bool) {
    let mut f = craft::forwarder(mode, ForwarderConfig::default());
    let (vip, client, c_router, s_router, laddr) = if v6 {
        ("[fd00::100]:80", "[fd00:1::2]:1000", "fd00:1::fe", "fd00:2::fe", "fd00:2::100")
    } else {
        ("10.0.0.100:80", "10.0.1.2:1000", "10.0.1.254", "10.0.2.254", "10.0.2.100")
    };
    let (vip, client): (SocketAddr, SocketAddr) = (vip.parse().unwrap(), client.parse().unwrap());
    // Client SYN in; the forwarded SYN is what a server-side router would quote.
    let mut syn =
        FrameBuf::from_slice(&craft::tcp(CLIENT_MAC, PORT0_MAC, client, vip, SYN, 7, &[], b""));
    assert_eq!(f.process(T, &mut syn, P0), Verdict::Forward(P1));
    let fm = meta(syn.as_slice());
    let real = SocketAddr::new(fm.dst, fm.dport);
    let real_mac = REAL_MACS[usize::from(syn.as_slice()[5] != REAL_MACS[0][5])];
    let (kind, code) = if v6 { (2, 0) } else { (3, 4) };
    let err = craft::icmp_error(
        real_mac,
        PORT1_MAC,
        s_router.parse().unwrap(),
        fm.src,
        kind,
        code,
        1400,
        syn.as_slice(),
        1000,
    );
    let mut e = FrameBuf::from_slice(&err);
    assert_eq!(f.process(T, &mut e, P1), Verdict::Forward(P0), "{mode:?} v6={v6}: to the client");
    let em = meta(e.as_slice());
    assert_eq!((em.src, em.dst), (vip.ip(), client.ip()), "outer addresses");
    assert_eq!(&e.as_slice()[0..6], &CLIENT_MAC);
    let (qs, qd, ok) = quoted(e.as_slice());
    assert_eq!((qs, qd), (client, vip), "the quote shows the client's own packet");
    assert!(ok, "quoted TCP checksum fixed");
    assert_eq!(
        u32::from_be_bytes(e.as_slice()[em.l4 + 4..em.l4 + 8].try_into().unwrap()),
        1400,
        "MTU kept"
    );
    craft::checksums_ok(e.as_slice()).unwrap();

    // The server's SYN-ACK out; a client-side router reports it unreachable.
    let synack = craft::tcp(
        real_mac,
        PORT1_MAC,
        real,
        SocketAddr::new(fm.src, fm.sport),
        SYN | ACK,
        9,
        &[],
        b"",
    );
    let mut sa = FrameBuf::from_slice(&synack);
    assert_eq!(f.process(T, &mut sa, P1), Verdict::Forward(P0));
    let (ukind, ucode) = if v6 { (1, 4) } else { (3, 3) };
    let err = craft::icmp_error(
        CLIENT_MAC,
        PORT0_MAC,
        c_router.parse().unwrap(),
        vip.ip(),
        ukind,
        ucode,
        0,
        sa.as_slice(),
        1000,
    );
    let mut e = FrameBuf::from_slice(&err);
    assert_eq!(f.process(T, &mut e, P0), Verdict::Forward(P1), "{mode:?} v6={v6}: to the server");
    let em = meta(e.as_slice());
    assert_eq!(em.dst, real.ip());
    let expected_src: IpAddr =
        if mode == Mode::FullNat { laddr.parse().unwrap() } else { c_router.parse().unwrap() };
    assert_eq!(em.src, expected_src, "outer source");
    assert_eq!(&e.as_slice()[0..6], &real_mac);
    let (qs, qd, ok) = quoted(e.as_slice());
    assert_eq!(qs, real, "the quote shows the server's own packet");
    assert_eq!(qd, SocketAddr::new(fm.src, fm.sport));
    assert!(ok);
    craft::checksums_ok(e.as_slice()).unwrap();
    assert_eq!(f.stats().icmp_relayed, 2);
    assert_eq!(em.ttl, 63, "relayed like any forwarded packet");
}

#[test]
fn nat_relays_icmp_errors_both_ways() {
    relay(Mode::Nat, false);
    relay(Mode::Nat, true);
}

#[test]
fn fullnat_relays_icmp_errors_both_ways() {
    relay(Mode::FullNat, false);
    relay(Mode::FullNat, true);
}

#[test]
fn truncated_quotes_and_unknown_flows() {
    let mut f = craft::forwarder(Mode::Nat, ForwarderConfig::default());
    let vip: SocketAddr = "10.0.0.100:80".parse().unwrap();
    let client: SocketAddr = "10.0.1.2:2000".parse().unwrap();
    let mut syn =
        FrameBuf::from_slice(&craft::tcp(CLIENT_MAC, PORT0_MAC, client, vip, SYN, 7, &[], b""));
    f.process(T, &mut syn, P0);
    // RFC 792 quotes: IP header + 8 bytes; the quoted TCP checksum lies beyond and is left alone.
    let err = craft::icmp_error(
        REAL_MACS[0],
        PORT1_MAC,
        "10.0.2.254".parse().unwrap(),
        client.ip(),
        3,
        4,
        1400,
        syn.as_slice(),
        28,
    );
    let mut e = FrameBuf::from_slice(&err);
    assert_eq!(f.process(T, &mut e, P1), Verdict::Forward(P0));
    craft::checksums_ok(e.as_slice()).unwrap();
    let em = meta(e.as_slice());
    assert!(wire::ipv4_checksum_ok(e.as_slice(), em.l4 + 8));
    // Quoting a flow nobody knows, sent to the VIP: dropped and counted.
    let other = craft::tcp(
        CLIENT_MAC,
        PORT0_MAC,
        "10.0.0.100:80".parse().unwrap(),
        "10.0.1.9:9".parse().unwrap(),
        ACK,
        1,
        &[],
        b"",
    );
    let err = craft::icmp_error(
        CLIENT_MAC,
        PORT0_MAC,
        "10.0.1.254".parse().unwrap(),
        vip.ip(),
        3,
        3,
        0,
        &other,
        100,
    );
    let mut e = FrameBuf::from_slice(&err);
    assert_eq!(f.process(T, &mut e, P0), Verdict::Drop(DropReason::IcmpNoSession));
    // A quote too short to hold ports.
    let err = craft::icmp_error(
        CLIENT_MAC,
        PORT0_MAC,
        "10.0.1.254".parse().unwrap(),
        vip.ip(),
        3,
        3,
        0,
        &other,
        22,
    );
    let mut e = FrameBuf::from_slice(&err);
    assert_eq!(f.process(T, &mut e, P0), Verdict::Drop(DropReason::Malformed));
}
