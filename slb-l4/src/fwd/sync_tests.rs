//! Tests of the replication hooks with crafted frames: changes out, installs in, addresses.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use slb_core::flow::{FlowKey, Protocol};
use slb_core::session::ConnState;
use slb_core::time::Instant;

use super::*;
use crate::craft::{self, CLIENT_MAC, PORT0_MAC, PORT1_MAC, REAL_MACS, flags::*};
use crate::fwd::{ForwarderConfig, Verdict};
use crate::wire::{self, Kind};

const P0: PortId = PortId(0);
const P1: PortId = PortId(1);
const VIP: &str = "10.0.0.100:80";
const CLIENT: &str = "10.0.1.2:40000";

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn from_client(flag_bits: u8, payload: &[u8]) -> FrameBuf {
    FrameBuf::from_slice(&craft::tcp(
        CLIENT_MAC,
        PORT0_MAC,
        sa(CLIENT),
        sa(VIP),
        flag_bits,
        7,
        &[],
        payload,
    ))
}

fn endpoints(f: &FrameBuf) -> (SocketAddr, SocketAddr) {
    match wire::parse(f.as_slice()) {
        Ok(Kind::Ip(m)) => (SocketAddr::new(m.src, m.sport), SocketAddr::new(m.dst, m.dport)),
        other => panic!("not IP: {other:?}"),
    }
}

fn drain(f: &mut Forwarder) -> Vec<SessionChange> {
    std::iter::from_fn(|| f.poll_session_change()).collect()
}

/// SYN, handshake ACK and one data segment through `f`; returns the last frame as forwarded.
fn open(f: &mut Forwarder, t: Instant) -> FrameBuf {
    let mut last = FrameBuf::default();
    for (fl, data) in [(SYN, &b""[..]), (ACK, &b""[..]), (ACK | PSH, &b"hello"[..])] {
        last = from_client(fl, data);
        assert_eq!(f.process(t, &mut last, P0), Verdict::Forward(P1));
    }
    last
}

#[test]
fn changes_report_state_changes_and_the_third_client_packet() {
    let mut f = craft::forwarder(Mode::FullNat, ForwarderConfig::default());
    f.enable_session_changes(ChangeFilter::default(), 16);
    let _ = open(&mut f, Instant::ZERO);
    let c = drain(&mut f);
    assert_eq!(c.len(), 2, "{c:?}");
    assert_eq!((c[0].previous, c[0].state), (Some(ConnState::SynRecv), ConnState::Established));
    assert_eq!((c[1].packets_in, c[1].state), (3, ConnState::Established));
    assert_eq!(c[1].client_mac, CLIENT_MAC);
    assert!(c[1].local().is_some_and(|l| l.ip() == "10.0.2.100".parse::<IpAddr>().unwrap()));
    assert!(!c[1].from_peer && !c[1].removed);
    // Packets 4..52 are not reported, 53 is.
    for _ in 4..=53 {
        let mut b = from_client(ACK, b"x");
        f.process(Instant::ZERO, &mut b, P0);
    }
    let c = drain(&mut f);
    assert_eq!(c.iter().map(|c| c.packets_in).collect::<Vec<_>>(), vec![53]);
    // Expiry of a locally owned session reports its removal.
    let later = Instant::ZERO + Duration::from_secs(1000);
    assert_eq!(f.expire(later, 1024), 1);
    let c = drain(&mut f);
    assert!(c.len() == 1 && c[0].removed, "{c:?}");
}

#[test]
fn the_change_queue_is_bounded() {
    let mut f = craft::forwarder(Mode::Nat, ForwarderConfig::default());
    f.enable_session_changes(ChangeFilter { threshold: 1, period: 1 }, 4);
    for _ in 0..10 {
        let mut b = from_client(SYN, b"");
        f.process(Instant::ZERO, &mut b, P0);
    }
    assert_eq!(drain(&mut f).len(), 4);
    assert_eq!(f.sync_counters().changes_dropped, 6);
}

