//! A SYN flood through the forwarder leaves established connections intact: real TCP
//! connections (smoltcp) keep transferring byte for byte while spoofed SYNs overflow both the
//! half-open bound and the table's capacity.

mod common;

use std::net::{Ipv4Addr, SocketAddr};

use common::*;
use slb_core::session::{ConnState, TableConfig};
use slb_l4::craft::{self, flags::SYN};
use slb_l4::frame::FrameBuf;
use slb_l4::fwd::{DropReason, Mode, Verdict};
use smoltcp::socket::tcp::State;

#[test]
fn established_connections_survive_a_syn_flood() {
    // (capacity, half-open bound): the flood hits the half-open bound first, or the capacity.
    for (mode, capacity, max_half_open) in
        [(Mode::Nat, 64, 16), (Mode::FullNat, 64, 16), (Mode::Nat, 32, 32)]
    {
        let table = TableConfig { capacity, max_half_open, ..TableConfig::default() };
        let Topo { mut net, clients, servers } = topo(mode, 3, 1, table);
        let s = servers[0];
        let listeners: Vec<_> = (0..3).map(|_| net.host(s).tcp_listen(80)).collect();
        let conns: Vec<_> = clients
            .iter()
            .enumerate()
            .map(|(i, &c)| (c, net.host(c).tcp_connect(sa("10.0.0.100:80"), 30000 + i as u16)))
            .collect();
        assert!(net.run_until(LIMIT, |n| {
            conns.iter().all(|&(c, h)| n.host(c).tcp(h).state() == State::Established)
                && listeners
                    .iter()
                    .filter(|&&l| n.host(s).tcp(l).state() == State::Established)
                    .count()
                    == 3
        }));
        // The flood: 5000 SYNs from spoofed sources, straight into the forwarder.
        let mut verdicts = [0usize; 3];
        let now = net.now();
        for i in 0..5000u32 {
            let src =
                SocketAddr::from((Ipv4Addr::from(0x0b00_0000 + i), 1024 + (i % 60000) as u16));
            let f = craft::tcp(
                [2, 0, 0, 0, 1, 0xee],
                craft::PORT0_MAC,
                src,
                sa("10.0.0.100:80"),
                SYN,
                i,
                &[],
                b"",
            );
            let mut b = FrameBuf::from_slice(&f);
            match net.fwd.process(now, &mut b, slb_l4::fwd::PortId(0)) {
                Verdict::Forward(_) => verdicts[0] += 1,
                Verdict::Drop(DropReason::TableFull) => verdicts[1] += 1,
                _ => verdicts[2] += 1,
            }
        }
        let t = net.fwd.sessions();
        assert!(
            t.half_open() <= max_half_open.min(capacity - 3),
            "half-open bounded: {}",
            t.half_open()
        );
        assert!(t.len() <= capacity);
        assert!(t.stats().evicted_half_open >= 5000 - max_half_open as u64, "{:?}", t.stats());
        assert_eq!(
            verdicts[0], 5000,
            "{mode:?}: flood SYNs displace each other, never refused: {verdicts:?}"
        );
        let established =
            net.fwd.session_views().filter(|v| v.session.state() == ConnState::Established).count();
        assert_eq!(established, 3, "{mode:?}: established sessions kept");
        // The connections still carry data, both ways, byte for byte.
        let data = pattern(50_000, 9);
        let mut sent = [0usize; 3];
        let mut got = vec![Vec::new(); 3];
        let ok = net.run_until(LIMIT, |n| {
            for (k, &(c, h)) in conns.iter().enumerate() {
                let sock = n.host(c).tcp(h);
                if sent[k] < data.len() && sock.can_send() {
                    sent[k] += sock.send_slice(&data[sent[k]..]).unwrap();
                }
            }
            for (k, &l) in listeners.iter().enumerate() {
                let sock = n.host(s).tcp(l);
                if sock.can_recv() {
                    sock.recv(|b| {
                        got[k].extend_from_slice(b);
                        (b.len(), ())
                    })
                    .unwrap();
                }
            }
            got.iter().all(|g| g.len() == data.len())
        });
        assert!(
            ok,
            "{mode:?}: transfers after the flood: {:?}",
            got.iter().map(Vec::len).collect::<Vec<_>>()
        );
        assert!(got.iter().all(|g| *g == data));
    }
}
