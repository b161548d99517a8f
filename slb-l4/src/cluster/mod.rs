//! A director in a cluster (feature `sync`): the glue between a [`Forwarder`] and an
//! [`slb_sync::Engine`]. Pure: it takes `now`, touches no socket and reads no clock.
//!
//! ```text
//!   Forwarder --SessionChange--> Cluster::poll_local --SessionEvent--> Engine (trigger, batching)
//!   Forwarder <--install/remove-- Cluster::handle_event <--Event-------- Engine
//!   Forwarder <--adopt/release/quiet-- takeover (peers' liveness)  --> gratuitous ARP frames
//! ```
//!
//! - **Changes out** ([`Cluster::poll_local`]): the forwarder reports state changes and inbound
//!   packet counts matching IPVS's "3 50" prefilter; the engine's trigger decides what is sent
//!   (SYN_RECV never, closing states at once). Removals of locally owned sessions become
//!   tombstones. Sessions a peer installed and no local client traffic claimed are the peer's
//!   to report, so they are not reported here.
//! - **Sessions in** ([`Cluster::handle_event`]): an upsert is installed with both keys (the
//!   FULLNAT local address and port reserve the reply key, so this node never hands them out),
//!   the real server found by address within the service, the client-side next hop MAC, and
//!   the remaining timeout; a removal drops a peer-installed session. Snapshot requests are
//!   answered from the table ([`Cluster::snapshot`]).
//! - **Addresses** ([`crate::cluster::takeover`]): until the engine is ready, this node answers no
//!   ARP/ND for its virtual and local addresses (it does not attract traffic while its table
//!   is still arriving). Address groups follow their home node while it is alive and ready,
//!   else the lowest-numbered live, ready node: FULLNAT local addresses of a dead node move to
//!   a survivor (which has the node's sessions, so the replies find them) and NAT's floating
//!   gateway addresses move from the active node to the standby. Taking an address queues
//!   gratuitous ARPs ([`Cluster::poll_announcements`]).

#[cfg(feature = "io")]
pub mod driver;
mod records;
#[cfg(feature = "sim")]
pub mod sim;
pub mod takeover;

use std::net::IpAddr;
use std::time::Duration;

use slb_core::time::Instant;
use slb_sync::{EntryFlags, Event, NodeId, PeerInfo, SessionEvent, SessionRecord, SnapshotRequest};

pub use records::{install_of, record_of};
pub use takeover::AddrGroup;

use crate::frame::FrameBuf;
use crate::fwd::{ChangeFilter, Forwarder, PortId};
use takeover::Takeover;

/// Cluster settings of one director.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClusterConfig {
    /// This node (the engine's node id).
    pub node: NodeId,
    /// Address groups that move between nodes (same list on every node).
    pub groups: Vec<AddrGroup>,
    /// Which inbound packet counts the forwarder reports (the engine's trigger decides what is
    /// sent; keep this at least as wide). Default IPVS "3 50".
    pub filter: ChangeFilter,
    /// Session changes the forwarder queues before shedding (default 65536).
    pub change_queue: usize,
    /// When gratuitous ARPs go out after taking an address, from the moment it is taken
    /// (default 0, 200 ms, 1 s: one can be lost).
    pub announce_schedule: Vec<Duration>,
}

impl ClusterConfig {
    /// Defaults for `node` with no address groups.
    pub fn new(node: NodeId) -> Self {
        ClusterConfig {
            node,
            groups: Vec::new(),
            filter: ChangeFilter::default(),
            change_queue: 1 << 16,
            announce_schedule: vec![
                Duration::ZERO,
                Duration::from_millis(200),
                Duration::from_secs(1),
            ],
        }
    }
}

/// Counters of the glue (the forwarder's [`crate::fwd::SyncCounters`] count installs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClusterStats {
    /// Local changes handed to the engine.
    pub local_events: u64,
    /// Tombstones handed to the engine.
    pub local_removals: u64,
    /// Changes of peer-installed sessions not reported (the peer owns them).
    pub local_skipped_peer: u64,
    /// Upserts received.
    pub upserts: u64,
    /// Upserts skipped: templates, tunnels or protocols the forwarder does not serve.
    pub upserts_unsupported: u64,
    /// Removals received / applied.
    pub removals: u64,
    /// Removals applied.
    pub removals_applied: u64,
    /// Snapshot requests answered.
    pub snapshots: u64,
    /// Sessions sent in snapshots.
    pub snapshot_records: u64,
    /// Peers seen going down.
    pub peer_downs: u64,
    /// Addresses taken (own after readiness, or another node's).
    pub addrs_taken: u64,
    /// Addresses given up.
    pub addrs_released: u64,
    /// Gratuitous ARP / unsolicited NA frames produced.
    pub announcements: u64,
}

/// What the owner must do after [`Cluster::handle_event`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Followup {
    /// Nothing.
    None,
    /// Answer this request with [`Cluster::snapshot`] through the engine's `provide_snapshot`.
    Snapshot(SnapshotRequest),
}

/// One director's cluster state. See the module documentation.
#[derive(Debug)]
pub struct Cluster {
    cfg: ClusterConfig,
    ready: bool,
    ready_at: Option<Instant>,
    takeover: Takeover,
    announce: Vec<(Instant, IpAddr)>,
    stats: ClusterStats,
}

