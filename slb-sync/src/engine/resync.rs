//! Bulk resync, both sides.
//!
//! The requester sends a resync request (to the group at startup, else to one peer). The
//! responder asks its owner for a table snapshot ([`Event::SnapshotRequested`]), encodes it into
//! chunks and streams them with at most `resync_window` unacknowledged, then a "done" message
//! naming the number of chunks and the data sequence number the snapshot is as of. The
//! requester acknowledges every `resync_ack_every` chunks (or after `resync_ack_delay`) with the
//! lowest missing chunk and the missing ranges above it; the responder resends those, and on
//! silence for `resync_rto` probes with the lowest unacknowledged chunk and "done". When the
//! requester has every chunk it acknowledges "complete", skips its copy of the responder's data
//! stream to the snapshot's position, and reports [`Event::ResyncComplete`].
//!
//! [`Event::SnapshotRequested`]: crate::Event::SnapshotRequested
//! [`Event::ResyncComplete`]: crate::Event::ResyncComplete

use std::net::SocketAddr;
use std::time::Duration;

use slb_core::time::Instant;

use crate::types::NodeId;
use crate::wire::ResyncAckRange;

/// A snapshot this node is receiving from one peer.
#[derive(Debug, Clone)]
pub(crate) struct IncomingResync {
    pub(crate) request: u32,
    pub(crate) attempts: u32,
    pub(crate) last_activity: Instant,
    pub(crate) total: Option<u32>,
    pub(crate) as_of: u64,
    /// Counts towards the startup resync.
    pub(crate) for_join: bool,
    received: Vec<u64>,
    received_count: u32,
    highest_plus_one: u32,
    pub(crate) unacked: u32,
    pub(crate) last_ack: Instant,
    max_chunks: u32,
}

/// What a chunk index means to the requester.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ChunkArrival {
    New,
    Duplicate,
    OutOfRange,
}

impl IncomingResync {
    pub(crate) fn new(request: u32, now: Instant, max_chunks: u32, for_join: bool) -> Self {
        IncomingResync {
            request,
            attempts: 1,
            last_activity: now,
            total: None,
            as_of: 0,
            for_join,
            received: Vec::new(),
            received_count: 0,
            highest_plus_one: 0,
            unacked: 0,
            last_ack: now,
            max_chunks,
        }
    }

    fn has(&self, i: u32) -> bool {
        self.received.get((i / 64) as usize).is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    pub(crate) fn on_chunk(&mut self, index: u32, now: Instant) -> ChunkArrival {
        if index >= self.max_chunks || self.total.is_some_and(|t| index >= t) {
            return ChunkArrival::OutOfRange;
        }
        self.last_activity = now;
        if self.has(index) {
            return ChunkArrival::Duplicate;
        }
        let w = (index / 64) as usize;
        if self.received.len() <= w {
            self.received.resize(w + 1, 0);
        }
        self.received[w] |= 1 << (index % 64);
        self.received_count += 1;
        self.highest_plus_one = self.highest_plus_one.max(index + 1);
        self.unacked += 1;
        ChunkArrival::New
    }

    /// Records "done". False if the chunk count is impossible.
    pub(crate) fn on_done(&mut self, chunks: u32, as_of: u64, now: Instant) -> bool {
        if chunks > self.max_chunks || chunks < self.highest_plus_one {
            return false;
        }
        self.last_activity = now;
        self.total = Some(chunks);
        self.as_of = as_of;
        true
    }

    pub(crate) fn is_complete(&self) -> bool {
        self.total == Some(self.received_count)
    }

    /// The acknowledgement to send: (next missing, missing ranges above it).
    pub(crate) fn ack(&mut self, now: Instant, max_ranges: usize) -> (u32, Vec<ResyncAckRange>) {
        self.unacked = 0;
        self.last_ack = now;
        let upper = self.total.unwrap_or(self.highest_plus_one);
        let mut next_missing = 0;
        while next_missing < upper && self.has(next_missing) {
            next_missing += 1;
        }
        let mut ranges = Vec::new();
        let mut i = next_missing;
        while i < upper && ranges.len() < max_ranges {
            if self.has(i) {
                i += 1;
                continue;
            }
            let first = i;
            while i < upper && !self.has(i) {
                i += 1;
            }
            ranges.push(ResyncAckRange { first, last: i - 1 });
        }
        (next_missing, ranges)
    }
}

/// One encoded chunk of a snapshot: the entries' bytes and their count.
#[derive(Debug, Clone)]
pub(crate) struct Chunk {
    pub(crate) entries: Vec<u8>,
    pub(crate) count: u16,
    pub(crate) sent_at: Option<Instant>,
}

#[derive(Debug, Clone)]
pub(crate) enum OutState {
    /// Waiting for the owner's snapshot since the given time.
    Awaiting,
    /// Streaming.
    Sending { chunks: Vec<Chunk>, as_of: u64, acked_below: u32, next_new: u32, done_sent: bool },
}

/// A snapshot this node serves to one peer.
#[derive(Debug, Clone)]
pub(crate) struct OutgoingResync {
    pub(crate) peer: NodeId,
    pub(crate) addr: SocketAddr,
    pub(crate) request: u32,
    pub(crate) state: OutState,
    pub(crate) last_progress: Instant,
    pub(crate) last_tx: Instant,
}

/// What the responder should send now.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct OutPlan {
    pub(crate) chunks: Vec<u32>,
    pub(crate) done: bool,
}

