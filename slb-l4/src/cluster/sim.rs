//! A simulated cluster (features `sim` + `sync`): several directors (a [`Forwarder`] + a
//! [`Cluster`] each, their engines on slb-sync's simulated fabric) between smoltcp clients and
//! servers, in simulated time. No root, no sockets, deterministic.
//!
//! ```text
//!   segment 0: clients (gateway: the router)     director port 0 (one per director)
//!   segment 1: real servers                      director port 1      (router here too)
//! ```
//! - **The router** answers ARP for its address on each segment and spreads client frames
//!   sent to it over the directors ([`Steer::Ecmp`]: a flow hash over a member list, as a
//!   router's ECMP group; [`Steer::Via`]: the MAC the hosts currently have for one next-hop
//!   address, for NAT's floating address). Frames it receives on the server segment (DR
//!   replies) go to the client holding the destination address.
//! - **Hosts' ARP caches and gratuitous ARP**: smoltcp ignores gratuitous ARP, so the net keeps
//!   the hosts' view of every address a director answered for or announced, per segment, and
//!   addresses a host's frame to the MAC its next hop (the destination when on-link, else its
//!   gateway) has in that view, as a Linux host that honours gratuitous ARP would.
//! - A director that is down (killed) receives and sends nothing; its engine stops too.
//!
//! [`ClusterNet`] is a [`Net`] of [`SimCluster`]: the directors, the router and the hosts' view
//! of the addresses are the devices on its ether; the sync fabric runs beside them, woken at
//! its own [`Fabric::poll_at`]. The router and the hosts' ARP view act as frames are sent (no
//! hop of their own); every frame then takes the ether's latency to its receivers.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use slb_core::flow::{FlowKey, HashKey, Protocol};
use slb_core::time::Instant;
use slb_sync::sim::{Fabric, LinkModel, Owner};
use slb_sync::{Engine, Event};

use super::{Cluster, Followup};
use crate::fwd::{Forwarder, Mac, PortId};
use crate::sim::{Context, Devices, Net, Origin, SimHost, forward, mac_at};
use crate::wire::arp::{ArpOperation, ArpRepr};
use crate::wire::{self, Kind};

/// The router's MAC on every segment.
pub const ROUTER_MAC: Mac = [2, 0, 0, 0, 0, 1];

/// The router's number as a device ([`Origin::Device`]; directors are numbered from 0).
const ROUTER: usize = usize::MAX;

/// How often the directors' session tables are swept for expired sessions.
const HOUSEKEEPING: Duration = Duration::from_millis(50);

/// One simulated director: forwarder, cluster glue, and the segment of each of its ports.
#[derive(Debug)]
pub struct SimDirector {
    /// The forwarder.
    pub fwd: Forwarder,
    /// Its cluster glue.
    pub cluster: Cluster,
    /// Segment of port `i`.
    pub segments: Vec<usize>,
}

impl Owner for SimDirector {
    fn on_event(&mut self, now: Instant, engine: &mut Engine, event: Event) {
        if let Followup::Snapshot(req) = self.cluster.handle_event(&mut self.fwd, now, event) {
            let records = self.cluster.snapshot(&self.fwd, now);
            engine.provide_snapshot(now, req, records);
        }
    }
}

/// How the router spreads client frames over the directors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Steer {
    /// A flow hash over these directors (indices), as an ECMP group.
    Ecmp(Vec<usize>),
    /// To whoever answers for this address on segment 0 (a floating next hop).
    Via(IpAddr),
}

/// Counters of the simulated network.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Frames sent towards a director that is down (lost).
    pub to_dead: u64,
    /// Frames the router could not place.
    pub unroutable: u64,
    /// Gratuitous ARPs seen from directors.
    pub garps: u64,
}

/// Directors, hosts, a router and the sync fabric, in simulated time.
pub type ClusterNet = Net<SimCluster>;

impl ClusterNet {
    /// An empty network with the router at `router_ips[segment]`, sync datagrams on `link`.
    pub fn new(seed: u64, link: LinkModel, router_ips: Vec<IpAddr>) -> Self {
        let n = router_ips.len();
        Net::with_devices(SimCluster {
            fabric: Fabric::new(seed, link),
            router_ips,
            steer: Steer::Ecmp(Vec::new()),
            stats: NetStats::default(),
            gateways: Vec::new(),
            arp: vec![HashMap::new(); n],
            hash: HashKey::new(seed, 0x5eed),
            next_house: Instant::ZERO,
        })
    }

