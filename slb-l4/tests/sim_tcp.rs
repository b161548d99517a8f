//! Real TCP (smoltcp clients and servers) through the forwarder in every mode: handshake, bulk
//! transfer both ways byte for byte, FIN, RST; IPv4 and IPv6.

mod common;

use std::net::SocketAddr;

use common::*;
use slb_core::session::{ConnState, TableConfig};
use slb_l4::fwd::{DropReason, Mode};
use slb_l4::sim::SimNet;
use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp::State;

const BULK: usize = 300_000;

/// Opens a connection from client 0 to `vip`, moves BULK bytes each way, closes with FIN.
/// Returns the net and the server host that took the connection.
fn exchange(mode: Mode, vip: SocketAddr) -> (SimNet, usize) {
    let Topo { mut net, clients, servers } = topo(mode, 1, 2, TableConfig::default());
    let c = clients[0];
    let listeners: Vec<(usize, SocketHandle)> =
        servers.iter().map(|&s| (s, net.host(s).tcp_listen(80))).collect();
    let cs = net.host(c).tcp_connect(vip, 40000);
    assert!(
        net.run_until(LIMIT, |n| n.host(c).tcp(cs).state() == State::Established),
        "{mode:?} {vip}: handshake did not complete ({:?})",
        net.fwd.stats()
    );
    assert!(net.run_until(LIMIT, |n| find_state(n, &listeners, State::Established).is_some()));
    let (s, ss) = find_state(&mut net, &listeners, State::Established).expect("a server accepted");
    let up = pattern(BULK, 1);
    let down = pattern(BULK, 2);
    let (mut sent_up, mut sent_down) = (0, 0);
    let (mut got_up, mut got_down) = (Vec::new(), Vec::new());
    let done = net.run_until(LIMIT, |n| {
        let cl = n.host(c).tcp(cs);
        if sent_up < BULK && cl.can_send() {
            sent_up += cl.send_slice(&up[sent_up..]).unwrap();
        }
        if cl.can_recv() {
            cl.recv(|b| {
                got_down.extend_from_slice(b);
                (b.len(), ())
            })
            .unwrap();
        }
        let sv = n.host(s).tcp(ss);
        if sent_down < BULK && sv.can_send() {
            sent_down += sv.send_slice(&down[sent_down..]).unwrap();
        }
        if sv.can_recv() {
            sv.recv(|b| {
                got_up.extend_from_slice(b);
                (b.len(), ())
            })
            .unwrap();
        }
        got_up.len() == BULK && got_down.len() == BULK
    });
    assert!(done, "{mode:?} {vip}: transfer stalled at {} / {}", got_up.len(), got_down.len());
    assert!(got_up == up, "{mode:?}: client -> server bytes differ");
    assert!(got_down == down, "{mode:?}: server -> client bytes differ");
    // FIN from the client, then from the server.
    net.host(c).tcp(cs).close();
    assert!(net.run_until(LIMIT, |n| !n.host(s).tcp(ss).may_recv()), "server never saw the FIN");
    net.host(s).tcp(ss).close();
    assert!(
        net.run_until(LIMIT, |n| {
            matches!(n.host(c).tcp(cs).state(), State::TimeWait | State::Closed)
                && matches!(n.host(s).tcp(ss).state(), State::Closed | State::TimeWait)
        }),
        "{mode:?}: close did not complete: client {:?} server {:?}",
        net.host(c).tcp(cs).state(),
        net.host(s).tcp(ss).state()
    );
    (net, s)
}

fn check_session_closed(net: &SimNet) {
    let states: Vec<ConnState> = net
        .fwd
        .session_views()
        .filter(|v| v.forward.dst_port == 80)
        .map(|v| v.session.state())
        .collect();
    assert_eq!(states.len(), 1, "one TCP session");
    assert!(
        matches!(states[0], ConnState::TimeWait | ConnState::Close),
        "session ends closed, is {:?}",
        states[0]
    );
}

#[test]
fn nat_tcp_bulk_and_fin_v4() {
    let (net, _) = exchange(Mode::Nat, sa("10.0.0.100:80"));
    check_session_closed(&net);
    let st = net.fwd.stats();
    assert_eq!(st.drops_of(DropReason::NoSession), 0);
    assert_eq!(st.drops_of(DropReason::Malformed), 0);
}

#[test]
fn nat_tcp_bulk_and_fin_v6() {
    let (net, _) = exchange(Mode::Nat, sa("[fd00::100]:80"));
    check_session_closed(&net);
}

#[test]
fn fullnat_tcp_bulk_and_fin_v4_with_toa() {
    let (net, s) = exchange(Mode::FullNat, sa("10.0.0.100:80"));
    check_session_closed(&net);
    // The SYN and the handshake ACK the server received carry the client's address.
    let toas: Vec<_> = net
        .emitted
        .iter()
        .filter_map(|e| {
            let f = &e.frame;
            (f.len() > 54
                && f[12..14] == [8, 0]
                && f[23] == 6
                && f[30..34] == [10, 0, 2, 11 + (s as u8 - 1)])
            .then(|| {
                let hl = usize::from(f[46] >> 4) * 4;
                slb_l4::wire::parse_toa(&f[54..34 + hl])
            })
            .flatten()
        })
        .collect();
    assert_eq!(toas.len(), 2, "TOA in the SYN and the handshake ACK only");
    assert!(toas.iter().all(|a| *a == "10.0.1.2:40000".parse().unwrap()));
    assert_eq!(net.fwd.stats().toa_inserted, 2);
}

#[test]
fn fullnat_tcp_bulk_and_fin_v6() {
    let (net, _) = exchange(Mode::FullNat, sa("[fd00::100]:80"));
    check_session_closed(&net);
    assert_eq!(net.fwd.stats().toa_inserted, 2);
}

#[test]
fn dr_tcp_bulk_and_fin() {
    let (net, _) = exchange(Mode::Dr, sa("10.0.0.100:80"));
    // The director sees only the client's half: FIN + ACK from the client end the session.
    let st = net.fwd.session_views().find(|v| v.forward.dst_port == 80).map(|v| v.session.state());
    assert!(
        matches!(st, Some(ConnState::FinWait | ConnState::TimeWait | ConnState::Close)),
        "{st:?}"
    );
}

#[test]
fn rst_closes_the_session_in_every_mode() {
    for mode in [Mode::Nat, Mode::FullNat, Mode::Dr] {
        let Topo { mut net, clients, servers } = topo(mode, 1, 1, TableConfig::default());
        let (c, s) = (clients[0], servers[0]);
        let ss = net.host(s).tcp_listen(80);
        let cs = net.host(c).tcp_connect(sa("10.0.0.100:80"), 41000);
        assert!(net.run_until(LIMIT, |n| n.host(s).tcp(ss).state() == State::Established));
        net.host(c).tcp(cs).send_slice(b"hello").unwrap();
        assert!(net.run_until(LIMIT, |n| n.host(s).tcp(ss).recv_queue() == 5));
        net.host(c).tcp(cs).abort();
        assert!(
            net.run_until(LIMIT, |n| n.host(s).tcp(ss).state() != State::Established),
            "{mode:?}: the RST reached the server"
        );
        let st =
            net.fwd.session_views().find(|v| v.forward.dst_port == 80).unwrap().session.state();
        assert_eq!(st, ConnState::Close, "{mode:?}");
    }
}
