//! Forwarder unit tests with crafted frames: ARP/ND, policies, counters.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use slb_core::backend::BackendState;
use slb_core::flow::Protocol;
use slb_core::sched::{SchedulerConfig, SchedulerKind};
use slb_core::session::{ConnState, TableConfig};
use slb_core::time::Instant;

use super::*;
use crate::craft::{self, flags::*};
use crate::frame::{CsumState, FrameBuf};
use crate::wire::arp::{ArpOperation, ArpRepr};
use crate::wire::{self, Kind, L3, be16};

const C_MAC: Mac = [2, 0, 0, 0, 1, 1];
const S_MAC: Mac = [2, 0, 0, 0, 2, 1];
const CLIENT_MAC: Mac = [2, 0, 0, 0, 1, 2];
const R1_MAC: Mac = [2, 0, 0, 0, 2, 0x11];
const R2_MAC: Mac = [2, 0, 0, 0, 2, 0x12];
const P0: PortId = PortId(0);
const P1: PortId = PortId(1);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}
fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn build(mode: Mode, cfg: ForwarderConfig, persist: Option<Persistence>) -> Forwarder {
    let mut f = Forwarder::new(cfg);
    f.add_port(PortConfig::new(C_MAC).with_addr("10.0.1.1/24".parse().unwrap())).unwrap();
    f.add_port(PortConfig::new(S_MAC).with_addr("10.0.2.1/24".parse().unwrap())).unwrap();
    f.add_neighbour(ip("10.0.2.11"), R1_MAC);
    f.add_neighbour(ip("10.0.2.12"), R2_MAC);
    f.add_local_addr(ip("10.0.2.100"));
    for (proto, port) in [(Protocol::Tcp, 80), (Protocol::Udp, 53)] {
        let mut s = ServiceConfig::new(
            proto,
            ip("10.0.0.100"),
            port,
            mode,
            SchedulerConfig::new(SchedulerKind::RoundRobin),
        )
        .with_real(SocketAddr::new(ip("10.0.2.11"), port))
        .with_real(SocketAddr::new(ip("10.0.2.12"), port));
        s.persistence = persist;
        f.add_service(s).unwrap();
    }
    f
}

fn nat() -> Forwarder {
    build(Mode::Nat, ForwarderConfig::default(), None)
}

fn syn(client: &str) -> FrameBuf {
    FrameBuf::from_slice(&craft::tcp(
        CLIENT_MAC,
        C_MAC,
        sa(client),
        sa("10.0.0.100:80"),
        SYN,
        1,
        &[2, 4, 5, 180],
        &[],
    ))
}

fn seg(client: &str, flags: u8, payload: &[u8]) -> FrameBuf {
    FrameBuf::from_slice(&craft::tcp(
        CLIENT_MAC,
        C_MAC,
        sa(client),
        sa("10.0.0.100:80"),
        flags,
        2,
        &[],
        payload,
    ))
}

fn meta(f: &FrameBuf) -> wire::IpMeta {
    match wire::parse(f.as_slice()) {
        Ok(Kind::Ip(m)) => m,
        other => panic!("not IP: {other:?}"),
    }
}

const T0: Instant = Instant::ZERO;

#[test]
fn arp_is_answered_for_vips_port_addresses_and_local_addresses_only() {
    let mut f = nat();
    for (target, port) in [("10.0.0.100", P0), ("10.0.1.1", P0), ("10.0.2.100", P1)] {
        let mut b = FrameBuf::from_slice(&craft::arp_request(
            CLIENT_MAC,
            Ipv4Addr::new(10, 0, 1, 2),
            target.parse().unwrap(),
        ));
        assert_eq!(f.process(T0, &mut b, port), Verdict::Reply(port), "{target}");
        let a = ArpRepr::parse(b.as_slice()).unwrap();
        assert_eq!(a.op, ArpOperation::Reply);
        assert_eq!(a.sender_ip.to_string(), target);
        assert_eq!(a.sender_mac, f.port_mac(port).unwrap());
        assert_eq!(&b.as_slice()[0..6], &CLIENT_MAC);
    }
    let mut other = FrameBuf::from_slice(&craft::arp_request(
        CLIENT_MAC,
        Ipv4Addr::new(10, 0, 1, 2),
        Ipv4Addr::new(10, 0, 1, 77),
    ));
    assert_eq!(f.process(T0, &mut other, P0), Verdict::Host);
    assert!(
        f.neighbours().iter().any(|(i, m, st)| *i == ip("10.0.1.2") && *m == CLIENT_MAC && !st)
    );
    assert_eq!(f.stats().replied, 3);
}

