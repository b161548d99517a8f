//! Simulated clusters: two or three directors (Forwarder + slb-sync Engine each, on the sync
//! fabric) between smoltcp clients and servers. A TCP connection established through one
//! director keeps transferring, byte for byte in both directions, after that director dies and
//! its packets arrive at another one, in FULLNAT (replies to the dead node's local address are
//! taken over with gratuitous ARP), DR (nothing to take over) and NAT active-standby (floating
//! gateway addresses); and a director that restarts gets the table by resync before it takes
//! traffic.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use common::pattern;
use slb_core::flow::Protocol;
use slb_core::sched::{SchedulerConfig, SchedulerKind};
use slb_core::time::Instant;
use slb_l4::cluster::sim::{ClusterNet, SimDirector, Steer};
use slb_l4::cluster::{AddrGroup, Cluster, ClusterConfig};
use slb_l4::fwd::{Forwarder, ForwarderConfig, Mode, PortConfig, ServiceConfig};
use slb_l4::sim::SimHost;
use slb_sync::sim::LinkModel;
use slb_sync::{ClusterKey, Config, Engine, NodeId};
use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp::State;

const VIP: &str = "10.0.0.100:80";
const LIMIT: Duration = Duration::from_secs(30);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn local_ip(i: usize) -> IpAddr {
    ip(&format!("10.0.2.{}", 21 + i))
}

const FLOAT_UP: &str = "10.0.1.254";
const FLOAT_DOWN: &str = "10.0.2.254";

fn server_ip(i: usize) -> String {
    format!("10.0.2.{}", 101 + i)
}

fn engine(i: usize, epoch: u32, now: Instant) -> Engine {
    let mut c = Config::new(7, NodeId(i as u32 + 1), epoch, ClusterKey::derive(b"sim cluster"));
    c.heartbeat_interval = Duration::from_millis(100);
    c.peer_dead_after = 3;
    Engine::new(c, now).unwrap()
}

fn director(mode: Mode, i: usize, n: usize, n_servers: usize) -> SimDirector {
    let mut fwd = Forwarder::new(ForwarderConfig::default());
    fwd.add_port(
        PortConfig::new([2, 0, 0, 1, 0, i as u8 + 1])
            .with_addr(format!("10.0.1.{}/24", 11 + i).parse().unwrap()),
    )
    .unwrap();
    fwd.add_port(
        PortConfig::new([2, 0, 0, 2, 0, i as u8 + 1])
            .with_addr(format!("10.0.2.{}/24", 11 + i).parse().unwrap()),
    )
    .unwrap();
    if mode == Mode::FullNat {
        fwd.add_local_addr(local_ip(i));
    }
    let sched = SchedulerConfig::new(SchedulerKind::Maglev { table_size: 251 });
    let mut svc = ServiceConfig::new(Protocol::Tcp, ip("10.0.0.100"), 80, mode, sched);
    for s in 0..n_servers {
        svc = svc.with_real(format!("{}:80", server_ip(s)).parse().unwrap());
    }
    fwd.add_service(svc).unwrap();
    let mut cfg = ClusterConfig::new(NodeId(i as u32 + 1));
    cfg.groups = match mode {
        Mode::FullNat => (0..n)
            .map(|j| AddrGroup { home: Some(NodeId(j as u32 + 1)), addrs: vec![local_ip(j)] })
            .collect(),
        Mode::Nat => vec![AddrGroup { home: None, addrs: vec![ip(FLOAT_UP), ip(FLOAT_DOWN)] }],
        Mode::Dr => Vec::new(),
    };
    let cluster = Cluster::new(cfg, &mut fwd);
    SimDirector { fwd, cluster, segments: vec![0, 1] }
}

struct Lab {
    net: ClusterNet,
    mode: Mode,
    n: usize,
    servers: usize,
    client: usize,
    listeners: Vec<(usize, SocketHandle)>,
}