impl OutgoingResync {
    pub(crate) fn new(peer: NodeId, addr: SocketAddr, request: u32, now: Instant) -> Self {
        OutgoingResync {
            peer,
            addr,
            request,
            state: OutState::Awaiting,
            last_progress: now,
            last_tx: now,
        }
    }

    /// New chunks the window allows, then "done" once everything went out at least once.
    pub(crate) fn pump(&mut self, window: u32) -> OutPlan {
        let mut plan = OutPlan::default();
        if let OutState::Sending { chunks, acked_below, next_new, done_sent, .. } = &mut self.state
        {
            let total = chunks.len() as u32;
            while *next_new < total && *next_new < acked_below.saturating_add(window) {
                plan.chunks.push(*next_new);
                *next_new += 1;
            }
            if *next_new == total && !*done_sent {
                *done_sent = true;
                plan.done = true;
            }
        }
        plan
    }

    /// Applies an acknowledgement; returns the chunks to resend (bounded by `window`), skipping
    /// chunks sent less than `min_gap` ago.
    pub(crate) fn on_ack(
        &mut self,
        next_missing: u32,
        missing: &[ResyncAckRange],
        now: Instant,
        window: u32,
        min_gap: Duration,
    ) -> Vec<u32> {
        let mut resend = Vec::new();
        if let OutState::Sending { chunks, acked_below, next_new, .. } = &mut self.state {
            if next_missing > *acked_below {
                *acked_below = next_missing.min(*next_new);
                self.last_progress = now;
            }
            let sent = *next_new;
            'outer: for r in missing {
                for i in r.first..=r.last.min(sent.saturating_sub(1)) {
                    if resend.len() as u32 >= window {
                        break 'outer;
                    }
                    let Some(c) = chunks.get(i as usize) else { break };
                    if c.sent_at.is_none_or(|t| now.saturating_duration_since(t) >= min_gap) {
                        resend.push(i);
                    }
                }
            }
        }
        resend
    }

    /// On silence: the lowest unacknowledged chunk and "done" (if sent).
    pub(crate) fn probe(&self) -> OutPlan {
        match &self.state {
            OutState::Sending { chunks, acked_below, next_new, done_sent, .. } => OutPlan {
                chunks: if *acked_below < *next_new && (*acked_below as usize) < chunks.len() {
                    vec![*acked_below]
                } else {
                    Vec::new()
                },
                done: *done_sent,
            },
            OutState::Awaiting => OutPlan::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Instant = Instant::ZERO;

    #[test]
    fn requester_tracks_chunks_and_acks_ranges() {
        let mut r = IncomingResync::new(7, T, 100, true);
        assert_eq!(r.on_chunk(0, T), ChunkArrival::New);
        assert_eq!(r.on_chunk(0, T), ChunkArrival::Duplicate);
        assert_eq!(r.on_chunk(3, T), ChunkArrival::New);
        assert_eq!(r.on_chunk(100, T), ChunkArrival::OutOfRange);
        assert_eq!(r.ack(T, 8), (1, vec![ResyncAckRange { first: 1, last: 2 }]));
        assert!(!r.on_done(2, 5, T), "fewer chunks than already seen");
        assert!(r.on_done(6, 5, T));
        assert_eq!(
            r.ack(T, 8).1,
            vec![ResyncAckRange { first: 1, last: 2 }, ResyncAckRange { first: 4, last: 5 }]
        );
        for i in [1, 2, 4, 5] {
            r.on_chunk(i, T);
        }
        assert!(r.is_complete());
        assert_eq!(r.on_chunk(6, T), ChunkArrival::OutOfRange);
    }

    #[test]
    fn responder_windows_and_resends() {
        let mut o = OutgoingResync::new(NodeId(2), "127.0.0.1:1".parse().unwrap(), 1, T);
        assert_eq!(o.pump(4), OutPlan::default(), "nothing before the snapshot");
        let chunks = (0..6).map(|_| Chunk { entries: vec![], count: 0, sent_at: None }).collect();
        o.state =
            OutState::Sending { chunks, as_of: 9, acked_below: 0, next_new: 0, done_sent: false };
        assert_eq!(o.pump(4).chunks, vec![0, 1, 2, 3]);
        assert_eq!(o.pump(4), OutPlan::default(), "window full");
        let gap = Duration::from_millis(10);
        assert_eq!(o.on_ack(2, &[ResyncAckRange { first: 2, last: 9 }], T, 4, gap), vec![2, 3]);
        assert_eq!(o.pump(4), OutPlan { chunks: vec![4, 5], done: true });
        assert_eq!(o.probe(), OutPlan { chunks: vec![2], done: true });
    }
}
