//! Accounting and eviction: the half-open and done queues in the order of the module docs,
//! unlinking a session, and making room for an insert.

use super::SessionTable;
use super::family::{Fam, Ref};
use crate::backend::BackendId;
use crate::session::key::PackedKey;
use crate::session::{ConnState, InsertError, Session};
use crate::time::Instant;

impl<X> SessionTable<X> {
    pub(super) fn account(&self, backend: BackendId, state: ConnState, add: bool) {
        let rt = self.registry.get_or_create(backend);
        match (state.is_active(), add) {
            (true, true) => rt.inc_active(),
            (true, false) => rt.dec_active(),
            (false, true) => rt.inc_inactive(),
            (false, false) => rt.dec_inactive(),
        }
    }

    /// Counts a session entering `state` (from `old`, or new) in the class queues.
    pub(super) fn enqueue(&mut self, r: Ref, state: ConnState, old: Option<ConnState>) {
        let was_half = old.is_some_and(|o| o.is_half_open());
        let was_done = old.is_some_and(|o| o.is_done());
        if was_half && !state.is_half_open() {
            self.n_half_open -= 1;
        }
        if was_done && !state.is_done() {
            self.n_done -= 1;
        }
        if state.is_half_open() && !was_half {
            self.n_half_open += 1;
            self.half_open.push_back(r);
            if self.half_open.len() > 2 * self.n_half_open + 1024 {
                self.compact_queue(true);
            }
        }
        if state.is_done() && !was_done {
            self.n_done += 1;
            self.done.push_back(r);
            if self.done.len() > 2 * self.n_done + 1024 {
                self.compact_queue(false);
            }
        }
    }

    pub(super) fn ref_state(&self, r: Ref) -> Option<ConnState> {
        fam!(self, r.fam(), f => f
            .slots
            .get(r.idx() as usize)
            .and_then(|s| s.as_ref())
            .filter(|_| f.gen_of(r.idx()) == r.gen_())
            .map(|s| s.s.state))
    }

    pub(super) fn compact_queue(&mut self, half_open: bool) {
        let mut q = std::mem::take(if half_open { &mut self.half_open } else { &mut self.done });
        q.retain(|&r| {
            self.ref_state(r)
                .is_some_and(|s| if half_open { s.is_half_open() } else { s.is_done() })
        });
        *(if half_open { &mut self.half_open } else { &mut self.done }) = q;
    }

    pub(super) fn unlink(&mut self, fam: Fam, idx: u32) -> Session<X> {
        let hk = self.config.hash_key;
        let s = fam!(mut self, fam, f => {
            let (slot, rev) = f.remove(&hk, idx).expect("live slot");
            if let Some(r) = rev && let Some(log) = self.removal_log.as_mut() {
                log.push((r.unpack(), slot.fwd.unpack()));
            }
            slot.s
        });
        if s.state.is_half_open() {
            self.n_half_open -= 1;
        }
        if s.state.is_done() {
            self.n_done -= 1;
        }
        self.account(s.backend, s.state, false);
        s
    }

    /// Evicts the oldest live entry of a class; false if there is none.
    pub(super) fn evict_oldest(&mut self, half_open: bool) -> bool {
        loop {
            let q = if half_open { &mut self.half_open } else { &mut self.done };
            let Some(r) = q.pop_front() else { return false };
            let live = self
                .ref_state(r)
                .is_some_and(|s| if half_open { s.is_half_open() } else { s.is_done() });
            if live {
                self.unlink(r.fam(), r.idx());
                if half_open {
                    self.stats.evicted_half_open += 1;
                } else {
                    self.stats.evicted_done += 1;
                }
                return true;
            }
        }
    }

    pub(super) fn make_room(
        &mut self,
        now: Instant,
        new_half_open: bool,
    ) -> Result<(), InsertError> {
        if new_half_open
            && self.n_half_open >= self.config.max_half_open
            && !self.evict_oldest(true)
        {
            self.stats.refused_full += 1;
            return Err(InsertError::Full);
        }
        if self.len() < self.config.capacity {
            return Ok(());
        }
        if self.expire(now, 64) > 0 || self.evict_oldest(true) || self.evict_oldest(false) {
            return Ok(());
        }
        self.stats.refused_full += 1;
        Err(InsertError::Full)
    }
}