    /// Adds a director with its engine (created at [`Net::now`]); returns its index.
    pub fn add_director(&mut self, engine: Engine, d: SimDirector) -> usize {
        let now = self.now();
        self.fabric.run_until(now);
        self.fabric.add_node(engine, d)
    }

    /// Adds a host with its default gateway; returns its index.
    pub fn add_host(&mut self, host: SimHost, gateway: Option<IpAddr>) -> usize {
        self.gateways.push(gateway);
        self.ether().add_host(host)
    }

    /// Replaces director `i` by a fresh process (new engine, new forwarder) and starts it.
    pub fn restart(&mut self, i: usize, engine: Engine, d: SimDirector) {
        let now = self.now();
        self.fabric.run_until(now);
        self.fabric.restart(i, engine, d);
    }
}

/// The devices of a [`ClusterNet`]: the directors (on the sync fabric), the router, and the
/// hosts' view of the addresses directors answer for.
#[derive(Debug)]
pub struct SimCluster {
    /// The sync fabric; node `i` is director `i`.
    pub fabric: Fabric<SimDirector>,
    /// The router's address on each segment.
    pub router_ips: Vec<IpAddr>,
    /// Where client frames go.
    pub steer: Steer,
    /// Counters.
    pub stats: NetStats,
    /// Each host's default gateway (index = host).
    gateways: Vec<Option<IpAddr>>,
    /// Hosts' view of director-answered addresses, per segment (see the module docs).
    arp: Vec<HashMap<IpAddr, Mac>>,
    hash: HashKey,
    next_house: Instant,
}

impl SimCluster {
    /// Director `i`.
    pub fn director(&self, i: usize) -> &SimDirector {
        &self.fabric.node(i).owner
    }

    /// Director `i`, mutable.
    pub fn director_mut(&mut self, i: usize) -> &mut SimDirector {
        &mut self.fabric.node_mut(i).owner
    }

    /// Kills director `i` (its forwarder and engine stop at once).
    pub fn kill(&mut self, i: usize) {
        self.fabric.set_up(i, false);
    }

    /// True while director `i` runs.
    pub fn is_up(&self, i: usize) -> bool {
        self.fabric.node(i).up
    }

    /// What segment `seg`'s hosts currently resolve `ip` to, if a director answered for it.
    pub fn resolved(&self, seg: usize, ip: IpAddr) -> Option<Mac> {
        self.arp.get(seg).and_then(|m| m.get(&ip).copied())
    }
    /// Runs director `d` on a frame arriving on its `port` and sends what it emits.
    fn feed_director(&mut self, cx: &mut Context<'_>, d: usize, port: PortId, f: &[u8]) {
        for (_, p, frame) in forward(&mut self.director_mut(d).fwd, cx.now(), port, f) {
            self.sent_by_director(cx, d, p, frame);
        }
    }

    /// A frame director `d` sends on `port`: the hosts learn from its ARP, the router takes
    /// what is addressed to it, the rest goes on the port's segment.
    fn sent_by_director(&mut self, cx: &mut Context<'_>, d: usize, port: PortId, f: Vec<u8>) {
        let Some(&seg) = self.director(d).segments.get(usize::from(port.0)) else { return };
        if let Ok(a) = ArpRepr::parse(&f) {
            // What hosts learn from a director's ARP: its answers and its announcements.
            if a.op == ArpOperation::Reply || (a.op == ArpOperation::Request && a.is_gratuitous()) {
                if a.op == ArpOperation::Request {
                    self.stats.garps += 1;
                }
                self.arp[seg].insert(IpAddr::V4(a.sender_ip), a.sender_mac);
            }
        }
        if mac_at(&f, 0) == Some(ROUTER_MAC) {
            return self.route(cx, seg, f);
        }
        cx.send(seg, Origin::Device(d), f);
    }