fn lab(mode: Mode, n: usize, seed: u64) -> Lab {
    let mut net = ClusterNet::new(seed, LinkModel::default(), vec![ip("10.0.1.1"), ip("10.0.2.1")]);
    for i in 0..n {
        let e = engine(i, 1, net.now());
        net.add_director(e, director(mode, i, n, 2));
    }
    let client = net.add_host(
        SimHost::new("c", [2, 0, 0, 0, 1, 2], 0, &["10.0.1.2/24"], Some(ip("10.0.1.1")), 1),
        Some(ip("10.0.1.1")),
    );
    let mut listeners = Vec::new();
    for s in 0..2 {
        let a = format!("{}/24", server_ip(s));
        let (addrs, gw): (Vec<&str>, &str) = match mode {
            Mode::Dr => (vec![&a, "10.0.0.100/32"], "10.0.2.1"),
            Mode::Nat => (vec![&a], FLOAT_DOWN),
            Mode::FullNat => (vec![&a], "10.0.2.1"),
        };
        let h = SimHost::new(
            &format!("s{s}"),
            [2, 0, 0, 0, 2, 0x11 + s as u8],
            1,
            &addrs,
            Some(ip(gw)),
            100 + s as u64,
        );
        let h = net.add_host(h, Some(ip(gw)));
        let l = net.host(h).tcp_listen(80);
        listeners.push((h, l));
    }
    net.steer = match mode {
        Mode::Nat => Steer::Via(ip(FLOAT_UP)),
        _ => Steer::Ecmp(vec![0]),
    };
    assert!(
        net.run_until(LIMIT, |n| (0..n.fabric.len()).all(|i| n.director(i).cluster.is_ready())),
        "directors never ready"
    );
    if mode == Mode::Nat {
        // At a cold start the standby may be ready first and hold the floating addresses
        // until the active node is: wait for the hosts to see the active node's MAC.
        let active = |n: &ClusterNet, p: u8| n.director(0).fwd.port_mac(slb_l4::fwd::PortId(p));
        assert!(net.run_until(LIMIT, |n| {
            n.director(1).cluster.held_addrs().iter().all(|a| *a == ip("10.0.0.100"))
                && n.resolved(0, ip(FLOAT_UP)) == active(n, 0)
                && n.resolved(1, ip(FLOAT_DOWN)) == active(n, 1)
        }));
    }
    Lab { net, mode, n, servers: 2, client, listeners }
}

/// A client connection and the server socket that accepted it, with the bytes moved so far.
struct Conn {
    cs: SocketHandle,
    server: (usize, SocketHandle),
    up: Vec<u8>,
    down: Vec<u8>,
    sent_up: usize,
    sent_down: usize,
    got_up: Vec<u8>,
    got_down: Vec<u8>,
}

impl Lab {
    fn connect(&mut self, port: u16, seed: u64) -> Conn {
        let (c, vip) = (self.client, VIP.parse::<SocketAddr>().unwrap());
        let cs = self.net.host(c).tcp_connect(vip, port);
        assert!(
            self.net.run_until(LIMIT, |n| n.host(c).tcp(cs).state() == State::Established),
            "{:?}: handshake did not complete",
            self.mode
        );
        let ls = self.listeners.clone();
        let mut server = None;
        assert!(self.net.run_until(LIMIT, |n| {
            server =
                ls.iter().copied().find(|&(h, s)| n.host(h).tcp(s).state() == State::Established);
            server.is_some()
        }));
        let server = server.unwrap();
        // The listener became the connection: listen again on that server for later clients.
        let l = self.net.host(server.0).tcp_listen(80);
        for x in &mut self.listeners {
            if *x == server {
                *x = (server.0, l);
            }
        }
        let big = 4 << 20;
        Conn {
            cs,
            server,
            up: pattern(big, seed),
            down: pattern(big, seed + 1),
            sent_up: 0,
            sent_down: 0,
            got_up: Vec::new(),
            got_down: Vec::new(),
        }
    }

    /// Moves `bytes` more each way and checks every byte.
    fn transfer(&mut self, conn: &mut Conn, bytes: usize) {
        let (want_up, want_down) = (conn.got_up.len() + bytes, conn.got_down.len() + bytes);
        let c = self.client;
        let done = self.net.run_until(LIMIT, |n| {
            let cl = n.host(c).tcp(conn.cs);
            if conn.sent_up < want_up && cl.can_send() {
                conn.sent_up += cl.send_slice(&conn.up[conn.sent_up..want_up]).unwrap();
            }
            if cl.can_recv() {
                cl.recv(|b| {
                    conn.got_down.extend_from_slice(b);
                    (b.len(), ())
                })
                .unwrap();
            }
            let sv = n.host(conn.server.0).tcp(conn.server.1);
            if conn.sent_down < want_down && sv.can_send() {
                conn.sent_down += sv.send_slice(&conn.down[conn.sent_down..want_down]).unwrap();
            }
            if sv.can_recv() {
                sv.recv(|b| {
                    conn.got_up.extend_from_slice(b);
                    (b.len(), ())
                })
                .unwrap();
            }
            conn.got_up.len() >= want_up && conn.got_down.len() >= want_down
        });
        assert!(
            done,
            "{:?}: transfer stalled at {} / {} (client {:?}, net {:?})",
            self.mode,
            conn.got_up.len(),
            conn.got_down.len(),
            self.net.host(c).tcp(conn.cs).state(),
            self.net.stats
        );
        assert!(
            conn.got_up[..] == conn.up[..conn.got_up.len()],
            "{:?}: client -> server bytes differ",
            self.mode
        );
        assert!(
            conn.got_down[..] == conn.down[..conn.got_down.len()],
            "{:?}: server -> client bytes differ",
            self.mode
        );
    }