#[test]
fn announcements_cover_every_owned_address_on_every_port() {
    let f = nat();
    let a = f.announcements();
    assert_eq!(a.len(), 2 * 2, "VIP and local address on both ports");
    for (port, b) in &a {
        let arp = ArpRepr::parse(b.as_slice()).unwrap();
        assert_eq!(arp.sender_ip, arp.target_ip, "gratuitous");
        assert_eq!(&b.as_slice()[0..6], &BROADCAST);
        assert_eq!(arp.sender_mac, f.port_mac(*port).unwrap());
    }
}

#[test]
fn unknown_next_hop_is_solicited_rate_limited_then_learned() {
    let mut f = Forwarder::new(ForwarderConfig::default());
    f.add_port(PortConfig::new(C_MAC).with_addr("10.0.1.1/24".parse().unwrap())).unwrap();
    f.add_port(PortConfig::new(S_MAC).with_addr("10.0.2.1/24".parse().unwrap())).unwrap();
    let svc = ServiceConfig::new(
        Protocol::Tcp,
        ip("10.0.0.100"),
        80,
        Mode::Nat,
        SchedulerConfig::new(SchedulerKind::RoundRobin),
    )
    .with_real(sa("10.0.2.11:80"));
    f.add_service(svc).unwrap();
    let mut b = syn("10.0.1.2:1000");
    assert_eq!(f.process(T0, &mut b, P0), Verdict::Solicit(P1));
    let req = ArpRepr::parse(b.as_slice()).unwrap();
    assert_eq!(
        (req.sender_ip, req.target_ip),
        (Ipv4Addr::new(10, 0, 2, 1), Ipv4Addr::new(10, 0, 2, 11))
    );
    let mut again = syn("10.0.1.2:1000");
    assert_eq!(f.process(Instant::from_millis(500), &mut again, P0), Verdict::Held, "rate limited");
    let mut out = FrameBuf::default();
    assert_eq!(f.poll_transmit(&mut out), None);
    // The real server answers: both held SYNs are released, rewritten, with its MAC.
    let mut reply = FrameBuf::from_slice(
        &ArpRepr::request(S_MAC, Ipv4Addr::new(10, 0, 2, 1), Ipv4Addr::new(10, 0, 2, 11))
            .reply(R1_MAC)
            .to_frame(),
    );
    assert_eq!(f.process(Instant::from_millis(600), &mut reply, P1), Verdict::Host);
    for _ in 0..2 {
        assert_eq!(f.poll_transmit(&mut out), Some(P1));
        assert_eq!(&out.as_slice()[0..12], &[R1_MAC, S_MAC].concat()[..]);
        assert_eq!(meta(&out).dst, ip("10.0.2.11"));
        craft::checksums_ok(out.as_slice()).unwrap();
    }
    assert_eq!(f.poll_transmit(&mut out), None);
    let mut third = syn("10.0.1.2:1000");
    assert_eq!(f.process(Instant::from_secs(1), &mut third, P0), Verdict::Forward(P1));
    assert_eq!(&third.as_slice()[0..12], &[R1_MAC, S_MAC].concat()[..]);
    assert_eq!(f.stats().solicits, 1);
    assert_eq!(f.stats().held, 2);
    assert_eq!(f.stats().drops_of(DropReason::NoNeighbour), 0);
}

#[test]
fn held_frames_are_bounded_and_expire() {
    let mut f = Forwarder::new(ForwarderConfig::default());
    f.add_port(PortConfig::new(C_MAC).with_addr("10.0.1.1/24".parse().unwrap())).unwrap();
    f.add_port(PortConfig::new(S_MAC).with_addr("10.0.2.1/24".parse().unwrap())).unwrap();
    f.add_service(
        ServiceConfig::new(
            Protocol::Udp,
            ip("10.0.0.100"),
            53,
            Mode::Nat,
            SchedulerConfig::new(SchedulerKind::RoundRobin),
        )
        .with_real(sa("10.0.2.11:53")),
    )
    .unwrap();
    let n = neigh::HOLD_PER_NEIGHBOUR;
    let verdicts: Vec<Verdict> = (0..n + 2)
        .map(|i| {
            let mut b = FrameBuf::from_slice(&craft::udp(
                CLIENT_MAC,
                C_MAC,
                sa(&format!("10.0.1.2:{}", 100 + i)),
                sa("10.0.0.100:53"),
                b"q",
            ));
            f.process(T0, &mut b, P0)
        })
        .collect();
    assert_eq!(verdicts[0], Verdict::Solicit(P1));
    assert!(verdicts[1..n].iter().all(|v| *v == Verdict::Held));
    assert_eq!(
        &verdicts[n..],
        &[Verdict::Drop(DropReason::NoNeighbour); 2],
        "bounded per neighbour"
    );
    f.expire(T0 + Duration::from_secs(4), 10);
    assert_eq!(f.stats().drops_of(DropReason::NoNeighbour), 2 + n as u64, "held frames expired");
    f.add_neighbour(ip("10.0.2.11"), R1_MAC);
    assert_eq!(f.poll_transmit(&mut FrameBuf::default()), None);
}

