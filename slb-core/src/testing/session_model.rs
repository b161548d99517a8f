//! A session table and a `HashMap` oracle, driven by the same operations.
//!
//! The oracle is written from the table's contract (the [`session`](crate::session) module docs),
//! not from its code: sessions keyed by forward key, a reverse-key index, IPVS timeouts from the
//! last refresh, lazy expiry on `lookup`, per-backend active/inactive counters, and the eviction
//! order (expired, then the oldest half-open, then the oldest finished; never an established,
//! half-closed or UDP session). Where the contract leaves a choice to the table (which expired
//! sessions a bounded sweep reaches first), the model accepts any legal outcome and then follows
//! the table; everything else must match exactly, after every operation.
//!
//! Burst lookups are checked on the way: every fifth operation prepares hints for the whole
//! decoded key space, in turn with [`SessionTable::prepare`],
//! [`SessionTable::prepare_with_reverse`] and [`SessionTable::prepare_directed`] (every key that
//! is no session's forward key at that moment marked reverse-only, as a director marks
//! replies), and the lookups of odd operations go through [`SessionTable::lookup_prepared`] with
//! the key's hint, however many inserts, removals, expiries and evictions happened since; the
//! oracle knows nothing of hints.

use hashbrown::{HashMap, HashSet};
use std::fmt;

use super::session_ops::{KeySpec, ModelConfig, SessionOp, decode};
use crate::backend::BackendId;
use crate::flow::{FlowKey, Protocol};
use crate::session::{
    ConnState, Direction, EntryMut, InsertError, Prepared, Session, SessionTable, TableConfig,
    TableStats, Timeouts,
};
use crate::time::Instant;

/// The first difference between the table and the oracle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Divergence {
    /// Index of the operation (0-based) after which it showed.
    pub step: usize,
    /// The operation.
    pub op: String,
    /// What differed.
    pub message: String,
}

impl fmt::Display for Divergence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "step {} ({}): {}", self.step, self.op, self.message)
    }
}

impl std::error::Error for Divergence {}

/// How often each interesting outcome happened: lets tests check that random programs reach the
/// paths they are meant to test.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Coverage {
    /// Successful inserts.
    pub inserted: u64,
    /// Inserts refused as `Exists`, `ReverseExists`, `FamilyMismatch`, `Full`.
    pub refused: [u64; 4],
    /// Lookups that found a session by its reverse key.
    pub found_outbound: u64,
    /// Sessions collected by a lookup after they expired.
    pub expired_lazily: u64,
    /// Sessions removed by sweeps (explicit or to make room).
    pub swept: u64,
    /// Evictions of half-open and of finished sessions.
    pub evicted: [u64; 2],
    /// State changes through an entry.
    pub state_changes: u64,
    /// Lookups made with a hint from a burst `prepare` (often stale: prepared several
    /// operations earlier).
    pub prepared_lookups: u64,
    /// Of those, lookups whose hint came from `prepare_directed` with the key marked
    /// reverse-only.
    pub reverse_only_lookups: u64,
}

impl std::ops::AddAssign for Coverage {
    fn add_assign(&mut self, o: Coverage) {
        self.inserted += o.inserted;
        for i in 0..4 {
            self.refused[i] += o.refused[i];
        }
        self.found_outbound += o.found_outbound;
        self.expired_lazily += o.expired_lazily;
        self.swept += o.swept;
        self.evicted[0] += o.evicted[0];
        self.evicted[1] += o.evicted[1];
        self.state_changes += o.state_changes;
        self.prepared_lookups += o.prepared_lookups;
        self.reverse_only_lookups += o.reverse_only_lookups;
    }
}

const HALF: usize = 0;
const DONE: usize = 1;

fn in_class(s: ConnState, class: usize) -> bool {
    if class == HALF { s.is_half_open() } else { s.is_done() }
}

/// What the oracle knows about one session.
#[derive(Clone, Debug)]
struct Expected {
    rev: Option<FlowKey>,
    backend: BackendId,
    state: ConnState,
    packets_in: u32,
    packets_out: u32,
    created: Instant,
    expires: Instant,
    ext: u32,
    /// Per class (half-open, done): sequence number of the latest entry, and number of entries.
    entered: [Option<u64>; 2],
    entries: [u32; 2],
}

type Check = Result<(), String>;

fn ensure(cond: bool, msg: impl FnOnce() -> String) -> Check {
    if cond { Ok(()) } else { Err(msg()) }
}

