//! The single-threaded session table (see the module docs for the eviction order).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use super::key::{K4, K6, PackedKey};
use super::{ConnState, Direction, InsertError, Session, TableConfig};
use crate::backend::{BackendId, RuntimeRegistry};
use crate::flow::{FlowKey, HashKey};
use crate::time::Instant;

#[path = "burst.rs"]
mod burst;
#[path = "index.rs"]
mod index;

pub use burst::Prepared;
use index::Index;

/// What a lookup by forward key reads: the session and its forward key, in one aligned cache
/// line when they fit in 64 bytes (an IPv4 session whose dataplane data `X` takes at most 16
/// bytes), so that a lookup touches one line after the bucket.
/// The reverse key and the queue generation live in arrays of their own (see [`Family`]).
/// (An IPv6 slot, with its 38-byte key, takes two lines.)
#[derive(Debug)]
#[repr(C, align(64))]
struct Slot<K, X> {
    s: Session<X>,
    fwd: K,
}

/// Bit of [`Family::tags`] set when the slot has a reverse key (clear while it is free).
const HAS_REV: u32 = 1 << 31;

/// Storage and indexes of one address family.
#[derive(Debug)]
struct Family<K, X> {
    slots: Vec<Option<Slot<K, X>>>,
    /// Each slot's reverse key (same index as `slots`), [`PackedKey::NONE`] where the slot has
    /// none or is free (exactly where `tags` lacks [`HAS_REV`], so that a reader of the reverse
    /// key needs no other memory): 16 bytes for IPv4, so that one does not straddle cache lines
    /// (given the allocator's 16-byte alignment).
    rev_keys: Vec<K>,
    /// Each slot's queue generation (low 31 bits) and [`HAS_REV`].
    tags: Vec<u32>,
    /// Free slots with the generation of their last occupant, so that a queue reference to a
    /// freed slot never matches its next occupant.
    free: Vec<(u32, u32)>,
    fwd: Index,
    rev: Index,
}

impl<K: PackedKey, X> Family<K, X> {
    fn with_capacity(n: usize) -> Self {
        Family {
            slots: Vec::with_capacity(n),
            rev_keys: Vec::with_capacity(n),
            tags: Vec::with_capacity(n),
            free: Vec::new(),
            fwd: Index::with_capacity(n),
            rev: Index::with_capacity(n),
        }
    }

    #[inline]
    fn hash(hk: &HashKey, k: &K) -> u64 {
        let (a, b, c) = k.words();
        hk.hash_words(a, b, c)
    }

    #[inline]
    fn find_fwd_h(&self, h: u64, k: &K) -> Option<u32> {
        let slots = &self.slots;
        self.fwd.find(h, |i| {
            slots.get(i as usize).is_some_and(|s| s.as_ref().is_some_and(|s| s.fwd == *k))
        })
    }

    #[inline]
    fn find_rev_h(&self, h: u64, k: &K) -> Option<u32> {
        // The reverse index holds only live slots with a reverse key: the key decides.
        let rev_keys = &self.rev_keys;
        self.rev.find(h, |i| rev_keys.get(i as usize) == Some(k))
    }

    #[inline]
    fn find_fwd(&self, hk: &HashKey, k: &K) -> Option<u32> {
        self.find_fwd_h(Self::hash(hk, k), k)
    }

    #[inline]
    fn find_rev(&self, hk: &HashKey, k: &K) -> Option<u32> {
        self.find_rev_h(Self::hash(hk, k), k)
    }

    /// Has the CPU fetch slot `idx`'s key and session early (a burst lookup's step, as
    /// [`Index::touch_at`]: a prefetch, or a read whose value means nothing).
    #[inline(always)]
    fn touch_slot(&self, idx: u32) -> u64 {
        if !crate::sys::PREFETCH {
            return match self.slots.get(idx as usize) {
                Some(Some(s)) => s.s.expires().as_nanos() ^ u64::from(s.fwd.word0()),
                _ => 0,
            };
        }
        if (idx as usize) < self.slots.len() {
            crate::sys::prefetch(self.slots.as_ptr().wrapping_add(idx as usize));
        }
        0
    }

    /// Has the CPU fetch slot `idx`'s reverse key early (as [`Family::touch_slot`]).
    #[inline(always)]
    fn touch_rev(&self, idx: u32) -> u64 {
        if !crate::sys::PREFETCH {
            return self.rev_keys.get(idx as usize).map_or(0, |k| u64::from(k.word0()));
        }
        if (idx as usize) < self.rev_keys.len() {
            crate::sys::prefetch(self.rev_keys.as_ptr().wrapping_add(idx as usize));
        }
        0
    }

    /// [`Family::touch_slot`], and the slot's reverse key too.
    #[inline(always)]
    fn touch_slot_rev(&self, idx: u32) -> u64 {
        self.touch_slot(idx) ^ self.touch_rev(idx)
    }

    fn insert(&mut self, hk: &HashKey, fwd: K, rev: Option<K>, s: Session<X>) -> (u32, u32) {
        let (idx, last_gen) = match self.free.pop() {
            Some(free) => free,
            None => {
                self.slots.push(None);
                self.rev_keys.push(K::NONE);
                self.tags.push(0);
                ((self.slots.len() - 1) as u32, 0)
            }
        };
        let gen_ = last_gen.wrapping_add(1) & !HAS_REV;
        self.slots[idx as usize] = Some(Slot { s, fwd });
        self.rev_keys[idx as usize] = rev.unwrap_or(K::NONE);
        self.tags[idx as usize] = gen_ | if rev.is_some() { HAS_REV } else { 0 };
        let (slots, rev_keys) = (&self.slots, &self.rev_keys);
        self.fwd.insert(Self::hash(hk, &fwd), idx, |i| {
            Self::hash(hk, &slots[i as usize].as_ref().map_or(fwd, |s| s.fwd))
        });
        if let Some(r) = rev {
            self.rev.insert(Self::hash(hk, &r), idx, |i| {
                Self::hash(hk, rev_keys.get(i as usize).unwrap_or(&r))
            });
        }
        (idx, gen_)
    }

