//! UDP through the forwarder in every mode: sessions made by the first datagram, replies from
//! the VIP, several flows spread over the servers.

mod common;

use std::net::SocketAddr;

use common::*;
use slb_core::session::{ConnState, TableConfig};
use slb_l4::fwd::Mode;
use smoltcp::socket::udp::UdpMetadata;
use smoltcp::wire::{IpAddress, IpEndpoint};

fn udp_round_trips(mode: Mode, vip: SocketAddr) {
    let Topo { mut net, clients, servers } = topo(mode, 1, 2, TableConfig::default());
    let c = clients[0];
    let srv: Vec<_> = servers.iter().map(|&s| (s, net.host(s).udp_bind(53))).collect();
    let flows = 16u16;
    let socks: Vec<_> = (0..flows).map(|i| net.host(c).udp_bind(20000 + i)).collect();
    let to = IpEndpoint::new(IpAddress::from(vip.ip()), vip.port());
    for (i, &s) in socks.iter().enumerate() {
        net.host(c).udp(s).send_slice(format!("q{i}").as_bytes(), to).unwrap();
    }
    let mut answers = vec![None; flows as usize];
    let mut per_server = vec![0usize; srv.len()];
    let ok = net.run_until(LIMIT, |n| {
        for (k, &(h, s)) in srv.iter().enumerate() {
            while let Ok((data, meta)) = n.host(h).udp(s).recv() {
                let mut reply = data.to_vec();
                reply.push(b'0' + k as u8);
                // Answer from the address the datagram was sent to (the VIP in DR).
                let back = UdpMetadata {
                    endpoint: meta.endpoint,
                    local_address: meta.local_address,
                    meta: Default::default(),
                };
                n.host(h).udp(s).send_slice(&reply, back).unwrap();
                per_server[k] += 1;
            }
        }
        for (i, &s) in socks.iter().enumerate() {
            if let Ok((data, meta)) = n.host(c).udp(s).recv() {
                assert_eq!(meta.endpoint, to, "{mode:?}: the reply comes from the VIP");
                answers[i] = Some(data.to_vec());
            }
        }
        answers.iter().all(Option::is_some)
    });
    assert!(
        ok,
        "{mode:?} {vip}: answers {answers:?} per server {per_server:?} {:?} to_fwd {}",
        net.fwd.stats(),
        net.to_fwd
    );
    for (i, a) in answers.iter().enumerate() {
        let a = a.as_ref().unwrap();
        assert_eq!(&a[..a.len() - 1], format!("q{i}").as_bytes());
    }
    assert!(
        per_server.iter().all(|&n| n > 0),
        "{mode:?}: flows spread over both servers: {per_server:?}"
    );
    let udp: Vec<_> = net.fwd.session_views().filter(|v| v.forward.dst_port == 53).collect();
    assert_eq!(udp.len(), flows as usize);
    assert!(udp.iter().all(|v| v.session.state() == ConnState::Udp));
    if mode != Mode::Dr {
        assert!(udp.iter().all(|v| v.session.packets_in == 1 && v.session.packets_out == 1));
    }
}

#[test]
fn nat_udp() {
    udp_round_trips(Mode::Nat, sa("10.0.0.100:53"));
    udp_round_trips(Mode::Nat, sa("[fd00::100]:53"));
}

#[test]
fn fullnat_udp() {
    udp_round_trips(Mode::FullNat, sa("10.0.0.100:53"));
    udp_round_trips(Mode::FullNat, sa("[fd00::100]:53"));
}

#[test]
fn dr_udp() {
    udp_round_trips(Mode::Dr, sa("10.0.0.100:53"));
}