/// A [`SessionTable`] (with a `u32` extension per session) checked against an oracle.
#[derive(Debug)]
pub struct SessionModel {
    table: SessionTable<u32>,
    config: ModelConfig,
    timeouts: Timeouts,
    now: Instant,
    by_fwd: HashMap<FlowKey, Expected>,
    by_rev: HashMap<FlowKey, FlowKey>,
    stats: TableStats,
    seq: u64,
    next_ext: u32,
    fresh: u32,
    step: usize,
    coverage: Coverage,
    /// Burst-lookup hints for the decoded key space, refreshed every few operations, and
    /// whether each key was marked reverse-only.
    hints: HashMap<FlowKey, (Prepared, bool)>,
}

/// Keys the decoder produces (see `session_ops::key`): what the hints are prepared for.
fn decoded_keys() -> Vec<FlowKey> {
    let mut v: Vec<FlowKey> = (0..=255u8).map(|b| KeySpec(b & 0xd3).flow()).collect();
    v.sort();
    v.dedup();
    v
}

/// Every `PREPARE_EVERY`-th operation refreshes the hints; lookups of odd operations use them,
/// so a hint is used after up to that many operations changed the table.
const PREPARE_EVERY: usize = 5;

/// The table's `lookup`, or on odd steps `lookup_prepared` with the key's (possibly stale)
/// hint: both must give the same answer.
fn lookup<'t>(
    table: &'t mut SessionTable<u32>,
    hints: &HashMap<FlowKey, (Prepared, bool)>,
    coverage: &mut Coverage,
    step: usize,
    key: &FlowKey,
    now: Instant,
) -> Option<EntryMut<'t, u32>> {
    match hints.get(key) {
        Some(&(h, reverse_only)) if step % 2 == 1 => {
            coverage.prepared_lookups += 1;
            coverage.reverse_only_lookups += u64::from(reverse_only);
            table.lookup_prepared(key, h, now)
        }
        _ => table.lookup(key, now),
    }
}

impl SessionModel {
    /// An empty table and oracle; time starts at 1 s.
    pub fn new(config: ModelConfig) -> Self {
        let tc = TableConfig {
            capacity: config.capacity,
            max_half_open: config.max_half_open,
            ..TableConfig::default()
        };
        SessionModel {
            table: SessionTable::new(tc),
            config,
            timeouts: tc.timeouts,
            now: Instant::from_secs(1),
            by_fwd: HashMap::new(),
            by_rev: HashMap::new(),
            stats: TableStats::default(),
            seq: 0,
            next_ext: 1,
            fresh: 0,
            step: 0,
            coverage: Coverage::default(),
            hints: HashMap::new(),
        }
    }

    /// Decodes `bytes` (see [`decode`]) and applies every operation; what the run covered.
    pub fn run(bytes: &[u8]) -> Result<Coverage, Divergence> {
        let (config, ops) = decode(bytes);
        let mut m = SessionModel::new(config);
        for op in &ops {
            m.apply(op)?;
        }
        m.check_all()?;
        Ok(m.coverage)
    }

    /// Compares every session of the table with the oracle.
    pub fn check_all(&self) -> Result<(), Divergence> {
        self.check_invariants(true).map_err(|message| Divergence {
            step: self.step,
            op: "(final check)".into(),
            message,
        })
    }

    /// What the operations so far covered.
    pub fn coverage(&self) -> Coverage {
        self.coverage
    }

    /// The table under test.
    pub fn table(&self) -> &SessionTable<u32> {
        &self.table
    }

    /// The model's clock.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Applies `op` to both sides and compares them: what the operation returned and touched,
    /// the counts, statistics and backend counters after every operation, and every session's
    /// contents after every fourth (and in [`SessionModel::check_all`]).
    pub fn apply(&mut self, op: &SessionOp) -> Result<(), Divergence> {
        if self.step % PREPARE_EVERY == 0 {
            let keys = decoded_keys();
            let mut hints = vec![Prepared::default(); keys.len()];
            let mut marked = vec![false; keys.len()];
            match self.step / PREPARE_EVERY % 3 {
                0 => self.table.prepare(&keys, &mut hints),
                1 => self.table.prepare_with_reverse(&keys, &mut hints),
                _ => {
                    let mut bits = vec![0u32; keys.len().div_ceil(32)];
                    for (i, k) in keys.iter().enumerate() {
                        if !self.by_fwd.contains_key(k) {
                            bits[i / 32] |= 1 << (i % 32);
                            marked[i] = true;
                        }
                    }
                    self.table.prepare_directed(&keys, &bits, &mut hints);
                }
            }
            self.hints = keys.into_iter().zip(hints.into_iter().zip(marked)).collect();
        }
        let full = self.step % 4 == 3;
        let res = self.apply_inner(op).and_then(|()| self.check_invariants(full));
        let step = self.step;
        self.step += 1;
        res.map_err(|message| Divergence { step, op: format!("{op:?}"), message })
    }