/// A FULLNAT session opened on `a` is installed on `b`; `b` then forwards both directions
/// exactly as `a` did, strict TCP notwithstanding.
#[test]
fn an_installed_fullnat_session_forwards_both_ways_on_another_node() {
    let mut a = craft::forwarder(Mode::FullNat, ForwarderConfig::default());
    a.enable_session_changes(ChangeFilter::default(), 16);
    let at_a = open(&mut a, Instant::ZERO);
    let c = *drain(&mut a).last().unwrap();
    let mut b = craft::forwarder(Mode::FullNat, ForwarderConfig::default());
    // Without the session, strict TCP drops a mid-stream segment.
    let mut seg = from_client(ACK | PSH, b"more");
    assert!(matches!(b.process(Instant::ZERO, &mut seg, P0), Verdict::Drop(_)));
    let t = Instant::from_secs(5);
    let inst = SessionInstall {
        forward: c.forward,
        real: c.real,
        local: c.local(),
        mode: Mode::FullNat,
        state: c.state,
        expires: t + Duration::from_secs(900),
        client_mac: Some(c.client_mac),
    };
    assert_eq!(b.install_session(t, &inst), Ok(Installed::New));
    assert_eq!(b.peer_sessions(), 1);
    let mut seg = from_client(ACK | PSH, b"more");
    assert_eq!(b.process(t, &mut seg, P0), Verdict::Forward(P1));
    assert_eq!(endpoints(&seg), endpoints(&at_a), "same local address, port and real server");
    assert_eq!(b.peer_sessions(), 0, "client traffic claims the session");
    // The real server's reply to the local address goes back to the client, with the MAC sync
    // carried.
    let (laddr, real) = endpoints(&at_a);
    let mut reply =
        FrameBuf::from_slice(&craft::tcp(REAL_MACS[0], PORT1_MAC, real, laddr, ACK, 9, &[], b"ok"));
    assert_eq!(b.process(t, &mut reply, P1), Verdict::Forward(P0));
    assert_eq!(endpoints(&reply), (sa(VIP), sa(CLIENT)));
    assert_eq!(&reply.as_slice()[0..6], &CLIENT_MAC);
    // Installing again updates; a peer session with another target is replaced; a local one
    // is kept.
    assert_eq!(b.install_session(t, &inst), Ok(Installed::Updated));
    let other = SessionInstall { real: sa("10.0.2.12:80"), ..inst };
    assert_eq!(b.install_session(t, &other), Ok(Installed::Replaced));
    let mut seg = from_client(ACK, b"");
    b.process(t, &mut seg, P0);
    let again = SessionInstall { real: sa("10.0.2.11:80"), ..inst };
    assert_eq!(b.install_session(t, &again), Err(InstallError::LocalConflict));
    assert!(!b.remove_peer_session(&c.forward, t), "local traffic owns it now");
}

#[test]
fn installs_are_checked_against_the_configuration() {
    let mut f = craft::forwarder(Mode::Nat, ForwarderConfig::default());
    let key = FlowKey::new(Protocol::Tcp, sa(CLIENT), sa(VIP));
    let base = SessionInstall {
        forward: key,
        real: sa("10.0.2.11:80"),
        local: None,
        mode: Mode::Nat,
        state: ConnState::Established,
        expires: Instant::from_secs(100),
        client_mac: None,
    };
    let t = Instant::from_secs(1);
    assert_eq!(
        f.install_session(t, &SessionInstall { mode: Mode::Dr, ..base }),
        Err(InstallError::ModeMismatch)
    );
    assert_eq!(
        f.install_session(t, &SessionInstall { real: sa("10.0.2.99:80"), ..base }),
        Err(InstallError::UnknownReal)
    );
    let other_vip = FlowKey::new(Protocol::Tcp, sa(CLIENT), sa("10.0.0.200:80"));
    assert_eq!(
        f.install_session(t, &SessionInstall { forward: other_vip, ..base }),
        Err(InstallError::NoService)
    );
    assert_eq!(f.install_session(Instant::from_secs(100), &base), Err(InstallError::Expired));
    assert_eq!(f.install_session(t, &base), Ok(Installed::New));
    // The NAT reply key exists: the real server's answer finds the session. No client MAC came
    // with it, so the client's next hop is resolved first (the reply is held meanwhile).
    let mut reply = FrameBuf::from_slice(&craft::tcp(
        REAL_MACS[0],
        PORT1_MAC,
        sa("10.0.2.11:80"),
        sa(CLIENT),
        ACK,
        9,
        &[],
        b"ok",
    ));
    assert_eq!(f.process(t, &mut reply, P1), Verdict::Solicit(P0));
    let mut who = FrameBuf::from_slice(&craft::arp_request(
        CLIENT_MAC,
        Ipv4Addr::new(10, 0, 1, 2),
        Ipv4Addr::new(10, 0, 1, 1),
    ));
    assert_eq!(f.process(t, &mut who, P0), Verdict::Reply(P0));
    let mut out = FrameBuf::default();
    assert_eq!(f.poll_transmit(&mut out), Some(P0));
    assert_eq!(endpoints(&out), (sa(VIP), sa(CLIENT)));
    assert!(f.remove_peer_session(&key, t));
    assert_eq!(f.sync_counters().install_refused, 4);
    let mut fnat = craft::forwarder(Mode::FullNat, ForwarderConfig::default());
    assert_eq!(
        fnat.install_session(t, &SessionInstall { mode: Mode::FullNat, ..base }),
        Err(InstallError::NoLocal)
    );
}

