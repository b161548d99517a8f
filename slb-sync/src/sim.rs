//! A simulated cluster (feature `sim`): engines on a fabric that drops, delays, reorders and
//! duplicates datagrams, in simulated time. No sockets, no clocks, deterministic for a seed.
//!
//! Each node is an [`Engine`] plus an [`Owner`] standing for the dataplane (it receives the
//! engine's events and may call back into the engine, e.g. to answer snapshot requests).
//! [`SimTable`] is a ready-made owner that keeps a session map. Other crates (slb-l4) can plug
//! their own owner to run their session tables against the real engine.
//!
//! Routing: [`Destination::Group`] reaches every other node, [`Destination::Peer`] the node with
//! that address. Every copy independently may be lost (`loss`), duplicated (`duplicate`), and is
//! delayed uniformly in `min_delay..=max_delay` (so datagrams overtake each other).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use slb_core::rng::SplitMix64;
use slb_core::time::Instant;

use crate::engine::{Destination, Engine, Event, SessionEvent};
use crate::types::{SessionKey, SessionRecord, SyncedRecord};

/// How the fabric treats each datagram copy.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinkModel {
    /// Probability a copy is lost.
    pub loss: f64,
    /// Probability a copy is delivered twice.
    pub duplicate: f64,
    /// Shortest delay.
    pub min_delay: Duration,
    /// Longest delay.
    pub max_delay: Duration,
}

impl LinkModel {
    /// A perfect link with a fixed delay.
    pub fn ideal(delay: Duration) -> Self {
        LinkModel { loss: 0.0, duplicate: 0.0, min_delay: delay, max_delay: delay }
    }
}

impl Default for LinkModel {
    fn default() -> Self {
        LinkModel::ideal(Duration::from_micros(200))
    }
}

/// The dataplane side of a simulated node.
pub trait Owner {
    /// A local session event is about to be handed to the engine.
    fn on_local(&mut self, _ev: &SessionEvent) {}
    /// The engine emitted `event`.
    fn on_event(&mut self, now: Instant, engine: &mut Engine, event: Event);
}

/// A minimal owner: a session map, snapshot answers, and a log of what happened.
#[derive(Clone, Debug, Default)]
pub struct SimTable {
    /// Sessions produced by local traffic.
    pub local: BTreeMap<SessionKey, SessionRecord>,
    /// Sessions learned from peers.
    pub learned: BTreeMap<SessionKey, SyncedRecord>,
    /// `Event::Ready` seen.
    pub ready: bool,
    /// Complete snapshots received.
    pub resyncs_complete: u32,
    /// Failed snapshots.
    pub resyncs_failed: u32,
    /// Peer-down events.
    pub peer_downs: u32,
    /// Snapshot requests answered.
    pub snapshots_served: u32,
}

impl Owner for SimTable {
    fn on_local(&mut self, ev: &SessionEvent) {
        if ev.record.is_removed() {
            self.local.remove(&ev.record.key);
        } else {
            self.local.insert(ev.record.key, ev.record.clone());
        }
    }

    fn on_event(&mut self, now: Instant, engine: &mut Engine, event: Event) {
        match event {
            Event::Upsert(r) => {
                self.learned.insert(r.record.key, r);
            }
            Event::Remove { key, .. } => {
                self.learned.remove(&key);
            }
            Event::SnapshotRequested(req) => {
                let all: Vec<SessionRecord> = self
                    .local
                    .values()
                    .cloned()
                    .chain(self.learned.values().map(|s| s.record.clone()))
                    .collect();
                if engine.provide_snapshot(now, req, all) {
                    self.snapshots_served += 1;
                }
            }
            Event::ResyncComplete { .. } => self.resyncs_complete += 1,
            Event::ResyncFailed { .. } => self.resyncs_failed += 1,
            Event::PeerDown { .. } => self.peer_downs += 1,
            Event::Ready => self.ready = true,
            _ => {}
        }
    }
}

/// One simulated node.
#[derive(Debug)]
pub struct SimNode<O> {
    /// The engine.
    pub engine: Engine,
    /// Its owner.
    pub owner: O,
    /// Its address on the fabric.
    pub addr: SocketAddr,
    /// False: powered off (sends and receives nothing, timers do not run).
    pub up: bool,
}