    fn apply_inner(&mut self, op: &SessionOp) -> Check {
        let now = self.now;
        match *op {
            SessionOp::Insert { key, reverse, backend, state } => {
                self.insert(key.flow(), reverse.map(|r| r.flow()), backend, state)
            }
            SessionOp::Fill(count, state) => {
                for _ in 0..count {
                    self.fresh += 1;
                    let f = self.fresh;
                    let src = std::net::Ipv4Addr::new(10, 200, (f >> 8) as u8, f as u8);
                    let key = FlowKey::v4(Protocol::Tcp, src, 2000, [10, 0, 1, 1].into(), 80);
                    self.insert(key, None, BackendId(1 + f % 4), state)?;
                }
                Ok(())
            }
            SessionOp::Get(key) => {
                let got = self.table.get(&key.flow()).map(|(s, d)| (d, s.clone()));
                match (self.locate(&key.flow()), got) {
                    (None, None) => Ok(()),
                    (Some((fwd, dir)), Some((d, s))) => {
                        ensure(d == dir, || format!("direction {d:?}, want {dir:?}"))?;
                        self.same(&s, &fwd)
                    }
                    (want, got) => Err(format!("get: want {want:?}, got {got:?}")),
                }
            }
            SessionOp::Lookup(key) => self.with_entry(key.flow(), |_, _| {}),
            SessionOp::RecordPacket(key) => {
                let timeouts = self.timeouts;
                let got = lookup(
                    &mut self.table,
                    &self.hints,
                    &mut self.coverage,
                    self.step,
                    &key.flow(),
                    now,
                )
                .map(|mut e| e.record_packet(now));
                let mut count = None;
                self.expect_entry(key.flow(), got.is_some(), |e, dir| {
                    e.expires = now + timeouts.of(e.state);
                    let c = match dir {
                        Direction::Inbound => &mut e.packets_in,
                        Direction::Outbound => &mut e.packets_out,
                    };
                    *c = c.saturating_add(1);
                    count = Some(*c);
                })?;
                ensure(got == count, || format!("record_packet returned {got:?}, want {count:?}"))
            }
            SessionOp::SetState(key, state) => {
                let got = lookup(
                    &mut self.table,
                    &self.hints,
                    &mut self.coverage,
                    self.step,
                    &key.flow(),
                    now,
                )
                .map(|mut e| e.set_state(state, now));
                let (timeouts, seq) = (self.timeouts, &mut self.seq);
                let mut changes = 0;
                let found = got.is_some();
                let (by_fwd, by_rev) = (&mut self.by_fwd, &mut self.by_rev);
                expect_entry(by_fwd, by_rev, &mut self.stats, now, key.flow(), found, |e, _| {
                    if e.state != state {
                        changes += 1;
                        enter(e, Some(e.state), state, seq);
                        e.state = state;
                    }
                    e.expires = now + timeouts.of(state);
                })?;
                self.coverage.state_changes += changes;
                Ok(())
            }
            SessionOp::SetBackend(key, backend) => {
                let got = lookup(
                    &mut self.table,
                    &self.hints,
                    &mut self.coverage,
                    self.step,
                    &key.flow(),
                    now,
                )
                .map(|mut e| e.set_backend(backend));
                self.expect_entry(key.flow(), got.is_some(), |e, _| e.backend = backend)
            }
            SessionOp::RemoveEntry(key) => {
                let got = lookup(
                    &mut self.table,
                    &self.hints,
                    &mut self.coverage,
                    self.step,
                    &key.flow(),
                    now,
                )
                .map(|e| e.remove());
                let fwd = self.locate(&key.flow()).map(|(f, _)| f);
                self.expect_entry(key.flow(), got.is_some(), |_, _| {})?;
                if let (Some(s), Some(fwd)) = (got, fwd) {
                    self.same(&s, &fwd)?;
                    self.forget(&fwd);
                }
                Ok(())
            }
            SessionOp::Remove(key) => {
                let got = self.table.remove(&key.flow());
                match (self.locate(&key.flow()), got) {
                    (None, None) => Ok(()),
                    (Some((fwd, _)), Some(s)) => {
                        self.same(&s, &fwd)?;
                        self.forget(&fwd);
                        Ok(())
                    }
                    (want, got) => Err(format!("remove: want {want:?}, got {got:?}")),
                }
            }
            SessionOp::Advance(d) => {
                self.now += d;
                Ok(())
            }
            SessionOp::Expire(budget) => {
                let n = self.table.expire(now, budget);
                let gone = self.collect_removed(0);
                ensure(gone.len() == n && n <= budget, || {
                    format!("expire({budget}) said {n}, removed {}", gone.len())
                })?;
                self.stats.expired += n as u64;
                self.coverage.swept += n as u64;
                for k in gone {
                    ensure(self.by_fwd[&k].expires <= now, || format!("{k} expired early"))?;
                    self.forget(&k);
                }
                Ok(())
            }
            SessionOp::ExpireAll => {
                let n = self.table.expire(now, 2 * self.config.capacity + 2);
                let due: Vec<FlowKey> =
                    self.by_fwd.iter().filter(|(_, e)| e.expires <= now).map(|(k, _)| *k).collect();
                ensure(n == due.len(), || {
                    format!("full sweep removed {n}, {} were due", due.len())
                })?;
                self.stats.expired += n as u64;
                self.coverage.swept += n as u64;
                for k in due {
                    self.forget(&k);
                }
                Ok(())
            }
            SessionOp::RemoveBackend(b) => {
                let n = self.table.remove_backend(b);
                let victims: Vec<FlowKey> =
                    self.by_fwd.iter().filter(|(_, e)| e.backend == b).map(|(k, _)| *k).collect();
                ensure(n == victims.len(), || format!("removed {n}, want {}", victims.len()))?;
                for k in victims {
                    self.forget(&k);
                }
                Ok(())
            }
        }
    }

