//! A peer's data stream as a receiver sees it: which data sequence numbers arrived, which are
//! missing, and when to NACK them.
//!
//! Invariants: every sequence number below `next` has arrived or was given up on; `received`
//! holds only numbers above `next`, at most `max_reorder` of them; `highest` is the largest
//! number seen or announced by a heartbeat. A gap exists when `next <= highest`.

use std::collections::BTreeSet;
use std::time::Duration;

use slb_core::time::Instant;

use crate::wire::NackRange;

/// What a new data sequence number means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Arrival {
    /// New data: apply it.
    New,
    /// Seen before: skip it.
    Duplicate,
    /// New data, but so far ahead that the gap before it was abandoned: apply it and resync.
    Jumped,
}

#[derive(Debug, Clone)]
pub(crate) struct RecvStream {
    next: u64,
    highest: u64,
    received: BTreeSet<u64>,
    started: bool,
    pub(crate) gap_since: Option<Instant>,
    pub(crate) last_nack: Option<Instant>,
    pub(crate) nack_attempts: u32,
}

impl RecvStream {
    pub(crate) fn new() -> Self {
        RecvStream {
            next: 1,
            highest: 0,
            received: BTreeSet::new(),
            started: false,
            gap_since: None,
            last_nack: None,
            nack_attempts: 0,
        }
    }

    /// True once anything was heard on this stream.
    pub(crate) fn started(&self) -> bool {
        self.started
    }

    /// Starts the stream after `last` (first contact with a sender whose earlier data this node
    /// will get from a resync). Returns true if that skipped data (`last > 0`).
    pub(crate) fn start_after(&mut self, last: u64) -> bool {
        self.started = true;
        self.next = last.saturating_add(1);
        self.highest = self.highest.max(last);
        last > 0
    }

    pub(crate) fn has_gap(&self) -> bool {
        // `u64::MAX` is never a real data sequence number: a stream pushed there (by a broken
        // peer) has nothing left to wait for.
        self.next <= self.highest && self.next < u64::MAX
    }

    fn update_gap(&mut self, now: Instant) -> bool {
        if self.has_gap() {
            let new = self.gap_since.is_none();
            self.gap_since.get_or_insert(now);
            new
        } else {
            self.gap_since = None;
            self.last_nack = None;
            self.nack_attempts = 0;
            false
        }
    }

    fn pull(&mut self) {
        while self.received.remove(&self.next) {
            self.next = self.next.saturating_add(1);
            if self.next == u64::MAX {
                break;
            }
        }
    }

    /// Records data sequence number `s`. Second value: a new gap opened.
    pub(crate) fn on_data(&mut self, s: u64, now: Instant, max_reorder: u64) -> (Arrival, bool) {
        self.started = true;
        if s < self.next || self.received.contains(&s) {
            return (Arrival::Duplicate, false);
        }
        let mut arrival = Arrival::New;
        if s - self.next > max_reorder {
            self.received.clear();
            self.next = s.saturating_add(1);
            arrival = Arrival::Jumped;
        } else if s == self.next {
            self.next = self.next.saturating_add(1);
            self.pull();
        } else {
            self.received.insert(s);
        }
        self.highest = self.highest.max(s);
        let opened = self.update_gap(now);
        (arrival, opened)
    }

    /// A heartbeat announced `last` as the sender's last data sequence number. Returns true if
    /// a new gap opened (tail loss).
    pub(crate) fn on_announce(&mut self, last: u64, now: Instant) -> bool {
        self.highest = self.highest.max(last);
        self.update_gap(now)
    }

    /// Gives up on everything below `s` (covered by a resync, or no longer retained).
    pub(crate) fn skip_to(&mut self, s: u64, now: Instant) {
        if s > self.next {
            self.next = s;
            self.received = self.received.split_off(&s);
            self.pull();
        }
        self.highest = self.highest.max(self.next.saturating_sub(1));
        self.update_gap(now);
    }

    /// Lowest sequence number not yet received.
    pub(crate) fn next(&self) -> u64 {
        self.next
    }

    /// Gives up on the current gaps entirely.
    pub(crate) fn abandon_gaps(&mut self, now: Instant) {
        let h = self.highest;
        self.skip_to(h.saturating_add(1), now);
    }

    /// When a NACK is due, if a gap is open.
    pub(crate) fn nack_due(&self, delay: Duration, interval: Duration) -> Option<Instant> {
        let since = self.gap_since?;
        Some(match self.last_nack {
            None => since + delay,
            Some(t) => t + interval,
        })
    }

    /// Up to `max` missing ranges, lowest first.
    pub(crate) fn missing(&self, max: usize) -> Vec<NackRange> {
        let mut out = Vec::new();
        let mut start = self.next;
        for &r in self.received.iter().chain(std::iter::once(&self.highest.saturating_add(1))) {
            if out.len() == max {
                break;
            }
            if r > start {
                out.push(NackRange { first: start, last: r - 1 });
            }
            start = r.saturating_add(1);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Instant = Instant::ZERO;

    #[test]
    fn gaps_fill_and_ranges() {
        let mut s = RecvStream::new();
        assert_eq!(s.on_data(1, T, 100), (Arrival::New, false));
        assert_eq!(s.on_data(4, T, 100), (Arrival::New, true));
        assert_eq!(s.on_data(6, T, 100), (Arrival::New, false));
        assert_eq!(
            s.missing(10),
            vec![NackRange { first: 2, last: 3 }, NackRange { first: 5, last: 5 }]
        );
        assert_eq!(s.missing(1).len(), 1);
        assert_eq!(s.on_data(4, T, 100).0, Arrival::Duplicate);
        assert_eq!(s.on_data(1, T, 100).0, Arrival::Duplicate);
        s.on_data(2, T, 100);
        s.on_data(3, T, 100);
        s.on_data(5, T, 100);
        assert!(!s.has_gap());
        assert_eq!(s.next(), 7);
        assert!(s.gap_since.is_none());
        assert!(s.on_announce(9, T), "tail loss opens a gap");
        assert_eq!(s.missing(10), vec![NackRange { first: 7, last: 9 }]);
        s.skip_to(8, T);
        assert_eq!(s.missing(10), vec![NackRange { first: 8, last: 9 }]);
        s.abandon_gaps(T);
        assert!(!s.has_gap());
        assert_eq!(s.next(), 10);
        s.on_announce(u64::MAX, T);
        assert!(s.has_gap());
        s.abandon_gaps(T);
        assert!(
            !s.has_gap() && s.gap_since.is_none(),
            "no gap can stay open at the end of the space"
        );
    }

    #[test]
    fn far_jumps_are_bounded() {
        let mut s = RecvStream::new();
        assert_eq!(s.on_data(1000, T, 100).0, Arrival::Jumped);
        assert_eq!(s.next(), 1001);
        assert!(!s.has_gap());
        let mut s = RecvStream::new();
        assert!(s.start_after(41));
        assert_eq!(s.on_data(42, T, 100), (Arrival::New, false));
        assert_eq!(s.on_data(41, T, 100).0, Arrival::Duplicate);
    }
}