/// Fabric counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FabricStats {
    /// Copies handed to the fabric.
    pub sent: u64,
    /// Copies lost.
    pub lost: u64,
    /// Extra copies made.
    pub duplicated: u64,
    /// Copies delivered to a running node.
    pub delivered: u64,
    /// Times an engine asked to be woken at or before the time it was just woken at (a
    /// busy-loop bug); the fabric then moves it on by a microsecond.
    pub stalls: u64,
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct InFlight {
    at: Instant,
    order: u64,
    to: usize,
    from: SocketAddr,
    bytes: Vec<u8>,
}

/// The simulated network and clock.
#[derive(Debug)]
pub struct Fabric<O = SimTable> {
    nodes: Vec<SimNode<O>>,
    now: Instant,
    rng: SplitMix64,
    link: LinkModel,
    queue: BinaryHeap<Reverse<InFlight>>,
    order: u64,
    stats: FabricStats,
    wake: Vec<Instant>,
    /// Every datagram sent, with its sender's index, when capture is on.
    pub captured: Option<Vec<(usize, Destination, Vec<u8>)>>,
}

impl<O: Owner> Fabric<O> {
    /// An empty fabric at time zero.
    pub fn new(seed: u64, link: LinkModel) -> Self {
        Fabric {
            nodes: Vec::new(),
            now: Instant::ZERO,
            rng: SplitMix64::new(seed),
            link,
            queue: BinaryHeap::new(),
            order: 0,
            stats: FabricStats::default(),
            wake: Vec::new(),
            captured: None,
        }
    }