    /// `lookup` through the table's entry, then the oracle's view of the same entry.
    fn with_entry(&mut self, key: FlowKey, f: impl FnOnce(&mut Expected, Direction)) -> Check {
        let now = self.now;
        let got = lookup(&mut self.table, &self.hints, &mut self.coverage, self.step, &key, now)
            .map(|e| (e.direction(), e.session().clone()));
        let mut dir_seen = None;
        self.expect_entry(key, got.is_some(), |e, d| {
            dir_seen = Some(d);
            f(e, d)
        })?;
        if let Some((d, s)) = got {
            let (fwd, _) = self.locate(&key).ok_or("found a session the oracle lacks")?;
            ensure(Some(d) == dir_seen, || format!("direction {d:?}, want {dir_seen:?}"))?;
            self.same(&s, &fwd)?;
        }
        Ok(())
    }

    fn expect_entry(
        &mut self,
        key: FlowKey,
        found: bool,
        f: impl FnOnce(&mut Expected, Direction),
    ) -> Check {
        let expired = self.stats.expired;
        let mut outbound = false;
        expect_entry(
            &mut self.by_fwd,
            &mut self.by_rev,
            &mut self.stats,
            self.now,
            key,
            found,
            |e, d| {
                outbound = d == Direction::Outbound;
                f(e, d)
            },
        )?;
        self.coverage.expired_lazily += self.stats.expired - expired;
        self.coverage.found_outbound += u64::from(outbound);
        Ok(())
    }

    fn locate(&self, key: &FlowKey) -> Option<(FlowKey, Direction)> {
        locate(&self.by_fwd, &self.by_rev, key)
    }

    fn forget(&mut self, fwd: &FlowKey) {
        if let Some(e) = self.by_fwd.remove(fwd)
            && let Some(r) = e.rev
        {
            self.by_rev.remove(&r);
        }
    }

    /// Forward keys the oracle holds and the table no longer does (`expected_new` is how many
    /// sessions the table should hold beyond the oracle's: then nothing is looked for if the
    /// counts say nothing went).
    fn collect_removed(&self, expected_new: usize) -> Vec<FlowKey> {
        if self.table.len() == self.by_fwd.len() + expected_new {
            return Vec::new();
        }
        let live: HashSet<FlowKey> = self.table.iter().map(|v| v.forward).collect();
        self.by_fwd.keys().filter(|k| !live.contains(*k)).copied().collect()
    }

