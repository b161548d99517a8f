//! The sans-IO sync engine.
//!
//! Inputs: [`Engine::handle_local`] (a local session changed), [`Engine::handle_datagram`] (bytes
//! from a peer), [`Engine::handle_timeout`] (time passed), [`Engine::provide_snapshot`] (the
//! owner's answer to [`Event::SnapshotRequested`]). Outputs: [`Engine::poll_transmit`]
//! (datagrams to send), [`Engine::poll_event`] (sessions to install, peers, resync progress),
//! [`Engine::poll_timeout`] (when to call `handle_timeout` next). The engine never reads a
//! clock and never touches a socket; a driver calls `handle_timeout(now)` when `poll_timeout`
//! passes and drains both poll queues after every input.
//!
//! ## Sending
//! Local events pass the trigger ([`crate::trigger`]), get a Lamport stamp, and are packed into
//! the current updates datagram. It is sent when the next entry would not fit or `flush_delay`
//! after its first entry. Each updates datagram takes the next data sequence number and is kept
//! in a resend queue of `resend_capacity` datagrams for NACKs. A heartbeat every
//! `heartbeat_interval` announces the last data sequence number (so receivers see tail loss)
//! and the oldest one still retained.
//!
//! ## Receiving
//! Checks in order, each failure counted in [`Stats`]: length, magic, version, cluster id, own
//! node id, authentication tag, replay window, message type, body. Entries then go through the
//! conflict rules ([`crate::conflict`]). A gap in a peer's data stream is NACKed after
//! `nack_delay`, again every `nack_interval`; a gap that cannot be recovered (too old for the
//! sender's resend queue, too many attempts, too far ahead) is covered by a resync from that
//! peer instead.
//!
//! ## Startup
//! With `resync_on_start`, a new engine asks every node for its table and reports
//! [`Event::Ready`] once every peer heard within `join_discovery` has sent a complete snapshot,
//! failed to, or gone down. [`Engine::is_ready`] tells the dataplane whether to take traffic.

mod config;
mod event;
mod known;
mod peers;
mod recv;
mod resync;
mod rx;
mod stats;
mod timers;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;

use slb_core::time::Instant;

pub use config::{Config, ConfigError, MAX_DATAGRAM, MIN_DATAGRAM};
pub use event::{Destination, Event, SessionEvent, SnapshotRequest, Transmit};
pub use peers::PeerInfo;
pub use stats::Stats;

use crate::conflict::Target;
use crate::trigger::{TriggerInput, sync_needed};
use crate::types::{EntryFlags, NodeId, SessionRecord, SyncedRecord};
use crate::wire::{
    Datagram, FLAG_JOINING, FLAG_RETRANSMIT, HEADER_LEN, HeaderRepr, Message, MessageType, TAG_LEN,
};
use known::{Known, KnownTable};
use peers::Peer;
use resync::{Chunk, OutState, OutgoingResync};

/// A sent updates datagram, kept for retransmission (sealed; re-sealed with a new sequence
/// number when resent).
#[derive(Debug)]
struct Sent {
    data_seq: u64,
    bytes: Vec<u8>,
}

#[derive(Debug, Clone, Copy)]
struct Join {
    since: Instant,
    request: u32,
    discovery_passed: bool,
}

/// The replication engine of one node. See the module documentation.
#[derive(Debug)]
pub struct Engine {
    cfg: Config,
    stats: Stats,
    lamport: u64,
    tx_seq: u64,
    batch: Vec<u8>,
    batch_count: u16,
    batch_started: Option<Instant>,
    data_seq: u64,
    resend: VecDeque<Sent>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    next_heartbeat: Instant,
    peers: HashMap<NodeId, Peer>,
    known: KnownTable,
    outgoing: Vec<OutgoingResync>,
    next_request: u32,
    join: Option<Join>,
    next_sweep: Instant,
}

