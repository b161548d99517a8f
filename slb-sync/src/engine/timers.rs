//! Time-driven work: flushing, heartbeats, liveness, NACKs, resync timers, expiry.

use std::time::Duration;

use slb_core::time::Instant;

use super::resync::OutState;
use super::{Destination, Engine, Event};
use crate::types::NodeId;
use crate::wire::{MAX_NACK_RANGES_PER_MSG, Message};

/// How often remembered sessions are swept for expiry, and how many per sweep at most.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
const SWEEP_BUDGET: usize = 16_384;

impl Engine {
    /// Does whatever is due at `now`. Safe to call at any time, any number of times.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.batch_started.is_some_and(|t| t + self.cfg.flush_delay <= now) {
            self.flush(now);
        }
        if self.next_heartbeat <= now {
            self.send_heartbeat(Destination::Group);
            self.next_heartbeat = now + self.cfg.heartbeat_interval;
        }
        self.peer_timers(now);
        self.outgoing_timers(now);
        if let Some(j) = self.join.as_mut() {
            if !j.discovery_passed && j.since + self.cfg.join_discovery <= now {
                j.discovery_passed = true;
                self.check_ready(now);
            }
        }
        if self.next_sweep <= now {
            self.known.sweep(now, SWEEP_BUDGET);
            self.next_sweep = now + SWEEP_EVERY;
        }
    }

    fn peer_timers(&mut self, now: Instant) {
        let dead_after = self.cfg.dead_after();
        let mut nodes: Vec<NodeId> = self.peers.keys().copied().collect();
        nodes.sort_unstable();
        for node in nodes {
            let Some(p) = self.peers.get_mut(&node) else { continue };
            if !p.alive {
                continue;
            }
            if p.last_heard + dead_after <= now {
                p.alive = false;
                let failed = p.incoming.take();
                if failed.as_ref().is_some_and(|i| i.for_join) || self.join.is_some() {
                    p.join_done = true;
                }
                self.stats.peers_down += 1;
                self.push_event(Event::PeerDown { node });
                if failed.is_some() {
                    self.stats.resync_failed += 1;
                    self.push_event(Event::ResyncFailed { peer: node });
                }
                self.check_ready(now);
                continue;
            }
            self.nack_timer(now, node);
            self.incoming_timer(now, node);
        }
    }

    fn nack_timer(&mut self, now: Instant, node: NodeId) {
        let (delay, interval, max) =
            (self.cfg.nack_delay, self.cfg.nack_interval, self.cfg.max_nack_attempts);
        let Some(p) = self.peers.get_mut(&node) else { return };
        if p.stream.nack_due(delay, interval).is_none_or(|t| t > now) {
            return;
        }
        if p.stream.nack_attempts >= max {
            p.stream.abandon_gaps(now);
            self.stats.gaps_unrecoverable += 1;
            return self.request_resync(now, node, false, None);
        }
        let ranges = p.stream.missing(MAX_NACK_RANGES_PER_MSG);
        p.stream.last_nack = Some(now);
        p.stream.nack_attempts += 1;
        let (addr, epoch) = (p.addr, p.epoch);
        self.stats.nacks_sent += 1;
        self.send_message(
            Destination::Peer(addr),
            &Message::Nack { target: node, target_epoch: epoch, ranges },
        );
    }

    fn incoming_timer(&mut self, now: Instant, node: NodeId) {
        let (ack_delay, timeout, attempts) =
            (self.cfg.resync_ack_delay, self.cfg.resync_timeout, self.cfg.resync_attempts);
        let ack_due = self
            .peers
            .get(&node)
            .and_then(|p| p.incoming.as_ref())
            .is_some_and(|inc| inc.unacked > 0 && inc.last_ack + ack_delay <= now);
        if ack_due {
            self.ack_incoming(now, node);
        }
        let Some(p) = self.peers.get_mut(&node) else { return };
        let Some(inc) = p.incoming.as_mut() else { return };
        if inc.last_activity + timeout > now {
            return;
        }
        if inc.attempts >= attempts {
            let for_join = inc.for_join;
            p.incoming = None;
            if for_join {
                p.join_done = true;
            }
            self.stats.resync_failed += 1;
            self.push_event(Event::ResyncFailed { peer: node });
            return self.check_ready(now);
        }
        inc.attempts += 1;
        inc.last_activity = now;
        let request = inc.request;
        let addr = p.addr;
        self.send_message(
            Destination::Peer(addr),
            &Message::ResyncRequest { target: node, request },
        );
    }

    fn outgoing_timers(&mut self, now: Instant) {
        let (rto, timeout) = (self.cfg.resync_rto, self.cfg.resync_timeout);
        let mut pos = 0;
        while pos < self.outgoing.len() {
            let o = &self.outgoing[pos];
            if o.last_progress + timeout.saturating_mul(2) <= now {
                self.outgoing.swap_remove(pos);
                self.stats.resync_abandoned += 1;
                continue;
            }
            if matches!(o.state, OutState::Sending { .. }) && o.last_tx + rto <= now {
                let plan = o.probe();
                self.send_out_plan(now, pos, &plan.chunks, plan.done);
                self.outgoing[pos].last_tx = now;
            }
            pos += 1;
        }
    }

    /// When `handle_timeout` should run next (`None`: nothing scheduled, which does not happen
    /// while heartbeats run).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t = self.next_heartbeat.min(self.next_sweep);
        let mut at = |x: Instant| t = t.min(x);
        if let Some(s) = self.batch_started {
            at(s + self.cfg.flush_delay);
        }
        let dead_after = self.cfg.dead_after();
        for p in self.peers.values().filter(|p| p.alive) {
            at(p.last_heard + dead_after);
            if let Some(d) = p.stream.nack_due(self.cfg.nack_delay, self.cfg.nack_interval) {
                at(d);
            }
            if let Some(i) = &p.incoming {
                if i.unacked > 0 {
                    at(i.last_ack + self.cfg.resync_ack_delay);
                }
                at(i.last_activity + self.cfg.resync_timeout);
            }
        }
        for o in &self.outgoing {
            at(o.last_progress + self.cfg.resync_timeout.saturating_mul(2));
            if matches!(o.state, OutState::Sending { .. }) {
                at(o.last_tx + self.cfg.resync_rto);
            }
        }
        if let Some(j) = &self.join {
            if !j.discovery_passed {
                at(j.since + self.cfg.join_discovery);
            }
        }
        Some(t)
    }
}
