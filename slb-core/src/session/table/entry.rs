//! [`EntryMut`]: a session found or just inserted, open for update.

use super::SessionTable;
use super::family::{Fam, HAS_REV, Ref};
use crate::backend::BackendId;
use crate::flow::FlowKey;
use crate::session::key::PackedKey;
use crate::session::{ConnState, Direction, Session};
use crate::time::Instant;

/// A session found by [`SessionTable::lookup`] or just inserted, open for update.
#[derive(Debug)]
pub struct EntryMut<'a, X> {
    pub(super) table: &'a mut SessionTable<X>,
    pub(super) fam: Fam,
    pub(super) idx: u32,
    pub(super) dir: Direction,
}

impl<X> EntryMut<'_, X> {
    /// Which key matched: the forward key (inbound) or the reverse key (outbound).
    #[inline]
    pub fn direction(&self) -> Direction {
        self.dir
    }

    /// The session.
    #[inline]
    pub fn session(&self) -> &Session<X> {
        self.table.session(self.fam, self.idx)
    }

    /// The dataplane's data, mutable.
    #[inline]
    pub fn ext_mut(&mut self) -> &mut X {
        &mut self.table.session_mut(self.fam, self.idx).ext
    }

    /// The session's flags, mutable.
    #[inline]
    pub fn flags_mut(&mut self) -> &mut u8 {
        &mut self.table.session_mut(self.fam, self.idx).flags
    }

    /// The forward and reverse keys.
    #[inline]
    pub fn keys(&self) -> (FlowKey, Option<FlowKey>) {
        self.table.keys(self.fam, self.idx)
    }

    /// The forward key alone: read from the session's own slot (no other memory), unlike
    /// [`EntryMut::keys`].
    #[inline]
    pub fn forward_key(&self) -> FlowKey {
        fam!(self.table, self.fam, f => {
            f.slots[self.idx as usize].as_ref().expect("live slot").fwd.unpack()
        })
    }

    /// The reverse key alone, if the session has one.
    #[inline]
    pub fn reverse_key(&self) -> Option<FlowKey> {
        fam!(self.table, self.fam, f => f.rev_of(self.idx).map(|r| r.unpack()))
    }

    /// Counts a packet in the matched direction and refreshes the idle timeout; returns the
    /// updated count of that direction.
    #[inline]
    pub fn record_packet(&mut self, now: Instant) -> u32 {
        self.record_packets(now, 1)
    }

    /// [`EntryMut::record_packet`] for `n` packets at once (e.g. packets an offload forwarded
    /// since it last reported); `n = 0` only refreshes the idle timeout.
    #[inline]
    pub fn record_packets(&mut self, now: Instant, n: u32) -> u32 {
        let timeout = self.table.config.timeouts.of(self.session().state);
        let dir = self.dir;
        let s = self.table.session_mut(self.fam, self.idx);
        s.expires = now + timeout;
        let c = match dir {
            Direction::Inbound => &mut s.packets_in,
            Direction::Outbound => &mut s.packets_out,
        };
        *c = c.saturating_add(n);
        *c
    }

    /// Moves the session to `state`, updating counters and the idle timeout (from `now`).
    pub fn set_state(&mut self, state: ConnState, now: Instant) {
        let timeout = self.table.config.timeouts.of(state);
        self.set_state_until(state, now + timeout);
    }

    /// Moves the session to `state` with an explicit expiry (a synced remaining timeout).
    pub fn set_state_until(&mut self, state: ConnState, expires: Instant) {
        let (fam, idx) = (self.fam, self.idx);
        let old = self.session().state;
        let backend = self.session().backend;
        {
            let s = self.table.session_mut(fam, idx);
            s.state = state;
            s.expires = expires;
        }
        if old != state {
            self.table.account(backend, old, false);
            self.table.account(backend, state, true);
            // Entering a class queue again: a new generation, so that the session's stale
            // references from an earlier stay in a class (e.g. half-open, then established,
            // then half-open again) do not make it look older than it is.
            let entering = (state.is_half_open() && !old.is_half_open())
                || (state.is_done() && !old.is_done());
            let gen_ = fam!(mut self.table, fam, f => {
                let tag = &mut f.tags[idx as usize];
                if entering {
                    *tag = (*tag & HAS_REV) | (tag.wrapping_add(1) & !HAS_REV);
                }
                *tag & !HAS_REV
            });
            self.table.enqueue(Ref::new(fam, idx, gen_), state, Some(old));
        }
    }

    /// Rebinds the session to another backend (a peer's sync won a conflict).
    pub fn set_backend(&mut self, backend: BackendId) {
        let state = self.session().state;
        let old = self.session().backend;
        if old != backend {
            self.table.account(old, state, false);
            self.table.account(backend, state, true);
            self.table.session_mut(self.fam, self.idx).backend = backend;
        }
    }

    pub(crate) fn set_direction(&mut self, dir: Direction) {
        self.dir = dir;
    }

    /// Removes the session.
    pub fn remove(self) -> Session<X> {
        self.table.unlink(self.fam, self.idx)
    }
}