impl Cluster {
    /// Attaches to `fwd` (fully configured): session changes on, own addresses quiet until
    /// the engine is ready.
    pub fn new(cfg: ClusterConfig, fwd: &mut Forwarder) -> Self {
        fwd.enable_session_changes(cfg.filter, cfg.change_queue);
        let takeover = Takeover::new(cfg.node, cfg.groups.clone(), fwd);
        Cluster {
            cfg,
            ready: false,
            ready_at: None,
            takeover,
            announce: Vec::new(),
            stats: ClusterStats::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ClusterConfig {
        &self.cfg
    }

    /// Counters.
    pub fn stats(&self) -> ClusterStats {
        self.stats
    }

    /// True once the engine reported [`Event::Ready`] (or [`Cluster::update_peers`] saw it).
    pub fn is_ready(&self) -> bool {
        self.ready
    }

    /// When readiness was first seen.
    pub fn ready_at(&self) -> Option<Instant> {
        self.ready_at
    }

    /// Addresses this node answers for because of an address group or readiness.
    pub fn held_addrs(&self) -> Vec<IpAddr> {
        self.takeover.held()
    }

    /// The next local change for the engine (hand it to `Engine::handle_local` or
    /// `SyncHandle::submit`). Drain after every batch of frames.
    pub fn poll_local(&mut self, fwd: &mut Forwarder, now: Instant) -> Option<SessionEvent> {
        loop {
            let c = fwd.poll_session_change()?;
            if c.from_peer {
                self.stats.local_skipped_peer += 1;
                continue;
            }
            let mut record = record_of(&c, now);
            if c.removed {
                self.stats.local_removals += 1;
                record.flags.set(EntryFlags::REMOVED, true);
                return Some(SessionEvent::forced(record));
            }
            self.stats.local_events += 1;
            return Some(SessionEvent::new(record, c.packets_in, c.previous));
        }
    }

    /// Applies an engine event to the forwarder.
    pub fn handle_event(&mut self, fwd: &mut Forwarder, now: Instant, event: Event) -> Followup {
        match event {
            Event::Upsert(s) => {
                self.stats.upserts += 1;
                match install_of(&s.record, now) {
                    Some(i) => {
                        let _ = fwd.install_session(now, &i);
                    }
                    None => self.stats.upserts_unsupported += 1,
                }
            }
            Event::Remove { key, .. } => {
                self.stats.removals += 1;
                let k = slb_core::flow::FlowKey::new(key.proto, key.client, key.virt);
                if fwd.remove_peer_session(&k, now) {
                    self.stats.removals_applied += 1;
                }
            }
            Event::SnapshotRequested(req) => return Followup::Snapshot(req),
            Event::PeerUp { node, .. } => {
                self.takeover.peer_up(node);
                self.retake(fwd, now);
            }
            Event::PeerDown { node } => {
                self.stats.peer_downs += 1;
                self.takeover.peer_down(node);
                self.retake(fwd, now);
            }
            Event::Ready => self.set_ready(fwd, now),
            _ => {}
        }
        Followup::None
    }

    /// Every session worth sending to a peer that asked for a snapshot.
    pub fn snapshot(&mut self, fwd: &Forwarder, now: Instant) -> Vec<SessionRecord> {
        let v: Vec<SessionRecord> = fwd.session_snapshot(now).map(|c| record_of(&c, now)).collect();
        self.stats.snapshots += 1;
        self.stats.snapshot_records += v.len() as u64;
        v
    }

    /// Refreshes the view of the peers (liveness and whether they are still joining) from the
    /// engine's `peers()` / `is_ready()`, or a driver status. Call it regularly: a peer that
    /// finishes joining produces no event.
    pub fn update_peers(
        &mut self,
        fwd: &mut Forwarder,
        now: Instant,
        peers: &[PeerInfo],
        ready: bool,
    ) {
        if ready && !self.ready {
            self.set_ready(fwd, now);
        }
        if self.takeover.update(peers) {
            self.retake(fwd, now);
        }
    }

    fn set_ready(&mut self, fwd: &mut Forwarder, now: Instant) {
        if self.ready {
            return;
        }
        self.ready = true;
        self.ready_at = Some(now);
        self.takeover.set_ready(true);
        self.retake(fwd, now);
    }

    fn retake(&mut self, fwd: &mut Forwarder, now: Instant) {
        let change = self.takeover.apply(fwd);
        self.stats.addrs_taken += change.taken.len() as u64;
        self.stats.addrs_released += change.released.len() as u64;
        self.announce.retain(|(_, ip)| !change.released.contains(ip));
        for ip in change.taken {
            for d in &self.cfg.announce_schedule {
                self.announce.push((now + *d, ip));
            }
        }
    }

    /// Stops answering ARP/ND for every address (leaving the cluster: peers take them over and
    /// announce them; frames that still arrive here are forwarded). Nothing more is announced.
    pub fn go_quiet(&mut self, fwd: &mut Forwarder) {
        for ip in self.takeover.held() {
            fwd.set_quiet(ip, true);
        }
        self.announce.clear();
    }

    /// Gratuitous ARPs / unsolicited NAs due at `now` for addresses this node took.
    pub fn poll_announcements(&mut self, fwd: &Forwarder, now: Instant) -> Vec<(PortId, FrameBuf)> {
        if self.announce.is_empty() {
            return Vec::new();
        }
        let mut due = Vec::new();
        self.announce.retain(|&(t, ip)| {
            if t <= now {
                if !due.contains(&ip) {
                    due.push(ip);
                }
                false
            } else {
                true
            }
        });
        let frames = fwd.announcements_for(&due);
        self.stats.announcements += frames.len() as u64;
        frames
    }

    /// When [`Cluster::poll_announcements`] has something next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.announce.iter().map(|(t, _)| *t).min()
    }
}
