//! The single-threaded session table (see the module docs for the eviction order).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use super::key::{K4, K6, PackedKey};
use super::{Direction, InsertError, Session, TableConfig};
use crate::backend::{BackendId, RuntimeRegistry};
use crate::flow::FlowKey;
use crate::time::Instant;

/// Counters of what the table did on its own.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableStats {
    /// Sessions removed because they expired.
    pub expired: u64,
    /// Half-open sessions evicted to make room.
    pub evicted_half_open: u64,
    /// Finished sessions evicted to make room.
    pub evicted_done: u64,
    /// Inserts refused because nothing could be evicted.
    pub refused_full: u64,
}

/// A read-only view of one session with its keys.
#[derive(Debug)]
pub struct SessionView<'a, X> {
    /// Client -> virtual service key.
    pub forward: FlowKey,
    /// Reply key, if the session has one.
    pub reverse: Option<FlowKey>,
    /// The session.
    pub session: &'a Session<X>,
}

/// The single-threaded session table. See the [module docs](super) for its contract.
#[derive(Debug)]
pub struct SessionTable<X = ()> {
    v4: Family<K4, X>,
    v6: Family<K6, X>,
    config: TableConfig,
    registry: Arc<RuntimeRegistry>,
    half_open: VecDeque<Ref>,
    done: VecDeque<Ref>,
    n_half_open: usize,
    n_done: usize,
    sweep: usize,
    stats: TableStats,
    /// (reverse, forward) keys of removed sessions, for the concurrent wrapper's reverse index.
    removal_log: Option<Vec<(FlowKey, FlowKey)>>,
    /// Tells this table's [`Prepared`] lookups from other tables'.
    id: u32,
    /// Inserts so far: a [`Prepared`] miss or reverse-key hit holds only while this is unchanged.
    inserts: u64,
}

/// Identities of tables, for [`Prepared`].
static NEXT_TABLE_ID: AtomicU32 = AtomicU32::new(1);

/// Dispatches to the family of `$fam`, binding it as `$f`.
macro_rules! fam {
    ($self:expr, $fam:expr, $f:ident => $body:expr) => {
        match $fam {
            Fam::V4 => {
                let $f = &$self.v4;
                $body
            }
            Fam::V6 => {
                let $f = &$self.v6;
                $body
            }
        }
    };
    (mut $self:expr, $fam:expr, $f:ident => $body:expr) => {
        match $fam {
            Fam::V4 => {
                let $f = &mut $self.v4;
                $body
            }
            Fam::V6 => {
                let $f = &mut $self.v6;
                $body
            }
        }
    };
}

mod burst;
mod entry;
mod eviction;
mod family;
mod index;
#[cfg(test)]
mod tests;

pub use burst::Prepared;
pub use entry::EntryMut;
use family::{Fam, Family, Ref, check};

impl<X> SessionTable<X> {
    /// An empty table with its own runtime registry.
    pub fn new(config: TableConfig) -> Self {
        SessionTable::with_registry(config, Arc::new(RuntimeRegistry::new()))
    }

    /// An empty table keeping backend counters in `registry` (share it with the balancers).
    pub fn with_registry(config: TableConfig, registry: Arc<RuntimeRegistry>) -> Self {
        SessionTable {
            v4: Family::with_capacity(if config.preallocate { config.capacity } else { 0 }),
            v6: Family::with_capacity(0),
            config,
            registry,
            half_open: VecDeque::new(),
            done: VecDeque::new(),
            n_half_open: 0,
            n_done: 0,
            sweep: 0,
            stats: TableStats::default(),
            removal_log: None,
            id: NEXT_TABLE_ID.fetch_add(1, Ordering::Relaxed),
            inserts: 0,
        }
    }

    /// Starts logging the keys of every removed session that had a reverse key.
    pub(crate) fn enable_removal_log(&mut self) {
        self.removal_log = Some(Vec::new());
    }