    fn same(&self, s: &Session<u32>, fwd: &FlowKey) -> Check {
        let e = self.by_fwd.get(fwd).ok_or_else(|| format!("oracle lacks {fwd}"))?;
        let ok = s.backend() == e.backend
            && s.state() == e.state
            && s.packets_in == e.packets_in
            && s.packets_out == e.packets_out
            && s.created() == e.created
            && s.expires() == e.expires
            && s.ext == e.ext
            && s.flags == 0;
        ensure(ok, || format!("session {fwd}: table {s:?}, oracle {e:?}"))
    }

    fn count(&self, class: usize) -> usize {
        self.by_fwd.values().filter(|e| in_class(e.state, class)).count()
    }

    /// Whether evicting `fwd` as "the oldest of `class`" is legal.
    fn oldest_ok(&self, fwd: &FlowKey, class: usize) -> Check {
        let v = &self.by_fwd[fwd];
        ensure(in_class(v.state, class), || format!("evicted {fwd} in {:?}", v.state))?;
        if v.entries[class] > 1 {
            // It entered the class more than once: an older entry may still be queued.
            return Ok(());
        }
        let oldest = self
            .by_fwd
            .values()
            .filter(|e| in_class(e.state, class) && e.entries[class] == 1)
            .filter_map(|e| e.entered[class])
            .min();
        ensure(v.entered[class] == oldest, || {
            format!("evicted {fwd} (entered {:?}), oldest entered {oldest:?}", v.entered[class])
        })
    }

    fn insert(
        &mut self,
        fwd: FlowKey,
        rev: Option<FlowKey>,
        backend: BackendId,
        state: ConnState,
    ) -> Check {
        let now = self.now;
        let ext = self.next_ext;
        self.next_ext += 1;
        let before = self.table.stats();
        let got = self
            .table
            .insert(now, fwd, rev, Session::new(backend, state, now, ext))
            .map(|e| (e.direction(), e.session().clone()));
        let want_err = if rev.is_some_and(|r| r.is_ipv4() != fwd.is_ipv4()) {
            Some(InsertError::FamilyMismatch)
        } else if self.by_fwd.contains_key(&fwd) {
            Some(InsertError::Exists)
        } else if rev.is_some_and(|r| self.by_rev.contains_key(&r)) {
            Some(InsertError::ReverseExists)
        } else {
            None
        };
        if let Some(err) = want_err {
            self.coverage.refused[match err {
                InsertError::Exists => 0,
                InsertError::ReverseExists => 1,
                _ => 2,
            }] += 1;
            return ensure(got.as_ref().err() == Some(&err), || {
                format!("insert: {got:?}, want {err:?}")
            });
        }
        let after = self.table.stats();
        let gone = self.collect_removed(usize::from(got.is_ok()));
        let half = self.count(HALF);
        let must_evict_half = state.is_half_open() && half >= self.config.max_half_open;
        let full = self.by_fwd.len() >= self.config.capacity;
        let (d_exp, d_half, d_done) = (
            after.expired - before.expired,
            after.evicted_half_open - before.evicted_half_open,
            after.evicted_done - before.evicted_done,
        );
        match &got {
            Err(InsertError::Full) => {
                ensure(gone.is_empty(), || format!("refused, yet removed {gone:?}"))?;
                let legal = if must_evict_half {
                    half == 0
                } else {
                    full && half == 0 && self.count(DONE) == 0
                };
                ensure(legal, || format!("refused with {half} half-open, full={full}"))?;
                self.stats.refused_full += 1;
                self.coverage.refused[3] += 1;
                return Ok(());
            }
            Err(e) => return Err(format!("insert: unexpected {e:?}")),
            Ok(_) => {}
        }
        if must_evict_half {
            ensure(gone.len() == 1 && d_half == 1, || format!("half-open cap: removed {gone:?}"))?;
            self.oldest_ok(&gone[0], HALF)?;
            self.stats.evicted_half_open += 1;
            self.coverage.evicted[HALF] += 1;
        } else if !full {
            ensure(gone.is_empty(), || format!("room left, yet removed {gone:?}"))?;
        } else if d_exp > 0 {
            ensure(
                d_exp as usize == gone.len() && gone.len() <= 64 && d_half + d_done == 0,
                || format!("sweep: {d_exp} expired, removed {gone:?}"),
            )?;
            for k in &gone {
                ensure(self.by_fwd[k].expires <= now, || format!("{k} swept before expiry"))?;
            }
            self.stats.expired += d_exp;
            self.coverage.swept += d_exp;
        } else {
            let class = if half > 0 { HALF } else { DONE };
            let want = if class == HALF { (1, 0) } else { (0, 1) };
            ensure(gone.len() == 1 && (d_half, d_done) == want, || {
                format!("full: removed {gone:?}, evictions {:?}", (d_half, d_done))
            })?;
            self.oldest_ok(&gone[0], class)?;
            self.stats.evicted_half_open += d_half;
            self.stats.evicted_done += d_done;
            self.coverage.evicted[class] += 1;
        }
        for k in gone {
            self.forget(&k);
        }
        let mut e = Expected {
            rev,
            backend,
            state,
            packets_in: 0,
            packets_out: 0,
            created: now,
            expires: now + self.timeouts.of(state),
            ext,
            entered: [None; 2],
            entries: [0; 2],
        };
        enter(&mut e, None, state, &mut self.seq);
        self.by_fwd.insert(fwd, e);
        if let Some(r) = rev {
            self.by_rev.insert(r, fwd);
        }
        self.coverage.inserted += 1;
        let (d, s) = got.map_err(|e| format!("{e:?}"))?;
        ensure(d == Direction::Inbound, || "insert returned an outbound entry".into())?;
        self.same(&s, &fwd)
    }

