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
//!   replies) go straight to the client holding the destination address.
//! - **Hosts' ARP caches and gratuitous ARP**: smoltcp ignores gratuitous ARP, so the net keeps
//!   the hosts' view of every address a director answered for or announced, per segment, and
//!   addresses a host's frame to the MAC its next hop (the destination when on-link, else its
//!   gateway) has in that view, as a Linux host that honours gratuitous ARP would.
//! - A director that is down (killed) receives and sends nothing; its engine stops too.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use slb_core::flow::{FlowKey, HashKey, Protocol};
use slb_core::time::Instant;
use slb_sync::sim::{Fabric, LinkModel, Owner};
use slb_sync::{Engine, Event};

use super::{Cluster, Followup};
use crate::frame::FrameBuf;
use crate::fwd::{Forwarder, Mac, PortId, Verdict};
use crate::sim::SimHost;
use crate::wire::arp::{ArpOperation, ArpRepr};
use crate::wire::{self, Kind};

/// The router's MAC on every segment.
pub const ROUTER_MAC: Mac = [2, 0, 0, 0, 0, 1];

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
#[derive(Debug)]
pub struct ClusterNet {
    /// Simulated time (the fabric follows it).
    pub now: Instant,
    /// Time added per step.
    pub tick: Duration,
    /// The sync fabric; node `i` is director `i`.
    pub fabric: Fabric<SimDirector>,
    /// The hosts.
    pub hosts: Vec<SimHost>,
    /// The router's address on each segment.
    pub router_ips: Vec<IpAddr>,
    /// Where client frames go.
    pub steer: Steer,
    /// Counters.
    pub stats: NetStats,
    gateways: Vec<Option<IpAddr>>,
    /// Hosts' view of director-answered addresses, per segment (see the module docs).
    arp: Vec<HashMap<IpAddr, Mac>>,
    hash: HashKey,
    next_house: Instant,
}

impl ClusterNet {
    /// An empty network with the router at `router_ips[segment]`, sync datagrams on `link`.
    pub fn new(seed: u64, link: LinkModel, router_ips: Vec<IpAddr>) -> Self {
        let n = router_ips.len();
        ClusterNet {
            now: Instant::ZERO,
            tick: Duration::from_micros(200),
            fabric: Fabric::new(seed, link),
            hosts: Vec::new(),
            router_ips,
            steer: Steer::Ecmp(Vec::new()),
            stats: NetStats::default(),
            gateways: Vec::new(),
            arp: vec![HashMap::new(); n],
            hash: HashKey::new(seed, 0x5eed),
            next_house: Instant::ZERO,
        }
    }

    /// Adds a director with its engine (created at [`ClusterNet::now`]); returns its index.
    pub fn add_director(&mut self, engine: Engine, d: SimDirector) -> usize {
        self.fabric.run_until(self.now);
        self.fabric.add_node(engine, d)
    }

    /// Adds a host with its default gateway; returns its index.
    pub fn add_host(&mut self, host: SimHost, gateway: Option<IpAddr>) -> usize {
        self.hosts.push(host);
        self.gateways.push(gateway);
        self.hosts.len() - 1
    }

    /// The host at `i`.
    pub fn host(&mut self, i: usize) -> &mut SimHost {
        &mut self.hosts[i]
    }

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

    /// Replaces director `i` by a fresh process (new engine, new forwarder) and starts it.
    pub fn restart(&mut self, i: usize, engine: Engine, d: SimDirector) {
        self.fabric.run_until(self.now);
        self.fabric.restart(i, engine, d);
    }

    /// True while director `i` runs.
    pub fn is_up(&self, i: usize) -> bool {
        self.fabric.node(i).up
    }

    /// What segment `seg`'s hosts currently resolve `ip` to, if a director answered for it.
    pub fn resolved(&self, seg: usize, ip: IpAddr) -> Option<Mac> {
        self.arp.get(seg).and_then(|m| m.get(&ip).copied())
    }

    /// Polls every host, moves every frame, runs the directors' cluster glue and the sync
    /// fabric, and advances the clock by one tick.
    pub fn step(&mut self) {
        let now = self.now;
        self.fabric.run_until(now);
        for h in &mut self.hosts {
            h.poll(now);
        }
        let mut out = Vec::new();
        for (i, h) in self.hosts.iter_mut().enumerate() {
            while let Some(f) = h.device.tx.pop_front() {
                out.push((i, f));
            }
        }
        for (from, f) in out {
            self.sent_by_host(from, f);
        }
        let house = now >= self.next_house;
        if house {
            self.next_house = now + Duration::from_millis(50);
        }
        for i in 0..self.fabric.len() {
            if !self.is_up(i) {
                continue;
            }
            let mut events = Vec::new();
            let mut frames = Vec::new();
            {
                let node = self.fabric.node_mut(i);
                let (engine, d) = (&node.engine, &mut node.owner);
                d.cluster.update_peers(&mut d.fwd, now, &engine.peers(), engine.is_ready());
                if house {
                    d.fwd.expire(now, 4096);
                }
                while let Some(ev) = d.cluster.poll_local(&mut d.fwd, now) {
                    events.push(ev);
                }
                frames.extend(d.cluster.poll_announcements(&d.fwd, now));
            }
            for ev in events {
                self.fabric.local(i, ev);
            }
            for (p, f) in frames {
                self.sent_by_director(i, p, f.as_slice().to_vec());
            }
        }
        self.now += self.tick;
    }

