//! Helpers shared by the integration tests.
#![allow(dead_code)] // each test binary uses a different subset
#![allow(
    clippy::disallowed_methods,
    reason = "real-socket tests drive the engine with the wall clock, like a driver"
)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use slb_core::flow::Protocol;
use slb_core::session::ConnState;
use slb_core::time::Instant;
use slb_sync::{
    ClusterKey, Config, Engine, ForwardMode, NodeId, SessionEvent, SessionKey, SessionRecord,
};

pub(crate) const CLUSTER: u32 = 7;

pub(crate) fn key() -> ClusterKey {
    ClusterKey::derive(b"slb-sync test cluster")
}

pub(crate) fn config(node: u32, epoch: u32) -> Config {
    Config::new(CLUSTER, NodeId(node), epoch, key())
}

pub(crate) fn engine(node: u32, epoch: u32, resync_on_start: bool, now: Instant) -> Engine {
    let mut c = config(node, epoch);
    c.resync_on_start = resync_on_start;
    Engine::new(c, now).unwrap()
}

/// A distinct session for (origin node, index): IPv4 NAT, FULLNAT with next hops, some IPv6.
pub(crate) fn record(node: u32, i: u32) -> SessionRecord {
    let client = if i % 7 == 3 {
        SocketAddr::new(
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, node as u16, i as u16)),
            10_000 + (i % 50_000) as u16,
        )
    } else {
        SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(192, (node % 250) as u8, (i >> 8) as u8, i as u8)),
            10_000 + (i % 50_000) as u16,
        )
    };
    let virt = if client.is_ipv6() {
        "[2001:db8:ffff::1]:443".parse().unwrap()
    } else {
        "198.51.100.1:443".parse().unwrap()
    };
    let real: SocketAddr = format!("10.0.2.{}:8080", 11 + i % 4).parse().unwrap();
    let mode = if i % 2 == 0 { ForwardMode::FullNat } else { ForwardMode::Nat };
    let mut r = SessionRecord::new(
        SessionKey { proto: Protocol::Tcp, client, virt },
        real,
        mode,
        ConnState::Established,
        Duration::from_secs(900),
    );
    if mode == ForwardMode::FullNat {
        r.local = Some(format!("10.0.2.{}:{}", node, 5000 + i % 60_000).parse().unwrap());
        r.client_next_hop = Some([2, 0, 0, 0, node as u8, 1]);
    }
    r
}

/// The third client packet of a connection: passes the default trigger.
pub(crate) fn third_packet(r: SessionRecord) -> SessionEvent {
    SessionEvent::new(r, 3, Some(ConnState::SynRecv))
}

pub(crate) fn secs(s: u64) -> Instant {
    Instant::from_secs(s)
}

pub(crate) fn ms(m: u64) -> Duration {
    Duration::from_millis(m)
}

/// A node running on real sockets: the threaded driver plus a session map as its owner.
pub(crate) struct NetNode {
    pub(crate) handle: slb_sync::transport::SyncHandle,
    pub(crate) table: std::sync::Arc<std::sync::Mutex<slb_sync::sim::SimTable>>,
}

impl NetNode {
    pub(crate) fn start<T: slb_sync::transport::Transport>(
        node: u32,
        resync: bool,
        transport: T,
    ) -> Self {
        use slb_sync::sim::Owner;
        let clock = slb_core::time::Clock::with_origin(test_origin());
        let handle_now = clock.at(std::time::Instant::now());
        let mut c = config(node, 1);
        c.resync_on_start = resync;
        let engine = Engine::new(c, handle_now).unwrap();
        let table = std::sync::Arc::new(std::sync::Mutex::new(slb_sync::sim::SimTable::default()));
        let t = table.clone();
        let handle = slb_sync::transport::spawn(engine, transport, clock, move |e, now, ev| {
            t.lock().unwrap().on_event(now, e, ev)
        })
        .unwrap();
        NetNode { handle, table }
    }

    /// Records and submits sessions `range` of this node (origin `node`).
    pub(crate) fn originate(&self, node: u32, range: std::ops::Range<u32>) {
        let mut evs = Vec::new();
        for i in range {
            let r = record(node, i);
            self.table.lock().unwrap().local.insert(r.key, r.clone());
            evs.push(third_packet(r));
        }
        for chunk in evs.chunks(64) {
            assert!(self.handle.submit_batch(chunk.to_vec()));
        }
    }

    pub(crate) fn learned(&self) -> usize {
        self.table.lock().unwrap().learned.len()
    }

    pub(crate) fn ready(&self) -> bool {
        self.table.lock().unwrap().ready
    }
}

fn test_origin() -> std::time::Instant {
    static ORIGIN: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    *ORIGIN.get_or_init(std::time::Instant::now)
}

/// Polls `cond` every 5 ms until it holds or `limit` passes.
pub(crate) fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if std::time::Instant::now() >= end {
            return cond();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