    /// Waits until every live director other than `owner` holds the flow as a peer session.
    fn wait_synced(&mut self, owner: usize) {
        let n = self.n;
        assert!(
            self.net.run_until(LIMIT, |net| {
                (0..n)
                    .filter(|&i| i != owner && net.is_up(i))
                    .all(|i| net.director(i).fwd.peer_sessions() == 1)
            }),
            "{:?}: the session never reached the other directors",
            self.mode
        );
    }
}

fn failover(mode: Mode, n: usize) -> Lab {
    let mut lab = lab(mode, n, 11);
    let mut conn = lab.connect(40000, 1);
    lab.transfer(&mut conn, 100_000);
    lab.wait_synced(0);
    lab.net.kill(0);
    if mode != Mode::Nat {
        lab.net.steer = Steer::Ecmp((1..n).collect());
    }
    lab.transfer(&mut conn, 300_000);
    // A connection opened after the failover goes through the survivors.
    let mut late = lab.connect(40001, 7);
    lab.transfer(&mut late, 50_000);
    let _ = lab.servers;
    lab
}

#[test]
fn fullnat_connection_survives_its_director_dying() {
    let lab = failover(Mode::FullNat, 3);
    // Node 2 (the lowest live node) answers for node 1's local address now; node 3 does not.
    assert!(lab.net.director(1).cluster.held_addrs().contains(&local_ip(0)));
    assert!(!lab.net.director(2).cluster.held_addrs().contains(&local_ip(0)));
    assert_eq!(
        lab.net.resolved(1, local_ip(0)),
        lab.net.director(1).fwd.port_mac(slb_l4::fwd::PortId(1))
    );
    assert!(lab.net.stats.garps > 0);
    let st = lab.net.director(1).cluster.stats();
    assert_eq!(st.peer_downs, 1);
    assert!(lab.net.director(1).fwd.sync_counters().installed >= 1);
}

#[test]
fn dr_connection_survives_its_director_dying() {
    let lab = failover(Mode::Dr, 2);
    assert!(lab.net.director(1).cluster.held_addrs().iter().all(|a| *a == ip("10.0.0.100")));
    assert_eq!(
        lab.net.director(1).fwd.peer_sessions(),
        0,
        "the survivor's traffic claimed the flow"
    );
}

#[test]
fn nat_standby_takes_the_floating_addresses_and_the_connection() {
    let lab = failover(Mode::Nat, 2);
    let held = lab.net.director(1).cluster.held_addrs();
    assert!(held.contains(&ip(FLOAT_UP)) && held.contains(&ip(FLOAT_DOWN)), "{held:?}");
    let standby_mac = |p| lab.net.director(1).fwd.port_mac(slb_l4::fwd::PortId(p));
    assert_eq!(lab.net.resolved(0, ip(FLOAT_UP)), standby_mac(0));
    assert_eq!(lab.net.resolved(1, ip(FLOAT_DOWN)), standby_mac(1));
}

/// Node 3 restarts, receives the table by resync (it never saw the flow), and only answers for
/// its own local address once ready. Then node 1 dies: the client side of the flow goes to node
/// 3, the replies to node 1's local address to node 2, and the stream goes on.
#[test]
fn a_restarted_director_gets_the_table_before_it_takes_traffic() {
    let mut lab = lab(Mode::FullNat, 3, 5);
    let mut conn = lab.connect(40000, 3);
    lab.transfer(&mut conn, 50_000);
    lab.wait_synced(0);
    lab.net.kill(2);
    assert!(
        lab.net.run_until(LIMIT, |n| n.director(0).cluster.held_addrs().contains(&local_ip(2))),
        "node 1 takes node 3's local address while it is down"
    );
    let e = engine(2, 2, lab.net.now());
    let d = director(Mode::FullNat, 2, 3, 2);
    assert_eq!(d.fwd.sessions().len(), 0);
    lab.net.restart(2, e, d);
    let mut answered_early = false;
    let ready = lab.net.run_until(LIMIT, |n| {
        let d = n.director(2);
        answered_early |= d.fwd.answers(local_ip(2)) && !d.cluster.is_ready();
        d.cluster.is_ready()
    });
    assert!(ready && !answered_early, "ready {ready}, answered before ready {answered_early}");
    assert_eq!(lab.net.director(2).fwd.peer_sessions(), 1, "the resync brought the session");
    assert!(
        lab.net.run_until(LIMIT, |n| !n.director(0).cluster.held_addrs().contains(&local_ip(2))),
        "node 1 gives node 3's address back once node 3 is ready"
    );
    assert!(lab.net.run_until(LIMIT, |n| n.resolved(1, local_ip(2))
        == n.director(2).fwd.port_mac(slb_l4::fwd::PortId(1))));
    lab.net.kill(0);
    lab.net.steer = Steer::Ecmp(vec![2]);
    lab.transfer(&mut conn, 200_000);
    assert!(lab.net.director(1).cluster.held_addrs().contains(&local_ip(0)));
    assert!(lab.net.director(2).fwd.sync_counters().installed >= 1);
}