#[test]
fn strict_tcp_needs_a_syn_and_sloppy_does_not() {
    let mut f = nat();
    let mut ack = seg("10.0.1.2:2000", ACK, b"x");
    assert_eq!(f.process(T0, &mut ack, P0), Verdict::Drop(DropReason::NoSession));
    assert_eq!(f.sessions().len(), 0);
    let (svc, _) = f.service_stats(ServiceId(0)).unwrap();
    assert_eq!(svc.conns, 0);
    let mut sloppy =
        build(Mode::Nat, ForwarderConfig { strict_tcp: false, ..Default::default() }, None);
    let mut ack = seg("10.0.1.2:2000", ACK, b"x");
    assert_eq!(sloppy.process(T0, &mut ack, P0), Verdict::Forward(P1));
    let v = sloppy.session_views().next().unwrap();
    assert_eq!(v.session.state(), ConnState::Established);
    let mut rst = seg("10.0.1.2:2001", RST, b"");
    assert_eq!(sloppy.process(T0, &mut rst, P0), Verdict::Drop(DropReason::NoSession));
}

#[test]
fn fragments_to_a_vip_are_dropped_and_others_left_to_the_host() {
    let mut f = nat();
    let mut frag = syn("10.0.1.2:3000");
    frag.as_mut_slice()[L3 + 6] |= 0x20; // more fragments
    wire::fill_ipv4_checksum(frag.as_mut_slice(), L3);
    assert_eq!(f.process(T0, &mut frag, P0), Verdict::Drop(DropReason::Fragment));
    let mut other = FrameBuf::from_slice(&craft::udp(
        CLIENT_MAC,
        C_MAC,
        sa("10.0.1.2:5"),
        sa("10.0.1.1:6"),
        b"hi",
    ));
    other.as_mut_slice()[L3 + 7] = 8; // offset 64 bytes
    wire::fill_ipv4_checksum(other.as_mut_slice(), L3);
    assert_eq!(f.process(T0, &mut other, P0), Verdict::Host);
    assert_eq!(f.stats().drops_of(DropReason::Fragment), 1);
}

#[test]
fn ttl_is_decremented_in_nat_kept_in_dr_and_expiry_drops() {
    let mut f = nat();
    let mut b = syn("10.0.1.2:4000");
    assert_eq!(f.process(T0, &mut b, P0), Verdict::Forward(P1));
    assert_eq!(meta(&b).ttl, 63);
    craft::checksums_ok(b.as_slice()).unwrap();
    let mut dying = syn("10.0.1.2:4001");
    dying.as_mut_slice()[L3 + 8] = 1;
    wire::fill_ipv4_checksum(dying.as_mut_slice(), L3);
    assert_eq!(f.process(T0, &mut dying, P0), Verdict::Drop(DropReason::TtlExceeded));
    let mut dr = Forwarder::new(ForwarderConfig::default());
    dr.add_port(PortConfig::new(C_MAC).with_addr("10.0.2.1/24".parse().unwrap())).unwrap();
    dr.add_neighbour(ip("10.0.2.11"), R1_MAC);
    dr.add_service(
        ServiceConfig::new(
            Protocol::Tcp,
            ip("10.0.0.100"),
            80,
            Mode::Dr,
            SchedulerConfig::new(SchedulerKind::RoundRobin),
        )
        .with_real(sa("10.0.2.11:80")),
    )
    .unwrap();
    let mut b = syn("10.0.2.2:4000");
    let before = b.as_slice().to_vec();
    assert_eq!(dr.process(T0, &mut b, P0), Verdict::Forward(P0));
    assert_eq!(&b.as_slice()[12..], &before[12..], "DR rewrites only the MACs");
    assert_eq!(&b.as_slice()[0..12], &[R1_MAC, C_MAC].concat()[..]);
}