    /// The router: client frames to a director, server-side frames to the client.
    fn route(&mut self, cx: &mut Context<'_>, seg: usize, mut f: Vec<u8>) {
        let Ok(Kind::Ip(m)) = wire::parse(&f) else {
            self.stats.unroutable += 1;
            return;
        };
        if seg != 0 {
            let Some(h) = cx.hosts().iter().find(|h| h.segment == 0 && h.has_addr(m.dst)) else {
                self.stats.unroutable += 1;
                return;
            };
            f[0..6].copy_from_slice(&h.mac);
            f[6..12].copy_from_slice(&ROUTER_MAC);
            cx.send(0, Origin::Device(ROUTER), f);
            return;
        }
        let mac = match &self.steer {
            Steer::Ecmp(members) if !members.is_empty() => {
                let proto = if m.proto == 6 { Protocol::Tcp } else { Protocol::Udp };
                let k =
                    FlowKey { proto, src: m.src, dst: m.dst, src_port: m.sport, dst_port: m.dport };
                let d = members[(self.hash.hash_flow(&k) % members.len() as u64) as usize];
                self.director(d).fwd.port_mac(PortId(0))
            }
            Steer::Via(ip) => self.resolved(0, *ip),
            Steer::Ecmp(_) => None,
        };
        let Some(mac) = mac else {
            self.stats.unroutable += 1;
            return;
        };
        f[0..6].copy_from_slice(&mac);
        cx.send(0, Origin::Device(ROUTER), f);
    }
}

impl Devices for SimCluster {
    fn handle_frame(&mut self, cx: &mut Context<'_>, seg: usize, frame: &[u8], from: Origin) {
        self.fabric.run_until(cx.now());
        let Some(dst) = mac_at(frame, 0) else { return };
        let group = dst[0] & 1 == 1;
        for d in 0..self.fabric.len() {
            if from == Origin::Device(d) {
                continue;
            }
            let ports: Vec<PortId> = {
                let dir = self.director(d);
                (0..dir.segments.len())
                    .filter(|&p| dir.segments[p] == seg)
                    .map(|p| PortId(p as u8))
                    .filter(|&p| group || dir.fwd.port_mac(p) == Some(dst))
                    .collect()
            };
            for p in ports {
                if !self.is_up(d) {
                    if !group {
                        self.stats.to_dead += 1;
                    }
                    continue;
                }
                self.feed_director(cx, d, p, frame);
            }
        }
    }

    fn handle_timeout(&mut self, cx: &mut Context<'_>) {
        let now = cx.now();
        self.fabric.run_until(now);
        let house = now >= self.next_house;
        if house {
            self.next_house = now + HOUSEKEEPING;
        }
        for i in 0..self.fabric.len() {
            if !self.is_up(i) {
                continue;
            }
            let mut events = Vec::new();
            let frames = {
                let node = self.fabric.node_mut(i);
                let (engine, d) = (&node.engine, &mut node.owner);
                d.cluster.update_peers(&mut d.fwd, now, &engine.peers(), engine.is_ready());
                if house {
                    d.fwd.expire(now, 4096);
                }
                while let Some(ev) = d.cluster.poll_local(&mut d.fwd, now) {
                    events.push(ev);
                }
                d.cluster.poll_announcements(&d.fwd, now)
            };
            for ev in events {
                self.fabric.local(i, ev);
            }
            for (p, f) in frames {
                self.sent_by_director(cx, i, p, f.as_slice().to_vec());
            }
        }
    }

    fn poll_at(&self) -> Option<Instant> {
        let announce = (0..self.fabric.len())
            .filter(|&i| self.is_up(i))
            .filter_map(|i| self.director(i).cluster.poll_timeout());
        announce.chain(self.fabric.poll_at()).chain([self.next_house]).min()
    }

    fn handle_host_frame(&mut self, cx: &mut Context<'_>, from: usize, mut f: Vec<u8>) {
        if f.len() < wire::ETH_HDR {
            return;
        }
        let seg = cx.hosts()[from].segment;
        if let Ok(a) = ArpRepr::parse(&f)
            && a.op == ArpOperation::Request
            && self.router_ips.get(seg) == Some(&IpAddr::V4(a.target_ip))
        {
            cx.send(seg, Origin::Device(ROUTER), a.reply(ROUTER_MAC).to_frame());
            return;
        }
        if mac_at(&f, 0) == Some(ROUTER_MAC) {
            return self.route(cx, seg, f);
        }
        // The host's ARP cache, gratuitous ARP honoured (see the module docs).
        if let Ok(Kind::Ip(m)) = wire::parse(&f) {
            let on_link = cx.hosts()[from].on_link(m.dst);
            let hop = if on_link { Some(m.dst) } else { self.gateways[from] };
            if let Some(mac) = hop.and_then(|h| self.resolved(seg, h)) {
                f[0..6].copy_from_slice(&mac);
            }
        }
        cx.send(seg, Origin::Host(from), f);
    }
}