impl Engine {
    /// A new engine started at `now`. With `resync_on_start` it immediately queues a resync
    /// request to every node; otherwise it is ready at once (and reports [`Event::Ready`]).
    pub fn new(cfg: Config, now: Instant) -> Result<Engine, ConfigError> {
        cfg.validate()?;
        let mut e = Engine {
            lamport: u64::from(cfg.epoch) << 32,
            tx_seq: 0,
            batch: Vec::with_capacity(cfg.max_datagram),
            batch_count: 0,
            batch_started: None,
            data_seq: 0,
            resend: VecDeque::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            next_heartbeat: now,
            peers: HashMap::new(),
            known: KnownTable::new(
                cfg.max_entries_per_origin,
                cfg.max_peers.saturating_add(1),
                cfg.key.hash_key(),
                cfg.known_capacity,
            ),
            outgoing: Vec::new(),
            next_request: 1,
            join: None,
            next_sweep: now,
            stats: Stats::default(),
            cfg,
        };
        e.batch.resize(HEADER_LEN, 0);
        if e.cfg.resync_on_start {
            let request = e.new_request_id();
            e.join = Some(Join { since: now, request, discovery_passed: false });
            e.stats.resync_requested += 1;
            e.send_message(
                Destination::Group,
                &Message::ResyncRequest { target: NodeId::ALL, request },
            );
        } else {
            e.push_event(Event::Ready);
        }
        Ok(e)
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// This node.
    pub fn node(&self) -> NodeId {
        self.cfg.node
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// True once the startup resync is over (always true without `resync_on_start`).
    pub fn is_ready(&self) -> bool {
        self.join.is_none()
    }

    /// Session keys remembered (local and learned) for conflict resolution.
    pub fn known_sessions(&self) -> usize {
        self.known.len()
    }

    /// A summary of every peer.
    pub fn peers(&self) -> Vec<PeerInfo> {
        let mut v: Vec<PeerInfo> = self
            .peers
            .iter()
            .map(|(&node, p)| PeerInfo {
                node,
                addr: p.addr,
                epoch: p.epoch,
                alive: p.alive,
                joining: p.joining,
                next_data_seq: p.stream.next(),
                gap: p.stream.has_gap(),
                resyncing: p.incoming.is_some(),
            })
            .collect();
        v.sort_by_key(|p| p.node);
        v
    }

    /// A local session changed. Returns true if it was queued for sending (it passed the
    /// trigger, or `ev.force` was set, or the engine has no trigger).
    pub fn handle_local(&mut self, now: Instant, ev: SessionEvent) -> bool {
        self.stats.local_events += 1;
        let me = self.cfg.node;
        let key = ev.record.key;
        if let (Some(trig), false) = (&self.cfg.trigger, ev.force) {
            // Only the refresh rule needs the last sync time: spare the lookup otherwise.
            let last_sync = match trig.refresh {
                Some(_) => {
                    self.known.get(&key).filter(|k| k.local && k.origin == me).map(|k| k.last_sync)
                }
                None => None,
            };
            let input = TriggerInput {
                previous: ev.previous_state,
                state: ev.record.state,
                packets_in: ev.packets_in,
                last_sync,
                now,
            };
            if !sync_needed(trig, &input) {
                self.stats.local_filtered += 1;
                return false;
            }
        }
        self.lamport = self.lamport.saturating_add(1);
        let entry = SyncedRecord { origin: me, stamp: self.lamport, record: ev.record };
        if entry.check_encodable().is_err() {
            self.stats.local_unencodable += 1;
            return false;
        }
        let removed = entry.record.is_removed();
        let known = Known {
            origin: me,
            stamp: entry.stamp,
            expires: now + if removed { self.cfg.tombstone_ttl } else { entry.record.timeout },
            target: Target::of(&entry.record),
            local: !removed,
            removed,
            last_sync: now,
        };
        if !self.known.insert(key, known) {
            self.stats.local_untracked += 1;
        }
        self.enqueue_entry(now, &entry);
        true
    }

    /// A local session was removed: tell peers (a tombstone), bypassing the trigger.
    pub fn handle_local_removed(&mut self, now: Instant, mut record: SessionRecord) -> bool {
        record.flags.set(EntryFlags::REMOVED, true);
        self.handle_local(now, SessionEvent::forced(record))
    }

    /// Sends the pending updates datagram now, if any.
    pub fn flush(&mut self, _now: Instant) {
        if self.batch_count == 0 {
            return;
        }
        self.data_seq += 1;
        let h = self.header(MessageType::Updates, 0, self.data_seq, self.batch_count);
        let mut bytes =
            std::mem::replace(&mut self.batch, Vec::with_capacity(self.cfg.max_datagram));
        self.batch.resize(HEADER_LEN, 0);
        bytes.resize(bytes.len() + TAG_LEN, 0);
        h.emit(&mut Datagram::new_unchecked(&mut bytes[..]));
        self.seal(&mut bytes, 0);
        self.stats.tx_updates += 1;
        self.stats.tx_entries += u64::from(self.batch_count);
        self.batch_count = 0;
        self.batch_started = None;
        if self.resend.len() >= self.cfg.resend_capacity {
            self.resend.pop_front();
        }
        self.resend.push_back(Sent { data_seq: self.data_seq, bytes: bytes.clone() });
        self.push_transmit(Destination::Group, bytes);
    }

    /// The owner's answer to [`Event::SnapshotRequested`]: every session it holds. Records the
    /// engine learned from peers keep their origin and stamp; the others are stamped now as
    /// this node's. Returns false if the request is unknown or already answered (it timed out,
    /// or the peer asked again with another id).
    pub fn provide_snapshot<I>(&mut self, now: Instant, req: SnapshotRequest, records: I) -> bool
    where
        I: IntoIterator<Item = SessionRecord>,
    {
        let Some(pos) = self.outgoing.iter().position(|o| {
            o.peer == req.peer && o.request == req.id && matches!(o.state, OutState::Awaiting)
        }) else {
            return false;
        };
        self.lamport = self.lamport.saturating_add(1);
        let fresh = self.lamport;
        let me = self.cfg.node;
        let room = self.cfg.update_room() - 8;
        let mut chunks = Vec::new();
        let mut cur = Chunk { entries: Vec::with_capacity(room), count: 0, sent_at: None };
        let mut n = 0usize;
        for record in records {
            if n >= self.cfg.max_snapshot_entries {
                self.stats.snapshot_truncated += 1;
                continue;
            }
            let (origin, stamp) = match self.known.get(&record.key) {
                Some(k) if !k.local && !k.removed && k.target == Target::of(&record) => {
                    (k.origin, k.stamp)
                }
                _ => (me, fresh),
            };
            let entry = SyncedRecord { origin, stamp, record };
            let len = entry.buffer_len();
            if entry.check_encodable().is_err() || len > room {
                self.stats.local_unencodable += 1;
                continue;
            }
            if cur.entries.len() + len > room {
                let full = std::mem::replace(
                    &mut cur,
                    Chunk { entries: Vec::with_capacity(room), count: 0, sent_at: None },
                );
                chunks.push(full);
            }
            let at = cur.entries.len();
            cur.entries.resize(at + len, 0);
            if entry.emit(&mut cur.entries[at..]).is_ok() {
                cur.count += 1;
                n += 1;
            } else {
                cur.entries.truncate(at);
            }
        }
        if cur.count > 0 {
            chunks.push(cur);
        }
        let o = &mut self.outgoing[pos];
        o.state = OutState::Sending {
            chunks,
            as_of: self.data_seq,
            acked_below: 0,
            next_new: 0,
            done_sent: false,
        };
        o.last_progress = now;
        self.pump_outgoing(now, pos);
        true
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event for the owner.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    // ---- helpers shared by the submodules ----

    fn new_request_id(&mut self) -> u32 {
        let id = self.next_request;
        self.next_request = self.next_request.wrapping_add(1).max(1);
        id
    }

    fn header(&self, ty: MessageType, flags: u16, stream: u64, count: u16) -> HeaderRepr {
        HeaderRepr {
            msg_type: ty as u8,
            flags,
            cluster_id: self.cfg.cluster_id,
            node_id: self.cfg.node.0,
            epoch: self.cfg.epoch,
            seq: 0,
            stream,
            count,
        }
    }

    /// Gives a complete datagram its sequence number and flags, and signs it.
    fn seal(&mut self, bytes: &mut [u8], extra_flags: u16) {
        self.tx_seq += 1;
        let joining = if self.join.is_some() { FLAG_JOINING } else { 0 };
        let mut d = Datagram::new_unchecked(bytes);
        let flags = (d.flags() & !FLAG_JOINING) | joining | extra_flags;
        d.set_flags(flags);
        d.set_seq(self.tx_seq);
        self.cfg.key.sign(&mut d);
    }

    fn send_message(&mut self, dest: Destination, m: &Message) {
        let mut bytes = vec![0u8; m.buffer_len()];
        let h = self.header(m.msg_type(), 0, 0, 0);
        if m.emit(&h, &self.cfg.key, &mut bytes).is_err() {
            return;
        }
        self.seal(&mut bytes, 0);
        self.push_transmit(dest, bytes);
    }

    fn push_transmit(&mut self, dest: Destination, bytes: Vec<u8>) {
        if self.transmits.len() >= self.cfg.max_transmit_queue {
            self.stats.tx_queue_full += 1;
            return;
        }
        self.stats.tx_datagrams += 1;
        self.transmits.push_back(Transmit { dest, bytes });
    }

    fn push_event(&mut self, e: Event) {
        if self.events.len() >= self.cfg.max_event_queue {
            self.stats.events_dropped += 1;
            return;
        }
        self.events.push_back(e);
    }

    fn enqueue_entry(&mut self, now: Instant, entry: &SyncedRecord) {
        let len = entry.buffer_len();
        if self.batch.len() + len + TAG_LEN > self.cfg.max_datagram {
            self.flush(now);
        }
        let at = self.batch.len();
        self.batch.resize(at + len, 0);
        if entry.emit(&mut self.batch[at..]).is_err() {
            self.batch.truncate(at);
            self.stats.local_unencodable += 1;
            return;
        }
        self.batch_count += 1;
        self.batch_started.get_or_insert(now);
    }

    /// Resends updates datagram `data_seq` to `dest`; false if no longer retained.
    fn retransmit(&mut self, data_seq: u64, dest: Destination) -> bool {
        let Some(front) = self.resend.front() else { return false };
        let Some(idx) = data_seq.checked_sub(front.data_seq) else { return false };
        let Some(sent) = self.resend.get(usize::try_from(idx).unwrap_or(usize::MAX)) else {
            return false;
        };
        let mut bytes = sent.bytes.clone();
        self.seal(&mut bytes, FLAG_RETRANSMIT);
        self.stats.tx_retransmits += 1;
        self.push_transmit(dest, bytes);
        true
    }

    fn oldest_retained(&self) -> u64 {
        self.resend.front().map_or(self.data_seq + 1, |s| s.data_seq)
    }

    fn send_heartbeat(&mut self, dest: Destination) {
        self.stats.tx_heartbeats += 1;
        let m = Message::Heartbeat {
            last_data_seq: self.data_seq,
            oldest_retained: self.oldest_retained(),
        };
        self.send_message(dest, &m);
    }

    /// Sends what the window of outgoing resync `pos` allows.
    fn pump_outgoing(&mut self, now: Instant, pos: usize) {
        let window = self.cfg.resync_window;
        let plan = self.outgoing[pos].pump(window);
        self.send_out_plan(now, pos, &plan.chunks, plan.done);
    }

    fn send_out_plan(&mut self, now: Instant, pos: usize, chunks: &[u32], done: bool) {
        let (peer, request, addr) = {
            let o = &self.outgoing[pos];
            (o.peer, o.request, o.addr)
        };
        for &i in chunks {
            let OutState::Sending { chunks: cs, .. } = &mut self.outgoing[pos].state else {
                return;
            };
            let Some(c) = cs.get_mut(i as usize) else { continue };
            c.sent_at = Some(now);
            let mut bytes = vec![0u8; HEADER_LEN + 8 + c.entries.len() + TAG_LEN];
            bytes[HEADER_LEN + 8..HEADER_LEN + 8 + c.entries.len()].copy_from_slice(&c.entries);
            let count = c.count;
            let h = self.header(MessageType::ResyncChunk, 0, u64::from(i), count);
            let mut d = Datagram::new_unchecked(&mut bytes[..]);
            h.emit(&mut d);
            let body = d.body_mut();
            body[..4].copy_from_slice(&peer.0.to_be_bytes());
            body[4..8].copy_from_slice(&request.to_be_bytes());
            self.seal(&mut bytes, 0);
            self.stats.resync_chunks_sent += 1;
            self.push_transmit(Destination::Peer(addr), bytes);
        }
        if done {
            let OutState::Sending { chunks: cs, as_of, .. } = &self.outgoing[pos].state else {
                return;
            };
            let m = Message::ResyncDone {
                target: peer,
                request,
                chunks: cs.len() as u32,
                as_of: *as_of,
            };
            self.send_message(Destination::Peer(addr), &m);
        }
        if !chunks.is_empty() || done {
            self.outgoing[pos].last_tx = now;
        }
    }

    /// Starts a snapshot transfer from `node` unless one is running.
    fn request_resync(&mut self, now: Instant, node: NodeId, for_join: bool, request: Option<u32>) {
        let request = match request {
            Some(r) => r,
            None => self.new_request_id(),
        };
        let max_chunks = self.max_chunks();
        let Some(p) = self.peers.get_mut(&node) else { return };
        if p.incoming.is_some() {
            return;
        }
        p.incoming = Some(resync::IncomingResync::new(request, now, max_chunks, for_join));
        let addr = p.addr;
        self.stats.resync_requested += 1;
        self.send_message(
            Destination::Peer(addr),
            &Message::ResyncRequest { target: node, request },
        );
    }

    fn max_chunks(&self) -> u32 {
        u32::try_from(self.cfg.max_snapshot_entries).unwrap_or(u32::MAX)
    }

    fn addr_of(&self, node: NodeId) -> Option<SocketAddr> {
        self.peers.get(&node).map(|p| p.addr)
    }
}