#[test]
fn persistence_keeps_a_client_on_one_real_server() {
    let mut f = build(Mode::Nat, ForwarderConfig::default(), Some(Persistence::default()));
    let dst = |f: &mut Forwarder, client: &str| {
        let mut b = syn(client);
        assert_eq!(f.process(T0, &mut b, P0), Verdict::Forward(P1));
        meta(&b).dst
    };
    let first = dst(&mut f, "10.0.1.2:5000");
    for port in 5001..5010 {
        assert_eq!(dst(&mut f, &format!("10.0.1.2:{port}")), first);
    }
    // Round robin gives the next client the other server.
    assert_ne!(dst(&mut f, "10.0.1.3:5000"), first);
    let mut plain = nat();
    let a = dst(&mut plain, "10.0.1.2:5000");
    assert_ne!(dst(&mut plain, "10.0.1.2:5001"), a, "without persistence round robin alternates");
}

#[test]
fn a_down_server_takes_no_new_flows_and_existing_ones_follow_the_policy() {
    for expire in [false, true] {
        let cfg = ForwarderConfig { expire_nodest_conn: expire, ..ForwarderConfig::default() };
        let mut f = build(Mode::Nat, cfg, None);
        let mut b = syn("10.0.1.2:6000");
        f.process(T0, &mut b, P0);
        let first = meta(&b).dst;
        let id = f.reals().iter().find(|r| r.2.ip() == first && r.1 == ServiceId(0)).unwrap().0;
        let removed = f.set_real_state(id, BackendState::Down, Instant::from_secs(1)).unwrap();
        assert_eq!(removed, usize::from(expire));
        for port in 6001..6005 {
            let mut b = syn(&format!("10.0.1.2:{port}"));
            assert_eq!(f.process(Instant::from_secs(2), &mut b, P0), Verdict::Forward(P1));
            assert_ne!(meta(&b).dst, first, "no new flows to the down server");
        }
        let mut more = seg("10.0.1.2:6000", ACK, b"data");
        let v = f.process(Instant::from_secs(2), &mut more, P0);
        if expire {
            assert_eq!(v, Verdict::Drop(DropReason::NoSession));
        } else {
            assert_eq!(v, Verdict::Forward(P1));
            assert_eq!(meta(&more).dst, first, "existing flow stays (IPVS default)");
        }
        f.set_real_state(id, BackendState::Up, Instant::from_secs(3)).unwrap();
    }
}

#[test]
fn a_syn_on_a_finished_session_is_scheduled_afresh() {
    let mut f = nat();
    let mut b = syn("10.0.1.2:7000");
    f.process(T0, &mut b, P0);
    let first = meta(&b).dst;
    let real_mac = if first == ip("10.0.2.11") { R1_MAC } else { R2_MAC };
    let mut synack = FrameBuf::from_slice(&craft::tcp(
        real_mac,
        S_MAC,
        SocketAddr::new(first, 80),
        sa("10.0.1.2:7000"),
        SYN | ACK,
        9,
        &[],
        &[],
    ));
    assert_eq!(f.process(T0, &mut synack, P1), Verdict::Forward(P0));
    let mut ack = seg("10.0.1.2:7000", ACK, b"");
    f.process(T0, &mut ack, P0);
    assert_eq!(f.session_views().next().unwrap().session.state(), ConnState::Established);
    let mut rst = seg("10.0.1.2:7000", RST | ACK, b"");
    f.process(T0, &mut rst, P0);
    assert_eq!(f.session_views().next().unwrap().session.state(), ConnState::Close);
    let mut b = syn("10.0.1.2:7000");
    assert_eq!(f.process(T0, &mut b, P0), Verdict::Forward(P1));
    assert_ne!(meta(&b).dst, first, "round robin moved on: the old session was replaced");
    assert_eq!(f.sessions().len(), 1);
    assert_eq!(f.service_stats(ServiceId(0)).unwrap().0.conns, 2);
}

