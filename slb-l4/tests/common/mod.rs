//! Shared helpers for the simulated-network tests: a forwarder in each mode with smoltcp clients
//! and servers around it.
#![allow(dead_code, unreachable_pub)] // each test file uses a different subset

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use slb_core::flow::Protocol;
use slb_core::rng::SplitMix64;
use slb_core::sched::{SchedulerConfig, SchedulerKind};
use slb_core::session::TableConfig;
use slb_l4::fwd::{Forwarder, ForwarderConfig, Mode, PortConfig, ServiceConfig};
use slb_l4::sim::{SimHost, SimNet};
use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp::State;

pub const VIP: &str = "10.0.0.100";
pub const VIP6: &str = "fd00::100";
pub const LADDR: &str = "10.0.2.100";
pub const LADDR6: &str = "fd00:2::100";
pub const FWD_C_MAC: [u8; 6] = [2, 0, 0, 0, 1, 1];
pub const FWD_S_MAC: [u8; 6] = [2, 0, 0, 0, 2, 1];

pub struct Topo {
    pub net: SimNet,
    pub clients: Vec<usize>,
    pub servers: Vec<usize>,
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

pub fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Forwarder + `n_clients` clients + `n_servers` servers for `mode`. NAT and FULLNAT: clients on
/// segment 0 (10.0.1.0/24, fd00:1::/64), servers on segment 1 (10.0.2.0/24, fd00:2::/64) routing
/// via the director in NAT. DR: one segment (10.0.2.0/24) for everyone, servers hold the VIP.
/// Services: TCP VIP:80 and UDP VIP:53, IPv4 and IPv6, round robin.
pub fn topo(mode: Mode, n_clients: usize, n_servers: usize, table: TableConfig) -> Topo {
    let cfg = ForwarderConfig { table, ..ForwarderConfig::default() };
    topo_with(mode, n_clients, n_servers, cfg, SchedulerKind::RoundRobin)
}

pub fn topo_with(
    mode: Mode,
    n_clients: usize,
    n_servers: usize,
    cfg: ForwarderConfig,
    kind: SchedulerKind,
) -> Topo {
    let mut fwd = Forwarder::new(cfg);
    let dr = mode == Mode::Dr;
    let p0 = if dr {
        fwd.add_port(
            PortConfig::new(FWD_C_MAC)
                .with_addr("10.0.2.1/24".parse().unwrap())
                .with_addr("fd00:2::1/64".parse().unwrap()),
        )
        .unwrap()
    } else {
        fwd.add_port(
            PortConfig::new(FWD_C_MAC)
                .with_addr("10.0.1.1/24".parse().unwrap())
                .with_addr("fd00:1::1/64".parse().unwrap()),
        )
        .unwrap()
    };
    let ports = if dr {
        vec![p0]
    } else {
        let p1 = fwd
            .add_port(
                PortConfig::new(FWD_S_MAC)
                    .with_addr("10.0.2.1/24".parse().unwrap())
                    .with_addr("fd00:2::1/64".parse().unwrap()),
            )
            .unwrap();
        vec![p0, p1]
    };
    if mode == Mode::FullNat {
        fwd.add_local_addr(ip(LADDR));
        fwd.add_local_addr(ip(LADDR6));
    }
    let server_ip = |i: usize| format!("10.0.2.{}", 11 + i);
    let server_ip6 = |i: usize| format!("fd00:2::{}", 11 + i);
    for (proto, port) in [(Protocol::Tcp, 80), (Protocol::Udp, 53)] {
        for (vip, ipf) in [(VIP, &server_ip as &dyn Fn(usize) -> String), (VIP6, &server_ip6)] {
            let mut svc =
                ServiceConfig::new(proto, ip(vip), port, mode, SchedulerConfig::new(kind));
            for i in 0..n_servers {
                svc = svc.with_real(SocketAddr::new(ip(&ipf(i)), port));
            }
            fwd.add_service(svc).unwrap();
        }
    }
    let mut net = SimNet::new(fwd, ports);
    let server_seg = if dr { 0 } else { 1 };
    let mut clients = Vec::new();
    for i in 0..n_clients {
        let mac = [2, 0, 0, 0, 1, 2 + i as u8];
        let h = if dr {
            let a = format!("10.0.2.{}/24", 2 + i);
            let a6 = format!("fd00:2::{}/64", 2 + i);
            let mut h =
                SimHost::new(&format!("c{i}"), mac, 0, &[&a, &a6], Some(ip("10.0.2.1")), i as u64);
            let _ = h.iface.routes_mut().add_default_ipv6_route("fd00:2::1".parse().unwrap());
            h
        } else {
            let a = format!("10.0.1.{}/24", 2 + i);
            let a6 = format!("fd00:1::{}/64", 2 + i);
            let mut h =
                SimHost::new(&format!("c{i}"), mac, 0, &[&a, &a6], Some(ip("10.0.1.1")), i as u64);
            let _ = h.iface.routes_mut().add_default_ipv6_route("fd00:1::1".parse().unwrap());
            h
        };
        clients.push(net.add(h));
    }
    let mut servers = Vec::new();
    for i in 0..n_servers {
        let mac = [2, 0, 0, 0, 2, 0x11 + i as u8];
        let a = format!("{}/24", server_ip(i));
        let a6 = format!("{}/64", server_ip6(i));
        let h = if dr {
            // The VIP on the server (as on `lo` with arp_ignore); one IPv4 + one IPv6 address
            // besides it would exceed smoltcp's address slots, so DR servers are IPv4 only.
            SimHost::new(
                &format!("s{i}"),
                mac,
                server_seg,
                &[&a, &format!("{VIP}/32")],
                None,
                100 + i as u64,
            )
        } else {
            let mut h = SimHost::new(
                &format!("s{i}"),
                mac,
                server_seg,
                &[&a, &a6],
                Some(ip("10.0.2.1")),
                100 + i as u64,
            );
            let _ = h.iface.routes_mut().add_default_ipv6_route("fd00:2::1".parse().unwrap());
            h
        };
        servers.push(net.add(h));
    }
    Topo { net, clients, servers }
}

/// Deterministic pseudo-random bytes.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    SplitMix64::new(seed).bytes(len)
}

/// Which server socket (host index, handle) reached `state` first.
pub fn find_state(
    net: &mut SimNet,
    socks: &[(usize, SocketHandle)],
    state: State,
) -> Option<(usize, SocketHandle)> {
    socks.iter().copied().find(|&(h, s)| net.host(h).tcp(s).state() == state)
}

pub const LIMIT: Duration = Duration::from_secs(60);