#[test]
fn quiet_adopted_and_released_addresses() {
    let mut f = craft::forwarder(Mode::FullNat, ForwarderConfig::default());
    let arp = |target: [u8; 4]| {
        FrameBuf::from_slice(&craft::arp_request(
            REAL_MACS[0],
            Ipv4Addr::new(10, 0, 2, 11),
            Ipv4Addr::from(target),
        ))
    };
    let local: IpAddr = "10.0.2.100".parse().unwrap();
    f.set_quiet(local, true);
    assert_eq!(f.process(Instant::ZERO, &mut arp([10, 0, 2, 100]), P1), Verdict::Host);
    assert!(f.announcements().iter().all(|(_, b)| b.as_slice()[38..42] != [10, 0, 2, 100]));
    f.set_quiet(local, false);
    assert_eq!(f.process(Instant::ZERO, &mut arp([10, 0, 2, 100]), P1), Verdict::Reply(P1));
    // Another node's local address, taken over and given back.
    let theirs: IpAddr = "10.0.2.101".parse().unwrap();
    assert_eq!(f.process(Instant::ZERO, &mut arp([10, 0, 2, 101]), P1), Verdict::Host);
    f.adopt_addr(theirs);
    assert_eq!(f.process(Instant::ZERO, &mut arp([10, 0, 2, 101]), P1), Verdict::Reply(P1));
    let garps = f.announcements_for(&[theirs]);
    assert_eq!(garps.len(), 2, "both ports answer ARP for it");
    assert!(
        !f.own_addrs().contains(&theirs)
            && f.local_addrs() == vec![local, "fd00:2::100".parse().unwrap()]
    );
    f.release_addr(theirs);
    assert_eq!(f.process(Instant::ZERO, &mut arp([10, 0, 2, 101]), P1), Verdict::Host);
    f.release_addr(local);
    assert!(f.answers(local), "release never drops the forwarder's own addresses");
}

#[test]
fn a_peer_session_keeps_the_real_port_it_carries() {
    // An all-ports service (port 0) on a real of port 0: a local flow goes to the client's
    // destination port, found in the real's record (REV_SRC_IS_REAL); a session a peer installed
    // with another port keeps that port, read from its reverse key.
    use slb_core::sched::{SchedulerConfig, SchedulerKind};

    use crate::fwd::ServiceConfig;
    let mut f = craft::forwarder(Mode::Nat, ForwarderConfig::default());
    let vip: IpAddr = "10.0.0.200".parse().unwrap();
    let rr = SchedulerConfig::new(SchedulerKind::RoundRobin);
    let svc = ServiceConfig::new(Protocol::Tcp, vip, 0, Mode::Nat, rr).with_real(sa("10.0.2.11:0"));
    f.add_service(svc).unwrap();
    let t = Instant::from_secs(1);
    let seg = |client: &str, flag_bits: u8| {
        FrameBuf::from_slice(&craft::tcp(
            CLIENT_MAC,
            PORT0_MAC,
            sa(client),
            sa("10.0.0.200:8080"),
            flag_bits,
            7,
            &[],
            b"",
        ))
    };
    for fl in [SYN, ACK] {
        let mut local = seg("10.0.1.2:40000", fl);
        assert_eq!(f.process(t, &mut local, P0), Verdict::Forward(P1));
        assert_eq!(endpoints(&local), (sa("10.0.1.2:40000"), sa("10.0.2.11:8080")));
    }
    let inst = SessionInstall {
        forward: FlowKey::new(Protocol::Tcp, sa("10.0.1.3:40000"), sa("10.0.0.200:8080")),
        real: sa("10.0.2.11:9090"),
        local: None,
        mode: Mode::Nat,
        state: ConnState::Established,
        expires: Instant::from_secs(100),
        client_mac: None,
    };
    assert_eq!(f.install_session(t, &inst), Ok(Installed::New));
    let mut synced = seg("10.0.1.3:40000", ACK);
    assert_eq!(f.process(t, &mut synced, P0), Verdict::Forward(P1));
    assert_eq!(endpoints(&synced), (sa("10.0.1.3:40000"), sa("10.0.2.11:9090")));
}