#[test]
fn checksums_partial_absent_and_corrupt() {
    let mut f = nat();
    // A partial sum (CHECKSUM_PARTIAL from a transmit offload): recomputed fully.
    let mut b = seg("10.0.1.2:8000", SYN, b"");
    let m = meta(&b);
    let pseudo = wire::pseudo_sum(m.src, m.dst, 6, m.l4_len());
    wire::put16(b.as_mut_slice(), m.l4 + 16, pseudo);
    assert_eq!(f.process(T0, &mut b, P0), Verdict::Forward(P1));
    craft::checksums_ok(b.as_slice()).unwrap();
    assert_eq!(f.stats().csum_full, 1);
    // The link says partial: same result without detection.
    let mut b = seg("10.0.1.2:8001", SYN, b"");
    let m = meta(&b);
    wire::put16(b.as_mut_slice(), m.l4 + 16, wire::pseudo_sum(m.src, m.dst, 6, m.l4_len()));
    b.meta.csum = CsumState::Partial;
    f.process(T0, &mut b, P0);
    craft::checksums_ok(b.as_slice()).unwrap();
    // A corrupted segment stays corrupted (the receiver must drop it).
    let mut b = seg("10.0.1.2:8002", SYN, b"");
    let m = meta(&b);
    let c = be16(b.as_slice(), m.l4 + 16);
    wire::put16(b.as_mut_slice(), m.l4 + 16, c ^ 0x0101);
    f.process(T0, &mut b, P0);
    assert!(craft::checksums_ok(b.as_slice()).is_err());
    // UDP without a checksum keeps none.
    let mut u = FrameBuf::from_slice(&craft::udp(
        CLIENT_MAC,
        C_MAC,
        sa("10.0.1.2:9"),
        sa("10.0.0.100:53"),
        b"q",
    ));
    let m = meta(&u);
    wire::put16(u.as_mut_slice(), m.l4 + 6, 0);
    assert_eq!(f.process(T0, &mut u, P0), Verdict::Forward(P1));
    assert_eq!(be16(u.as_slice(), m.l4 + 6), 0);
    assert!(wire::ipv4_checksum_ok(u.as_slice(), L3));
}

#[test]
fn frames_for_other_macs_and_vip_junk_are_never_forwarded() {
    let mut f = nat();
    let mut b = FrameBuf::from_slice(&craft::tcp(
        CLIENT_MAC,
        [2, 9, 9, 9, 9, 9],
        sa("10.0.1.2:1"),
        sa("10.0.0.100:80"),
        SYN,
        1,
        &[],
        &[],
    ));
    assert_eq!(f.process(T0, &mut b, P0), Verdict::Host);
    assert_eq!(f.stats().other_mac, 1);
    let mut wrong_port = FrameBuf::from_slice(&craft::tcp(
        CLIENT_MAC,
        C_MAC,
        sa("10.0.1.2:1"),
        sa("10.0.0.100:81"),
        SYN,
        1,
        &[],
        &[],
    ));
    assert_eq!(f.process(T0, &mut wrong_port, P0), Verdict::Drop(DropReason::NoService));
    let mut gre = FrameBuf::from_slice(&craft::ip_frame(
        CLIENT_MAC,
        C_MAC,
        ip("10.0.1.2"),
        ip("10.0.0.100"),
        47,
        64,
        &[0; 8],
    ));
    assert_eq!(f.process(T0, &mut gre, P0), Verdict::Drop(DropReason::Unsupported));
    let mut short =
        FrameBuf::from_slice(&[&C_MAC[..], &CLIENT_MAC, &[8, 0, 0x45, 0, 0, 40]].concat());
    assert_eq!(f.process(T0, &mut short, P0), Verdict::Drop(DropReason::Malformed));
    assert_eq!(
        f.process(T0, &mut syn("10.0.1.2:1"), PortId(9)),
        Verdict::Drop(DropReason::BadPort)
    );
}

#[test]
fn echo_to_a_vip_is_answered() {
    let mut f = nat();
    let mut req = [8u8, 0, 0, 0, 0, 1, 0, 1].to_vec();
    req.extend_from_slice(b"ping");
    let mut b = FrameBuf::from_slice(&craft::ip_frame(
        CLIENT_MAC,
        C_MAC,
        ip("10.0.1.2"),
        ip("10.0.0.100"),
        1,
        64,
        &req,
    ));
    assert_eq!(f.process(T0, &mut b, P0), Verdict::Reply(P0));
    let m = meta(&b);
    assert_eq!((m.src, m.dst), (ip("10.0.0.100"), ip("10.0.1.2")));
    assert_eq!(b.as_slice()[m.l4], 0, "echo reply");
    craft::checksums_ok(b.as_slice()).unwrap();
}