    /// The address node `i` gets.
    pub fn addr_of(i: usize) -> SocketAddr {
        let i = u32::try_from(i).unwrap_or(u32::MAX - 2).saturating_add(1);
        SocketAddr::new(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | i)), 8848)
    }

    /// Adds a running node; returns its index.
    pub fn add_node(&mut self, engine: Engine, owner: O) -> usize {
        let i = self.nodes.len();
        self.nodes.push(SimNode { engine, owner, addr: Self::addr_of(i), up: true });
        self.wake.push(self.now);
        self.pump(i);
        i
    }

    /// Replaces node `i`'s engine (a restart) and powers it on.
    pub fn restart(&mut self, i: usize, engine: Engine, owner: O) {
        let n = &mut self.nodes[i];
        n.engine = engine;
        n.owner = owner;
        n.up = true;
        self.wake[i] = self.now;
        self.pump(i);
    }

    /// Powers node `i` on or off.
    pub fn set_up(&mut self, i: usize, up: bool) {
        self.nodes[i].up = up;
        self.wake[i] = self.now;
    }

    /// Changes the link model from now on.
    pub fn set_link(&mut self, link: LinkModel) {
        self.link = link;
    }

    /// The current simulated time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Counters.
    pub fn stats(&self) -> FabricStats {
        self.stats
    }

    /// Node `i`.
    pub fn node(&self, i: usize) -> &SimNode<O> {
        &self.nodes[i]
    }

    /// Node `i`, mutable.
    pub fn node_mut(&mut self, i: usize) -> &mut SimNode<O> {
        &mut self.nodes[i]
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True without nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Hands a local session event to node `i` now.
    pub fn local(&mut self, i: usize, ev: SessionEvent) -> bool {
        let now = self.now;
        let n = &mut self.nodes[i];
        n.owner.on_local(&ev);
        let queued = n.engine.handle_local(now, ev);
        self.pump(i);
        queued
    }

    /// Delivers `bytes` to node `to` as if sent from `from`, after `delay` (bypassing loss).
    pub fn inject(&mut self, to: usize, from: SocketAddr, bytes: Vec<u8>, delay: Duration) {
        self.order += 1;
        let f = InFlight { at: self.now + delay, order: self.order, to, from, bytes };
        self.queue.push(Reverse(f));
    }

    /// Drains node `i`'s outputs: transmits onto the fabric, events to its owner (which may
    /// produce more of both).
    fn pump(&mut self, i: usize) {
        loop {
            let mut progressed = false;
            while let Some(t) = self.nodes[i].engine.poll_transmit() {
                progressed = true;
                if !self.nodes[i].up {
                    continue;
                }
                if let Some(c) = self.captured.as_mut() {
                    c.push((i, t.dest, t.bytes.clone()));
                }
                let from = self.nodes[i].addr;
                let targets: Vec<usize> = match t.dest {
                    Destination::Group => (0..self.nodes.len()).filter(|&j| j != i).collect(),
                    Destination::Peer(a) => {
                        (0..self.nodes.len()).filter(|&j| self.nodes[j].addr == a).collect()
                    }
                };
                for to in targets {
                    self.send_copy(to, from, &t.bytes);
                }
            }
            let now = self.now;
            let n = &mut self.nodes[i];
            while let Some(e) = n.engine.poll_event() {
                progressed = true;
                n.owner.on_event(now, &mut n.engine, e);
            }
            if !progressed {
                break;
            }
        }
        let next = self.nodes[i].engine.poll_timeout().unwrap_or(Instant::MAX);
        self.wake[i] = next;
    }

    fn send_copy(&mut self, to: usize, from: SocketAddr, bytes: &[u8]) {
        self.stats.sent += 1;
        if self.rng.chance(self.link.loss) {
            self.stats.lost += 1;
            return;
        }
        let copies = if self.rng.chance(self.link.duplicate) { 2 } else { 1 };
        self.stats.duplicated += copies - 1;
        for _ in 0..copies {
            let span = self.link.max_delay.saturating_sub(self.link.min_delay).as_nanos() as u64;
            let jitter = if span == 0 { 0 } else { self.rng.next_u64() % (span + 1) };
            let delay = self.link.min_delay + Duration::from_nanos(jitter);
            self.inject(to, from, bytes.to_vec(), delay);
        }
    }

    /// Runs everything due up to `deadline`, then sets the clock to `deadline`.
    pub fn run_until(&mut self, deadline: Instant) {
        self.run_while(deadline, |_| true);
    }

    /// Runs until `done` holds (checked after every step) or `deadline`; returns whether `done`
    /// held. The clock stops where `done` first held.
    pub fn run_until_cond(
        &mut self,
        deadline: Instant,
        mut done: impl FnMut(&Self) -> bool,
    ) -> bool {
        if done(self) {
            return true;
        }
        self.run_while(deadline, |f| !done(f));
        done(self)
    }

    /// The earliest timer of a running node, and the node.
    fn next_timer(&self) -> Option<(Instant, usize)> {
        (0..self.nodes.len()).filter(|&i| self.nodes[i].up).map(|i| (self.wake[i], i)).min()
    }

    /// When the fabric next has something to do (a datagram arrives, a running engine's timer
    /// fires); `None` when nothing is pending. A simulator that runs the fabric beside other
    /// participants wakes it then with [`Fabric::run_until`].
    pub fn poll_at(&self) -> Option<Instant> {
        let packet = self.queue.peek().map(|Reverse(f)| f.at);
        let timer = self.next_timer().map(|(t, _)| t);
        packet.into_iter().chain(timer).filter(|&t| t < Instant::MAX).min()
    }

    fn run_while(&mut self, deadline: Instant, mut go_on: impl FnMut(&Self) -> bool) {
        loop {
            let next_packet = self.queue.peek().map(|Reverse(f)| f.at);
            let next_timer = self.next_timer();
            let t_packet = next_packet.unwrap_or(Instant::MAX);
            let t_timer = next_timer.map_or(Instant::MAX, |(t, _)| t);
            let t = t_packet.min(t_timer);
            if t > deadline {
                self.now = self.now.max(deadline);
                return;
            }
            self.now = self.now.max(t);
            if t_packet <= t_timer {
                let Some(Reverse(f)) = self.queue.pop() else { return };
                if self.nodes[f.to].up {
                    self.stats.delivered += 1;
                    let now = self.now;
                    self.nodes[f.to].engine.handle_datagram(now, f.from, &f.bytes);
                    self.pump(f.to);
                }
            } else if let Some((_, i)) = next_timer {
                let now = self.now;
                self.nodes[i].engine.handle_timeout(now);
                self.pump(i);
                if self.wake[i] <= now {
                    self.stats.stalls += 1;
                    self.wake[i] = now + Duration::from_micros(1);
                }
            }
            if !go_on(self) {
                return;
            }
        }
    }
}