    /// Takes the (reverse, forward) keys logged since the last call.
    pub(crate) fn drain_removal_log(&mut self) -> Vec<(FlowKey, FlowKey)> {
        self.removal_log.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// The configuration.
    pub fn config(&self) -> &TableConfig {
        &self.config
    }

    /// The registry holding the per-backend counters.
    pub fn registry(&self) -> &Arc<RuntimeRegistry> {
        &self.registry
    }

    /// Sessions held (including expired ones not yet collected).
    pub fn len(&self) -> usize {
        self.v4.fwd.len() + self.v6.fwd.len()
    }

    /// True when the table holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Half-open sessions held.
    pub fn half_open(&self) -> usize {
        self.n_half_open
    }

    /// What the table did on its own (expiry, eviction, refusals).
    pub fn stats(&self) -> TableStats {
        self.stats
    }

    /// Approximate heap bytes used by the table's storage and indexes.
    pub fn memory_bytes(&self) -> usize {
        self.v4.memory_bytes()
            + self.v6.memory_bytes()
            + (self.half_open.capacity() + self.done.capacity()) * 8
    }

    /// The table's large allocations as (start, length in bytes): session slots and indexes
    /// of both address families. A driver may advise the kernel to back them with huge pages
    /// (`madvise(MADV_HUGEPAGE)`), which saves a TLB miss on most lookups of a big table. With
    /// [`TableConfig::preallocate`] the IPv4 regions are reserved but not yet touched when the
    /// table is created, so advice given right after creation applies to all of them; regions
    /// move when a table that was not preallocated grows.
    pub fn memory_regions(&self) -> Vec<(*const u8, usize)> {
        let mut v: Vec<(*const u8, usize)> =
            self.v4.regions().into_iter().chain(self.v6.regions()).collect();
        v.retain(|&(_, len)| len > 0);
        v
    }

    #[inline]
    fn locate(&self, key: &FlowKey) -> Option<(Fam, u32, Direction)> {
        let hk = &self.config.hash_key;
        if let Some(k) = K4::pack(key) {
            if let Some(i) = self.v4.find_fwd(hk, &k) {
                return Some((Fam::V4, i, Direction::Inbound));
            }
            return self.v4.find_rev(hk, &k).map(|i| (Fam::V4, i, Direction::Outbound));
        }
        let k = K6::pack(key)?;
        if let Some(i) = self.v6.find_fwd(hk, &k) {
            return Some((Fam::V6, i, Direction::Inbound));
        }
        self.v6.find_rev(hk, &k).map(|i| (Fam::V6, i, Direction::Outbound))
    }

    #[inline]
    fn session(&self, fam: Fam, idx: u32) -> &Session<X> {
        fam!(self, fam, f => &f.slots[idx as usize].as_ref().expect("live slot").s)
    }

    #[inline]
    fn session_mut(&mut self, fam: Fam, idx: u32) -> &mut Session<X> {
        fam!(mut self, fam, f => &mut f.slots[idx as usize].as_mut().expect("live slot").s)
    }

    #[inline]
    fn keys(&self, fam: Fam, idx: u32) -> (FlowKey, Option<FlowKey>) {
        fam!(self, fam, f => {
            let s = f.slots[idx as usize].as_ref().expect("live slot");
            (s.fwd.unpack(), f.rev_of(idx).map(|r| r.unpack()))
        })
    }

    /// Finds the session `key` belongs to, in either direction, without refreshing it.
    /// Expired sessions not yet collected are still returned; see [`Session::expires`].
    pub fn get(&self, key: &FlowKey) -> Option<(&Session<X>, Direction)> {
        self.locate(key).map(|(fam, i, d)| (self.session(fam, i), d))
    }

    /// Finds the session `key` belongs to, in either direction, for update. An expired session
    /// is collected and not returned.
    pub fn lookup(&mut self, key: &FlowKey, now: Instant) -> Option<EntryMut<'_, X>> {
        let (fam, idx, dir) = self.locate(key)?;
        self.entry_at(fam, idx, dir, now)
    }

