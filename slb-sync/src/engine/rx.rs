//! Receiving: validation, peers, the data stream, NACKs and resync messages.

use std::net::SocketAddr;

use slb_core::time::Instant;

use super::known::{Applied, Known};
use super::peers::Peer;
use super::recv::Arrival;
use super::resync::{ChunkArrival, OutgoingResync};
use super::{Destination, Engine, Event, SnapshotRequest};
use crate::conflict::{Decision, Target, resolve};
use crate::replay::Accepted;
use crate::types::NodeId;
use crate::wire::{
    Datagram, Entries, Error, FLAG_JOINING, HeaderRepr, MAX_NACK_RANGES_PER_MSG, Message,
    MessageType,
};

/// Most sequence numbers one NACK can make this node resend.
const MAX_RETX_PER_NACK: u64 = 256;

impl Engine {
    /// A datagram arrived from `from`. Every outcome is counted in [`Stats`](super::Stats);
    /// nothing here panics on any input.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        self.stats.rx_datagrams += 1;
        let Ok(d) = Datagram::new_checked(bytes) else {
            self.stats.rx_truncated += 1;
            return;
        };
        let h = match HeaderRepr::parse(&d) {
            Ok(h) => h,
            Err(Error::BadMagic) => return self.stats.rx_bad_magic += 1,
            Err(Error::Version(_)) => return self.stats.rx_wrong_version += 1,
            Err(_) => return self.stats.rx_malformed += 1,
        };
        if h.cluster_id != self.cfg.cluster_id {
            return self.stats.rx_wrong_cluster += 1;
        }
        if h.node_id == self.cfg.node.0 {
            return self.stats.rx_own += 1;
        }
        if self.cfg.key.verify(&d).is_err() {
            return self.stats.rx_bad_mac += 1;
        }
        let node = NodeId(h.node_id);
        if !self.admit_peer(node, from, now) {
            return self.stats.rx_too_many_peers += 1;
        }
        if !self.peer_heard(now, node, from, &h) {
            return self.stats.rx_replayed += 1;
        }
        let Some(ty) = MessageType::from_code(h.msg_type) else {
            return self.stats.rx_unknown_type += 1;
        };
        let body = d.body();
        if ty == MessageType::Updates {
            return self.on_updates(now, node, &h, body);
        }
        if ty == MessageType::ResyncChunk {
            return self.on_chunk(now, node, &h, body);
        }
        let m = match Message::parse(&h, body) {
            Ok(m) => m,
            Err(_) => return self.stats.rx_malformed += 1,
        };
        match m {
            Message::Heartbeat { last_data_seq, oldest_retained } => {
                self.on_heartbeat(now, node, last_data_seq, oldest_retained)
            }
            Message::Nack { target, target_epoch, ranges } => {
                if target != self.cfg.node || target_epoch != self.cfg.epoch {
                    return self.stats.rx_not_for_us += 1;
                }
                self.stats.nacks_received += 1;
                let mut budget = MAX_RETX_PER_NACK;
                let mut unavailable = false;
                for r in ranges {
                    let last = r.last.min(self.data_seq);
                    let mut s = r.first;
                    while s <= last && budget > 0 {
                        budget -= 1;
                        if !self.retransmit(s, Destination::Peer(from)) {
                            self.stats.nack_unavailable += 1;
                            unavailable = true;
                        }
                        s = s.saturating_add(1);
                        if s == u64::MAX {
                            break;
                        }
                    }
                }
                if unavailable {
                    self.send_heartbeat(Destination::Peer(from));
                }
            }
            Message::ResyncRequest { target, request } => {
                if target != self.cfg.node && target != NodeId::ALL {
                    return self.stats.rx_not_for_us += 1;
                }
                self.on_resync_request(now, node, from, request);
            }
            Message::ResyncDone { target, request, chunks, as_of } => {
                if target != self.cfg.node {
                    return self.stats.rx_not_for_us += 1;
                }
                self.on_done(now, node, request, chunks, as_of);
            }
            Message::ResyncAck { target, request, next_missing, complete, missing } => {
                if target != self.cfg.node {
                    return self.stats.rx_not_for_us += 1;
                }
                let Some(pos) =
                    self.outgoing.iter().position(|o| o.peer == node && o.request == request)
                else {
                    return;
                };
                if complete {
                    self.outgoing.swap_remove(pos);
                    self.stats.resync_served += 1;
                    return;
                }
                let (window, gap) = (self.cfg.resync_window, self.cfg.resync_rto / 4);
                let resend = self.outgoing[pos].on_ack(next_missing, &missing, now, window, gap);
                self.send_out_plan(now, pos, &resend, false);
                self.pump_outgoing(now, pos);
            }
            // Updates and chunks were handled above without building a `Message`.
            Message::Updates { .. } | Message::ResyncChunk { .. } => {}
        }
    }

    /// Makes room for a new peer if needed: false if `max_peers` live peers exist.
    fn admit_peer(&mut self, node: NodeId, from: SocketAddr, now: Instant) -> bool {
        if self.peers.contains_key(&node) {
            return true;
        }
        if self.peers.len() >= self.cfg.max_peers {
            let victim = self
                .peers
                .iter()
                .filter(|(_, p)| !p.alive)
                .min_by_key(|(_, p)| p.last_heard)
                .map(|(&n, _)| n);
            match victim {
                Some(v) => {
                    self.peers.remove(&v);
                }
                None => return false,
            }
        }
        self.peers.insert(node, Peer::new(from, now));
        true
    }

    /// Replay check and liveness for an authenticated datagram. False: replayed.
    fn peer_heard(&mut self, now: Instant, node: NodeId, from: SocketAddr, h: &HeaderRepr) -> bool {
        let joining_self = self.join.map(|j| j.request);
        let max_chunks = self.max_chunks();
        let Some(p) = self.peers.get_mut(&node) else { return false };
        let accepted = match p.replay.accept(h.epoch, h.seq) {
            Ok(a) => a,
            Err(_) => return false,
        };
        let mut up = !p.alive;
        if accepted == Accepted::NewEpoch {
            up |= p.epoch != 0;
            p.restarted(h.epoch);
        }
        p.last_heard = now;
        p.addr = from;
        p.alive = true;
        p.joining = h.flags & FLAG_JOINING != 0;
        let mut ask = None;
        if let Some(request) = joining_self {
            if p.incoming.is_none() && !p.join_done {
                p.incoming =
                    Some(super::resync::IncomingResync::new(request, now, max_chunks, true));
                ask = Some(request);
            }
        }
        let epoch = p.epoch;
        if up {
            self.stats.peers_up += 1;
            self.push_event(Event::PeerUp { node, addr: from, epoch });
        }
        if let Some(request) = ask {
            self.stats.resync_requested += 1;
            self.send_message(
                Destination::Peer(from),
                &Message::ResyncRequest { target: node, request },
            );
        }
        true
    }

    fn on_updates(&mut self, now: Instant, node: NodeId, h: &HeaderRepr, body: &[u8]) {
        let (max_reorder, joining) = (self.cfg.max_reorder, self.join.is_some());
        let Some(p) = self.peers.get_mut(&node) else { return };
        let mut resync = false;
        if !p.stream.started() && h.stream > 1 {
            resync = p.stream.start_after(h.stream - 1) && !joining;
        }
        let (arrival, opened) = p.stream.on_data(h.stream, now, max_reorder);
        if opened {
            self.stats.gaps_detected += 1;
        }
        match arrival {
            Arrival::Duplicate => return self.stats.rx_duplicate_data += 1,
            Arrival::Jumped => {
                self.stats.gaps_unrecoverable += 1;
                resync = true;
            }
            Arrival::New => {}
        }
        if resync {
            self.request_resync(now, node, false, None);
        }
        self.apply_entries(now, body, h.count);
    }

    fn on_heartbeat(&mut self, now: Instant, node: NodeId, last: u64, oldest_retained: u64) {
        let joining = self.join.is_some();
        let Some(p) = self.peers.get_mut(&node) else { return };
        let mut resync = false;
        if !p.stream.started() {
            resync = p.stream.start_after(last) && !joining;
        } else {
            if p.stream.on_announce(last, now) {
                self.stats.gaps_detected += 1;
            }
            if p.stream.has_gap() && p.stream.next() < oldest_retained {
                p.stream.skip_to(oldest_retained, now);
                self.stats.gaps_unrecoverable += 1;
                resync = true;
            }
        }
        if resync {
            self.request_resync(now, node, false, None);
        }
    }

    fn apply_entries(&mut self, now: Instant, body: &[u8], count: u16) {
        for e in Entries::new(body, count) {
            match e {
                Ok(rec) => self.apply_remote(now, rec),
                Err(_) => self.stats.rx_bad_entries += 1,
            }
        }
    }

    fn apply_remote(&mut self, now: Instant, rec: crate::SyncedRecord) {
        self.stats.rx_entries += 1;
        self.lamport = self.lamport.max(rec.stamp);
        let key = rec.record.key;
        let removed = rec.record.is_removed();
        let ttl = if removed { self.cfg.tombstone_ttl } else { rec.record.timeout };
        let new = Known {
            origin: rec.origin,
            stamp: rec.stamp,
            expires: now + ttl,
            target: Target::of(&rec.record),
            local: false,
            removed,
            last_sync: now,
        };
        let mut decision = Decision::Apply;
        let outcome = self.known.apply(&key, |held| {
            decision = resolve(held.map(|k| k.held(now)).as_ref(), &rec);
            (decision == Decision::Apply).then_some(new)
        });
        match (decision, outcome) {
            (Decision::Stale, _) => self.stats.entries_stale += 1,
            (Decision::KeepLocal, _) => self.stats.conflicts_local_kept += 1,
            (Decision::Apply, Applied::Refused | Applied::Declined) => {
                self.stats.peer_entries_shed += 1
            }
            (Decision::Apply, Applied::Stored) => {
                self.stats.entries_applied += 1;
                if removed {
                    self.push_event(Event::Remove { key, origin: rec.origin });
                } else {
                    self.push_event(Event::Upsert(rec));
                }
            }
        }
    }

    fn on_resync_request(&mut self, now: Instant, node: NodeId, from: SocketAddr, request: u32) {
        if let Some(pos) = self.outgoing.iter().position(|o| o.peer == node) {
            if self.outgoing[pos].request == request {
                // A retry of a running transfer: probe, so the requester acks what it misses.
                let plan = self.outgoing[pos].probe();
                self.outgoing[pos].addr = from;
                self.send_out_plan(now, pos, &plan.chunks, plan.done);
                return;
            }
            self.outgoing.swap_remove(pos);
        }
        if self.outgoing.len() >= self.cfg.max_resync_sessions {
            return self.stats.resync_refused += 1;
        }
        self.outgoing.push(OutgoingResync::new(node, from, request, now));
        self.push_event(Event::SnapshotRequested(SnapshotRequest { peer: node, id: request }));
    }

    fn on_chunk(&mut self, now: Instant, node: NodeId, h: &HeaderRepr, body: &[u8]) {
        let (Some(b), Ok(index)) = (body.get(..8), u32::try_from(h.stream)) else {
            return self.stats.rx_malformed += 1;
        };
        let target = NodeId(u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        let request = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
        if target != self.cfg.node {
            return self.stats.rx_not_for_us += 1;
        }
        let ack_every = self.cfg.resync_ack_every;
        let Some(p) = self.peers.get_mut(&node) else { return };
        let Some(inc) = p.incoming.as_mut().filter(|i| i.request == request) else {
            if p.last_completed == Some(request) {
                self.send_resync_ack(node, request, 0, true, Vec::new());
            }
            return;
        };
        match inc.on_chunk(index, now) {
            ChunkArrival::OutOfRange => return self.stats.rx_malformed += 1,
            ChunkArrival::Duplicate => return,
            ChunkArrival::New => {}
        }
        self.stats.resync_chunks_received += 1;
        let due = inc.unacked >= ack_every || inc.is_complete();
        self.apply_entries(now, &body[8..], h.count);
        if due {
            self.ack_incoming(now, node);
        }
    }

    fn on_done(&mut self, now: Instant, node: NodeId, request: u32, chunks: u32, as_of: u64) {
        let Some(p) = self.peers.get_mut(&node) else { return };
        let Some(inc) = p.incoming.as_mut().filter(|i| i.request == request) else {
            if p.last_completed == Some(request) {
                self.send_resync_ack(node, request, 0, true, Vec::new());
            }
            return;
        };
        if !inc.on_done(chunks, as_of, now) {
            return self.stats.rx_malformed += 1;
        }
        self.ack_incoming(now, node);
    }

    /// Acks the snapshot being received from `node`, finishing it if complete.
    pub(super) fn ack_incoming(&mut self, now: Instant, node: NodeId) {
        let Some(p) = self.peers.get_mut(&node) else { return };
        let Some(inc) = p.incoming.as_mut() else { return };
        let request = inc.request;
        if !inc.is_complete() {
            let (next, missing) = inc.ack(now, MAX_NACK_RANGES_PER_MSG);
            return self.send_resync_ack(node, request, next, false, missing);
        }
        let as_of = inc.as_of;
        let for_join = inc.for_join;
        p.incoming = None;
        p.last_completed = Some(request);
        if for_join {
            p.join_done = true;
        }
        if p.stream.started() {
            p.stream.skip_to(as_of.saturating_add(1), now);
        } else {
            p.stream.start_after(as_of);
        }
        self.stats.resync_completed += 1;
        self.send_resync_ack(node, request, 0, true, Vec::new());
        self.push_event(Event::ResyncComplete { peer: node });
        self.check_ready(now);
    }

    fn send_resync_ack(
        &mut self,
        node: NodeId,
        request: u32,
        next_missing: u32,
        complete: bool,
        missing: Vec<crate::wire::ResyncAckRange>,
    ) {
        let Some(addr) = self.addr_of(node) else { return };
        let m = Message::ResyncAck { target: node, request, next_missing, complete, missing };
        self.send_message(Destination::Peer(addr), &m);
    }

    /// Ends the startup resync if discovery is over and no live peer is pending.
    pub(super) fn check_ready(&mut self, _now: Instant) {
        let Some(j) = self.join else { return };
        if !j.discovery_passed {
            return;
        }
        if self.peers.values().any(|p| p.alive && !p.join_done) {
            return;
        }
        self.join = None;
        self.push_event(Event::Ready);
    }
}