    /// Removes live slot `idx`; returns it with its reverse key.
    fn remove(&mut self, hk: &HashKey, idx: u32) -> Option<(Slot<K, X>, Option<K>)> {
        let slot = self.slots.get_mut(idx as usize)?.take()?;
        let rev = self.rev_of(idx);
        self.rev_keys[idx as usize] = K::NONE;
        let tag = &mut self.tags[idx as usize];
        self.free.push((idx, *tag & !HAS_REV));
        *tag &= !HAS_REV;
        self.fwd.remove(Self::hash(hk, &slot.fwd), idx);
        if let Some(r) = rev {
            self.rev.remove(Self::hash(hk, &r), idx);
        }
        Some((slot, rev))
    }

    /// The reverse key of live slot `idx`, if it has one.
    #[inline]
    fn rev_of(&self, idx: u32) -> Option<K> {
        let k = self.rev_keys[idx as usize];
        (!k.is_none()).then_some(k)
    }

    /// The queue generation of slot `idx`.
    #[inline]
    fn gen_of(&self, idx: u32) -> u32 {
        self.tags[idx as usize] & !HAS_REV
    }

    fn memory_bytes(&self) -> usize {
        self.slots.capacity() * size_of::<Option<Slot<K, X>>>()
            + self.rev_keys.capacity() * size_of::<K>()
            + self.tags.capacity() * 4
            + self.free.capacity() * 8
            + self.fwd.memory_bytes()
            + self.rev.memory_bytes()
    }

    fn regions(&self) -> [(*const u8, usize); 5] {
        [
            (self.slots.as_ptr().cast(), self.slots.capacity() * size_of::<Option<Slot<K, X>>>()),
            (self.rev_keys.as_ptr().cast(), self.rev_keys.capacity() * size_of::<K>()),
            (self.tags.as_ptr().cast(), self.tags.capacity() * 4),
            self.fwd.region(),
            self.rev.region(),
        ]
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fam {
    V4,
    V6,
}

/// A packed reference into the table: family, slot index, generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Ref(u64);

impl Ref {
    fn new(fam: Fam, idx: u32, gen_: u32) -> Self {
        Ref((u64::from(fam == Fam::V6) << 63) | (u64::from(gen_) << 32) | u64::from(idx))
    }
    fn fam(self) -> Fam {
        if self.0 >> 63 == 1 { Fam::V6 } else { Fam::V4 }
    }
    fn idx(self) -> u32 {
        self.0 as u32
    }
    fn gen_(self) -> u32 {
        ((self.0 >> 32) as u32) & 0x7fff_ffff
    }
}

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

    fn account(&self, backend: BackendId, state: ConnState, add: bool) {
        let rt = self.registry.get_or_create(backend);
        match (state.is_active(), add) {
            (true, true) => rt.inc_active(),
            (true, false) => rt.dec_active(),
            (false, true) => rt.inc_inactive(),
            (false, false) => rt.dec_inactive(),
        }
    }

    /// Counts a session entering `state` (from `old`, or new) in the class queues.
    fn enqueue(&mut self, r: Ref, state: ConnState, old: Option<ConnState>) {
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

    fn ref_state(&self, r: Ref) -> Option<ConnState> {
        fam!(self, r.fam(), f => f
            .slots
            .get(r.idx() as usize)
            .and_then(|s| s.as_ref())
            .filter(|_| f.gen_of(r.idx()) == r.gen_())
            .map(|s| s.s.state))
    }

    fn compact_queue(&mut self, half_open: bool) {
        let mut q = std::mem::take(if half_open { &mut self.half_open } else { &mut self.done });
        q.retain(|&r| {
            self.ref_state(r)
                .is_some_and(|s| if half_open { s.is_half_open() } else { s.is_done() })
        });
        *(if half_open { &mut self.half_open } else { &mut self.done }) = q;
    }

    fn unlink(&mut self, fam: Fam, idx: u32) -> Session<X> {
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
    fn evict_oldest(&mut self, half_open: bool) -> bool {
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

    fn make_room(&mut self, now: Instant, new_half_open: bool) -> Result<(), InsertError> {
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

fn check<K: PackedKey, X>(
    f: &Family<K, X>,
    hk: &HashKey,
    fwd: &K,
    rev: Option<&K>,
) -> Result<(), InsertError> {
    if f.find_fwd(hk, fwd).is_some() {
        return Err(InsertError::Exists);
    }
    if let Some(r) = rev
        && f.find_rev(hk, r).is_some()
    {
        return Err(InsertError::ReverseExists);
    }
    Ok(())
}

/// A session found by [`SessionTable::lookup`] or just inserted, open for update.
#[derive(Debug)]
pub struct EntryMut<'a, X> {
    table: &'a mut SessionTable<X>,
    fam: Fam,
    idx: u32,
    dir: Direction,
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

#[cfg(test)]
#[path = "table_tests.rs"]
mod tests;
