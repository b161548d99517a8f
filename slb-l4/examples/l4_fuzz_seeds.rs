//! Writes the seed corpus of the `l4_frame` fuzz target from real frames: what smoltcp clients
//! and servers send through the forwarder in each mode (ARP, TCP handshake, data, FIN, UDP),
//! plus relayed ICMP errors, and batches in which later frames find the sessions earlier ones
//! made.
//!
//! `cargo run -p slb-l4 --features sim --example l4_fuzz_seeds -- fuzz/corpus/l4_frame`

use std::net::SocketAddr;

use slb_core::flow::Protocol;
use slb_core::sched::{SchedulerConfig, SchedulerKind};
use slb_l4::craft::{self, CLIENT_MAC, PORT0_MAC, PORT1_MAC, REAL_MACS, flags::SYN};
use slb_l4::fwd::{Forwarder, ForwarderConfig, Mode, PortConfig, PortId, ServiceConfig};
use slb_l4::sim::{SimHost, SimNet};
use smoltcp::socket::tcp::State;
use smoltcp::wire::{IpAddress, IpEndpoint};

fn record(mode: u8, frames: &[(PortId, Vec<u8>)]) -> Vec<u8> {
    let mut out = vec![mode];
    for (p, f) in frames {
        out.push(p.0 | (1 << 3));
        out.extend_from_slice(&(f.len() as u16).to_le_bytes());
        out.extend_from_slice(f);
    }
    out
}

fn sim(mode: Mode) -> Vec<(PortId, Vec<u8>)> {
    let mut fwd = Forwarder::new(ForwarderConfig::default());
    let p0 =
        fwd.add_port(PortConfig::new(PORT0_MAC).with_addr("10.0.1.1/24".parse().unwrap())).unwrap();
    let p1 =
        fwd.add_port(PortConfig::new(PORT1_MAC).with_addr("10.0.2.1/24".parse().unwrap())).unwrap();
    fwd.add_local_addr("10.0.2.100".parse().unwrap());
    for (proto, port) in [(Protocol::Tcp, 80), (Protocol::Udp, 53)] {
        let vip = "10.0.0.100".parse().unwrap();
        let s = ServiceConfig::new(
            proto,
            vip,
            port,
            mode,
            SchedulerConfig::new(SchedulerKind::RoundRobin),
        )
        .with_real(SocketAddr::new("10.0.2.11".parse().unwrap(), port));
        fwd.add_service(s).unwrap();
    }
    let mut net = SimNet::new(fwd, vec![p0, p1]);
    let gw = Some("10.0.1.1".parse().unwrap());
    let c = net.add(SimHost::new("c", CLIENT_MAC, 0, &["10.0.1.2/24"], gw, 1));
    let addrs: &[&str] =
        if mode == Mode::Dr { &["10.0.2.11/24", "10.0.0.100/32"] } else { &["10.0.2.11/24"] };
    let s =
        net.add(SimHost::new("s", REAL_MACS[0], 1, addrs, Some("10.0.2.1".parse().unwrap()), 2));
    let ls = net.host(s).tcp_listen(80);
    let us = net.host(s).udp_bind(53);
    let cs = net.host(c).tcp_connect("10.0.0.100:80".parse().unwrap(), 40000);
    let cu = net.host(c).udp_bind(5353);
    let vip = IpEndpoint::new(IpAddress::v4(10, 0, 0, 100), 53);
    net.host(c).udp(cu).send_slice(b"query", vip).unwrap();
    let limit = std::time::Duration::from_secs(5);
    net.run_until(limit, |n| n.host(c).tcp(cs).state() == State::Established);
    // In DR the server here answers via the director, which does not forward replies: the
    // handshake stays open and the frames up to there are the seeds.
    let _ = net.host(c).tcp(cs).send_slice(b"GET / HTTP/1.0\r\n\r\n");
    net.run_until(limit, |n| n.host(s).tcp(ls).recv_queue() > 0);
    let _ = net.host(s).tcp(ls).send_slice(b"HTTP/1.0 200 OK\r\n\r\nhello");
    net.host(c).tcp(cs).close();
    net.run_until(limit, |n| !n.host(s).tcp(ls).may_recv());
    net.host(s).tcp(ls).close();
    let _ = us;
    net.run_until(limit, |n| n.host(c).tcp(cs).state() == State::TimeWait);
    net.into_devices().inputs
}

fn main() -> std::io::Result<()> {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "fuzz/corpus/l4_frame".into());
    std::fs::create_dir_all(&dir)?;
    let mut n = 0;
    for (i, mode) in [Mode::Nat, Mode::FullNat, Mode::Dr].into_iter().enumerate() {
        let frames = sim(mode);
        std::fs::write(format!("{dir}/sim-{mode:?}"), record(i as u8, &frames))?;
        for (k, f) in frames.iter().take(6).enumerate() {
            std::fs::write(
                format!("{dir}/single-{mode:?}-{k}"),
                record(i as u8, std::slice::from_ref(f)),
            )?;
        }
        n += 7;
    }
    // A SYN, then an ICMP "fragmentation needed" about it from the server side.
    let client: SocketAddr = "10.0.1.2:1000".parse().unwrap();
    let mut f = craft::forwarder(Mode::Nat, ForwarderConfig::default());
    let syn = craft::tcp(
        CLIENT_MAC,
        PORT0_MAC,
        client,
        "10.0.0.100:80".parse().unwrap(),
        SYN,
        1,
        &[2, 4, 5, 180],
        b"",
    );
    let mut b = slb_l4::frame::FrameBuf::from_slice(&syn);
    f.process(slb_core::time::Instant::ZERO, &mut b, PortId(0));
    let icmp = craft::icmp_error(
        REAL_MACS[0],
        PORT1_MAC,
        "10.0.2.254".parse().unwrap(),
        client.ip(),
        3,
        4,
        1400,
        b.as_slice(),
        200,
    );
    std::fs::write(
        format!("{dir}/icmp-relay"),
        record(0, &[(PortId(0), syn.clone()), (PortId(1), icmp)]),
    )?;
    // One batch (frames of one port in a row): a flow's first datagram and its second, a SYN
    // and its retransmission, so later frames of the batch find sessions that earlier ones made.
    let vip53 = "10.0.0.100:53".parse().unwrap();
    let udp = craft::udp(CLIENT_MAC, PORT0_MAC, client, vip53, b"query");
    for (i, mode) in [Mode::Nat, Mode::FullNat, Mode::Dr].into_iter().enumerate() {
        let frames: Vec<(PortId, Vec<u8>)> =
            [&udp, &udp, &syn, &syn].into_iter().map(|f| (PortId(0), f.clone())).collect();
        std::fs::write(format!("{dir}/batch-{mode:?}"), record(i as u8, &frames))?;
    }
    println!("wrote {} seeds to {dir}", n + 4);
    Ok(())
}