#[test]
fn stats_print_like_ipvsadm_and_prometheus() {
    let mut f = nat();
    for port in 1..=3 {
        let mut b = syn(&format!("10.0.1.2:{port}"));
        f.process(T0, &mut b, P0);
    }
    let mut junk = seg("10.0.1.2:99", ACK, b"");
    f.process(T0, &mut junk, P0);
    let r = f.report();
    let text = r.ipvsadm();
    assert!(text.contains("TCP  10.0.0.100:80"), "{text}");
    let line = text.lines().find(|l| l.starts_with("TCP")).unwrap();
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(&cols[2..5], &["3", "3", "0"], "{line}");
    assert!(text.contains("  -> 10.0.2.11:80"));
    let prom = r.prometheus();
    assert!(
        prom.contains(
            "slb_l4_service_connections_total{proto=\"TCP\",service=\"10.0.0.100:80\"} 3"
        ),
        "{prom}"
    );
    assert!(prom.contains("slb_l4_service_drops_total{proto=\"TCP\",service=\"10.0.0.100:80\",reason=\"no_session\"} 1"));
    assert!(prom.contains("slb_l4_real_connections_total{proto=\"TCP\",service=\"10.0.0.100:80\",real=\"10.0.2.11:80\"} 2"));
    assert!(prom.contains("# TYPE slb_l4_sessions gauge\nslb_l4_sessions 3"));
}

#[test]
fn an_ipv4_session_costs_at_most_128_bytes() {
    let n = 1 << 16;
    let table =
        TableConfig { capacity: n, max_half_open: n, preallocate: true, ..TableConfig::default() };
    let mut f = build(Mode::FullNat, ForwarderConfig { table, ..Default::default() }, None);
    for i in 0..n {
        let client =
            format!("10.{}.{}.{}:{}", 1 + i / 65536, (i / 256) % 256, i % 256, 1024 + i % 50000);
        let mut b = FrameBuf::from_slice(&craft::udp(
            CLIENT_MAC,
            C_MAC,
            sa(&client),
            sa("10.0.0.100:53"),
            b"",
        ));
        assert_eq!(f.process(T0, &mut b, P0), Verdict::Forward(P1));
    }
    assert_eq!(f.sessions().len(), n);
    let per = f.sessions().memory_bytes() / n;
    assert!(per <= 128, "{per} bytes per session");
    assert!(size_of::<SessionData>() <= 16);
    // Each session's own data holds its local address and port (what its inbound packets
    // take as source, without reading the reverse key), equal to the reverse key's
    // destination.
    for v in f.sessions().iter() {
        let r = v.reverse.expect("a FULLNAT session has a reverse key");
        assert_eq!(v.session.ext.local(), Some((r.dst, r.dst_port)), "{}", v.forward);
    }
}

#[test]
fn sessions_expire_by_state_timeout() {
    let mut f = nat();
    let mut b = syn("10.0.1.2:10000");
    f.process(T0, &mut b, P0);
    let mut u = FrameBuf::from_slice(&craft::udp(
        CLIENT_MAC,
        C_MAC,
        sa("10.0.1.2:9"),
        sa("10.0.0.100:53"),
        b"q",
    ));
    f.process(T0, &mut u, P0);
    assert_eq!(f.expire(T0 + Duration::from_secs(59), 100), 0);
    assert_eq!(f.expire(T0 + Duration::from_secs(61), 100), 1, "SYN_RECV times out after 60 s");
    assert_eq!(f.expire(T0 + Duration::from_secs(301), 100), 1, "UDP after 300 s");
    assert!(f.sessions().is_empty());
}

#[test]
fn the_vip_filter_admits_every_service_address_and_few_others() {
    // The batch step looks packets to addresses the filter rejects up by reverse key alone, so
    // it must never reject a service's address; it is worth something only if it rejects most
    // client addresses.
    let mut f = nat();
    let rr = SchedulerConfig::new(SchedulerKind::RoundRobin);
    let vip6: IpAddr = "fd00::100".parse().unwrap();
    let svc = ServiceConfig::new(Protocol::Udp, vip6, 53, Mode::Nat, rr)
        .with_real("[fd00:2::11]:53".parse().unwrap());
    f.add_service(svc).unwrap();
    let vips: Vec<IpAddr> = f.services.list.iter().map(|s| s.cfg.vip).collect();
    assert!(vips.len() >= 2 && vips.contains(&vip6));
    assert!(vips.iter().all(|&v| f.services.may_be_vip(v)));
    let admitted = (0..10_000u32)
        .filter(|i| f.services.may_be_vip(Ipv4Addr::from(0x0a01_0000 + i).into()))
        .count();
    assert!(admitted < 1000, "{admitted} of 10000 client addresses pass the filter");
}