    fn check_invariants(&self, full: bool) -> Check {
        let t = &self.table;
        ensure(t.len() == self.by_fwd.len(), || {
            format!("len {}, oracle {}", t.len(), self.by_fwd.len())
        })?;
        ensure(t.half_open() == self.count(HALF), || {
            format!("half_open {}, oracle {}", t.half_open(), self.count(HALF))
        })?;
        ensure(t.stats() == self.stats, || {
            format!("stats {:?}, oracle {:?}", t.stats(), self.stats)
        })?;
        ensure(t.len() <= self.config.capacity, || format!("len {} over capacity", t.len()))?;
        for b in 1..=4 {
            let id = BackendId(b);
            let rt = t.registry().get(id);
            let got = rt.map_or((0, 0), |r| (r.active(), r.inactive()));
            let mine = self.by_fwd.values().filter(|e| e.backend == id);
            let active = mine.clone().filter(|e| e.state.is_active()).count() as u32;
            let inactive = mine.count() as u32 - active;
            ensure(got == (active, inactive), || {
                format!("backend {id} counters {got:?}, oracle {:?}", (active, inactive))
            })?;
        }
        if !full {
            return Ok(());
        }
        for v in t.iter() {
            let e = self.by_fwd.get(&v.forward).ok_or_else(|| format!("extra {}", v.forward))?;
            ensure(v.reverse == e.rev, || format!("{} reverse {:?}", v.forward, v.reverse))?;
            self.same(v.session, &v.forward)?;
        }
        Ok(())
    }
}

fn locate(
    by_fwd: &HashMap<FlowKey, Expected>,
    by_rev: &HashMap<FlowKey, FlowKey>,
    key: &FlowKey,
) -> Option<(FlowKey, Direction)> {
    if by_fwd.contains_key(key) {
        return Some((*key, Direction::Inbound));
    }
    by_rev.get(key).map(|f| (*f, Direction::Outbound))
}

/// Counts `e` entering the classes `to` belongs to (coming from `from`).
fn enter(e: &mut Expected, from: Option<ConnState>, to: ConnState, seq: &mut u64) {
    for class in [HALF, DONE] {
        if in_class(to, class) && !from.is_some_and(|f| in_class(f, class)) {
            *seq += 1;
            e.entered[class] = Some(*seq);
            e.entries[class] += 1;
        }
    }
}

/// The oracle side of a `lookup`: the entry must be found exactly when the oracle has a live
/// session for `key`; an expired one is collected.
fn expect_entry(
    by_fwd: &mut HashMap<FlowKey, Expected>,
    by_rev: &mut HashMap<FlowKey, FlowKey>,
    stats: &mut TableStats,
    now: Instant,
    key: FlowKey,
    found: bool,
    f: impl FnOnce(&mut Expected, Direction),
) -> Check {
    let Some((fwd, dir)) = locate(by_fwd, by_rev, &key) else {
        return ensure(!found, || format!("lookup({key}) found a session the oracle lacks"));
    };
    let e = by_fwd.get_mut(&fwd).ok_or_else(|| format!("oracle lost {fwd}"))?;
    if e.expires <= now {
        ensure(!found, || format!("lookup({key}) returned an expired session"))?;
        stats.expired += 1;
        if let Some(r) = e.rev {
            by_rev.remove(&r);
        }
        by_fwd.remove(&fwd);
        return Ok(());
    }
    ensure(found, || format!("lookup({key}) missed a live session"))?;
    f(e, dir);
    Ok(())
}