    /// Steps until `cond` holds or `limit` of simulated time passes; true if it held.
    pub fn run_until(
        &mut self,
        limit: Duration,
        mut cond: impl FnMut(&mut ClusterNet) -> bool,
    ) -> bool {
        let end = self.now + limit;
        while self.now < end {
            if cond(self) {
                return true;
            }
            self.step();
        }
        cond(self)
    }

    fn sent_by_host(&mut self, from: usize, mut f: Vec<u8>) {
        if f.len() < 14 {
            return;
        }
        let seg = self.hosts[from].segment;
        if let Ok(a) = ArpRepr::parse(&f)
            && a.op == ArpOperation::Request
            && self.router_ips.get(seg) == Some(&IpAddr::V4(a.target_ip))
        {
            self.hosts[from].device.rx.push_back(a.reply(ROUTER_MAC).to_frame());
            return;
        }
        let dst: Mac = f[0..6].try_into().unwrap_or([0; 6]);
        if dst == ROUTER_MAC {
            return self.route(seg, f);
        }
        // The host's ARP cache, gratuitous ARP honoured (see the module docs).
        if let Ok(Kind::Ip(m)) = wire::parse(&f) {
            let hop =
                if self.hosts[from].on_link(m.dst) { Some(m.dst) } else { self.gateways[from] };
            if let Some(mac) = hop.and_then(|h| self.resolved(seg, h)) {
                f[0..6].copy_from_slice(&mac);
            }
        }
        self.deliver(seg, f, Some(from), None);
    }

    /// Delivers a frame on `seg` to every host and director port its MAC reaches.
    fn deliver(
        &mut self,
        seg: usize,
        f: Vec<u8>,
        sent_by_host: Option<usize>,
        from_dir: Option<usize>,
    ) {
        let dst: Mac = f[0..6].try_into().unwrap_or([0; 6]);
        let src: Mac = f[6..12].try_into().unwrap_or([0; 6]);
        let group = dst[0] & 1 == 1;
        for (i, h) in self.hosts.iter_mut().enumerate() {
            if h.segment == seg
                && Some(i) != sent_by_host
                && (group || h.mac == dst)
                && h.mac != src
            {
                h.device.rx.push_back(f.clone());
            }
        }
        for d in 0..self.fabric.len() {
            if Some(d) == from_dir {
                continue;
            }
            let ports: Vec<PortId> = {
                let dir = &self.fabric.node(d).owner;
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
                self.feed_director(d, p, &f);
            }
        }
    }

    fn feed_director(&mut self, d: usize, port: PortId, f: &[u8]) {
        let now = self.now;
        let mut buf = FrameBuf::from_slice(f);
        let mut out = Vec::new();
        {
            let fwd = &mut self.fabric.node_mut(d).owner.fwd;
            let v = fwd.process(now, &mut buf, port);
            if let Verdict::Forward(p) | Verdict::Reply(p) | Verdict::Solicit(p) = v {
                out.push((p, buf.as_slice().to_vec()));
            }
            while let Some(p) = fwd.poll_transmit(&mut buf) {
                out.push((p, buf.as_slice().to_vec()));
            }
        }
        for (p, frame) in out {
            self.sent_by_director(d, p, frame);
        }
    }

    fn sent_by_director(&mut self, d: usize, port: PortId, f: Vec<u8>) {
        let Some(&seg) = self.fabric.node(d).owner.segments.get(usize::from(port.0)) else {
            return;
        };
        if let Ok(a) = ArpRepr::parse(&f) {
            // What hosts learn from a director's ARP: its answers and its announcements.
            if a.op == ArpOperation::Reply || (a.op == ArpOperation::Request && a.is_gratuitous()) {
                if a.op == ArpOperation::Request {
                    self.stats.garps += 1;
                }
                self.arp[seg].insert(IpAddr::V4(a.sender_ip), a.sender_mac);
            }
        }
        let dst: Mac = f[0..6].try_into().unwrap_or([0; 6]);
        if dst == ROUTER_MAC {
            return self.route(seg, f);
        }
        self.deliver(seg, f, None, Some(d));
    }

    /// The router: client frames to a director, server-side frames to the client.
    fn route(&mut self, seg: usize, mut f: Vec<u8>) {
        let Ok(Kind::Ip(m)) = wire::parse(&f) else {
            self.stats.unroutable += 1;
            return;
        };
        if seg != 0 {
            let Some(h) = (0..self.hosts.len())
                .find(|&h| self.hosts[h].segment == 0 && self.hosts[h].has_addr(m.dst))
            else {
                self.stats.unroutable += 1;
                return;
            };
            let mac = self.hosts[h].mac;
            f[0..6].copy_from_slice(&mac);
            f[6..12].copy_from_slice(&ROUTER_MAC);
            self.hosts[h].device.rx.push_back(f);
            return;
        }
        let mac = match &self.steer {
            Steer::Ecmp(members) if !members.is_empty() => {
                let proto = if m.proto == 6 { Protocol::Tcp } else { Protocol::Udp };
                let k =
                    FlowKey { proto, src: m.src, dst: m.dst, src_port: m.sport, dst_port: m.dport };
                let d = members[(self.hash.hash_flow(&k) % members.len() as u64) as usize];
                self.fabric.node(d).owner.fwd.port_mac(PortId(0))
            }
            Steer::Via(ip) => self.resolved(0, *ip),
            Steer::Ecmp(_) => None,
        };
        let Some(mac) = mac else {
            self.stats.unroutable += 1;
            return;
        };
        f[0..6].copy_from_slice(&mac);
        self.deliver(0, f, None, None);
    }
}