    /// The entry of a located session, or `None` after collecting it if it expired.
    #[inline(always)]
    fn entry_at(
        &mut self,
        fam: Fam,
        idx: u32,
        dir: Direction,
        now: Instant,
    ) -> Option<EntryMut<'_, X>> {
        if self.session(fam, idx).expires <= now {
            self.collect_expired(fam, idx);
            return None;
        }
        Some(EntryMut { table: self, fam, idx, dir })
    }

    /// Removes a session found expired by a lookup.
    #[inline(never)]
    fn collect_expired(&mut self, fam: Fam, idx: u32) {
        self.unlink(fam, idx);
        self.stats.expired += 1;
    }

    /// Inserts a new session with its forward key and optional reverse key. Unless the session
    /// carries an explicit expiry, it expires after its state's timeout from `now`. May evict
    /// (see the module docs).
    pub fn insert(
        &mut self,
        now: Instant,
        forward: FlowKey,
        reverse: Option<FlowKey>,
        mut session: Session<X>,
    ) -> Result<EntryMut<'_, X>, InsertError> {
        let hk = self.config.hash_key;
        // Validate before making room, so a refused insert evicts nothing.
        let fam = match (K4::pack(&forward), K6::pack(&forward)) {
            (Some(f), _) => {
                let r =
                    reverse.map(|r| K4::pack(&r).ok_or(InsertError::FamilyMismatch)).transpose()?;
                check(&self.v4, &hk, &f, r.as_ref())?;
                Fam::V4
            }
            (None, Some(f)) => {
                let r =
                    reverse.map(|r| K6::pack(&r).ok_or(InsertError::FamilyMismatch)).transpose()?;
                check(&self.v6, &hk, &f, r.as_ref())?;
                Fam::V6
            }
            (None, None) => return Err(InsertError::FamilyMismatch),
        };
        self.make_room(now, session.state.is_half_open())?;
        self.inserts += 1;
        if session.expires == Instant::ZERO {
            session.expires = now + self.config.timeouts.of(session.state);
        }
        let state = session.state;
        self.account(session.backend, state, true);
        let (idx, gen_) = match fam {
            Fam::V4 => {
                let (f, r) = (K4::pack(&forward), reverse.as_ref().and_then(K4::pack));
                self.v4.insert(&hk, f.expect("checked"), r, session)
            }
            Fam::V6 => {
                let (f, r) = (K6::pack(&forward), reverse.as_ref().and_then(K6::pack));
                self.v6.insert(&hk, f.expect("checked"), r, session)
            }
        };
        self.enqueue(Ref::new(fam, idx, gen_), state, None);
        Ok(EntryMut { table: self, fam, idx, dir: Direction::Inbound })
    }

    /// Removes the session `key` belongs to (either direction).
    pub fn remove(&mut self, key: &FlowKey) -> Option<Session<X>> {
        let (fam, idx, _) = self.locate(key)?;
        Some(self.unlink(fam, idx))
    }

    /// Collects expired sessions, examining at most `budget` slots from where the last call
    /// stopped (an incremental sweep: call it regularly with a budget that covers the table
    /// within the shortest timeout). Returns how many were removed.
    pub fn expire(&mut self, now: Instant, budget: usize) -> usize {
        self.expire_with(now, budget, |_| {})
    }

    /// [`SessionTable::expire`], calling `on_expire` with each removed session.
    pub fn expire_with(
        &mut self,
        now: Instant,
        budget: usize,
        mut on_expire: impl FnMut(SessionView<'_, X>),
    ) -> usize {
        let mut removed = 0;
        for _ in 0..budget {
            let total = self.v4.slots.len() + self.v6.slots.len();
            if total == 0 {
                break;
            }
            if self.sweep >= total {
                self.sweep = 0;
            }
            let (fam, idx) = if self.sweep < self.v4.slots.len() {
                (Fam::V4, self.sweep as u32)
            } else {
                (Fam::V6, (self.sweep - self.v4.slots.len()) as u32)
            };
            self.sweep += 1;
            let expired = fam!(self, fam, f => f.slots[idx as usize].as_ref().is_some_and(|s| s.s.expires <= now));
            if expired {
                let (forward, reverse) = self.keys(fam, idx);
                on_expire(SessionView { forward, reverse, session: self.session(fam, idx) });
                self.unlink(fam, idx);
                self.stats.expired += 1;
                removed += 1;
            }
        }
        removed
    }

    /// Every session with its keys, in no particular order (for sync and stats).
    pub fn iter(&self) -> impl Iterator<Item = SessionView<'_, X>> + '_ {
        fn views<K: PackedKey, X>(f: &Family<K, X>) -> impl Iterator<Item = SessionView<'_, X>> {
            f.slots.iter().enumerate().filter_map(|(i, s)| {
                let s = s.as_ref()?;
                Some(SessionView {
                    forward: s.fwd.unpack(),
                    reverse: f.rev_of(i as u32).map(|r| r.unpack()),
                    session: &s.s,
                })
            })
        }
        views(&self.v4).chain(views(&self.v6))
    }

    /// Removes every session bound to `backend` (IPVS `expire_nodest_conn`); returns how many.
    pub fn remove_backend(&mut self, backend: BackendId) -> usize {
        let victims: Vec<(Fam, u32)> = self
            .v4
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.as_ref().is_some_and(|s| s.s.backend == backend))
            .map(|(i, _)| (Fam::V4, i as u32))
            .chain(
                self.v6
                    .slots
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.as_ref().is_some_and(|s| s.s.backend == backend))
                    .map(|(i, _)| (Fam::V6, i as u32)),
            )
            .collect();
        for &(fam, idx) in &victims {
            self.unlink(fam, idx);
        }
        victims.len()
    }
}
