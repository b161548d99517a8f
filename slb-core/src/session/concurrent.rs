//! A concurrent session table: shards of [`SessionTable`] behind mutexes.

use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};

use super::{Direction, EntryMut, InsertError, Session, SessionTable, SessionView, TableConfig};
use crate::backend::RuntimeRegistry;
use crate::flow::FlowKey;
use crate::time::Instant;

/// A session table safe to share between threads (a forwarding thread and a sync receiver, or
/// several forwarding threads).
///
/// Sessions live in one of `N` shards, chosen by the hash of the forward key. Reverse keys hash
/// elsewhere, so a sharded index maps each reverse key to its forward key. Lock order is always
/// "session shard, then reverse-index shard", one reverse shard at a time, so there is no deadlock.
/// Each shard gets `capacity / N` of the capacity and of the half-open limit.
#[derive(Debug)]
pub struct ConcurrentSessionTable<X = ()> {
    shards: Box<[Mutex<SessionTable<X>>]>,
    reverse: Box<[Mutex<hashbrown::HashMap<FlowKey, FlowKey>>]>,
    config: TableConfig,
}

impl<X> ConcurrentSessionTable<X> {
    /// A table of `shards` shards (rounded up to a power of two) sharing `registry`.
    pub fn new(config: TableConfig, shards: usize, registry: Arc<RuntimeRegistry>) -> Self {
        let n = shards.max(1).next_power_of_two();
        let per = TableConfig {
            capacity: config.capacity.div_ceil(n),
            max_half_open: config.max_half_open.div_ceil(n),
            ..config
        };
        ConcurrentSessionTable {
            shards: (0..n)
                .map(|_| {
                    let mut t = SessionTable::with_registry(per, Arc::clone(&registry));
                    t.enable_removal_log();
                    Mutex::new(t)
                })
                .collect(),
            reverse: (0..n).map(|_| Mutex::new(hashbrown::HashMap::new())).collect(),
            config,
        }
    }

    fn shard_of(&self, key: &FlowKey) -> usize {
        (self.config.hash_key.hash_flow(key) as usize) & (self.shards.len() - 1)
    }

    /// Drops the reverse-index entries of sessions the shard removed (expired, evicted).
    fn sync_reverse(&self, shard: &mut MutexGuard<'_, SessionTable<X>>) {
        for (rev, fwd) in shard.drain_removal_log() {
            let mut idx = self.reverse[self.shard_of(&rev)].lock();
            if idx.get(&rev) == Some(&fwd) {
                idx.remove(&rev);
            }
        }
    }

    /// Inserts a session (see [`SessionTable::insert`]).
    pub fn insert(
        &self,
        now: Instant,
        forward: FlowKey,
        reverse: Option<FlowKey>,
        session: Session<X>,
    ) -> Result<(), InsertError> {
        let mut shard = self.shards[self.shard_of(&forward)].lock();
        // Same precedence of errors as the plain table: family, forward key, reverse key.
        let family = |k: &FlowKey| (k.src.is_ipv4() == k.dst.is_ipv4()).then_some(k.is_ipv4());
        if family(&forward).is_none() || reverse.is_some_and(|r| family(&r) != family(&forward)) {
            return Err(InsertError::FamilyMismatch);
        }
        if shard.get(&forward).is_some_and(|(_, d)| d == Direction::Inbound) {
            return Err(InsertError::Exists);
        }
        if let Some(r) = reverse
            && self.reverse[self.shard_of(&r)].lock().contains_key(&r)
        {
            return Err(InsertError::ReverseExists);
        }
        let res = shard.insert(now, forward, reverse, session).map(|_| ());
        self.sync_reverse(&mut shard);
        if res.is_ok()
            && let Some(r) = reverse
        {
            self.reverse[self.shard_of(&r)].lock().insert(r, forward);
        }
        res
    }

    /// Runs `f` on the session `key` belongs to, in either direction (see
    /// [`SessionTable::lookup`]); `None` if there is none. As in the plain table, a session whose
    /// forward key is `key` wins over one whose reverse key is `key`.
    pub fn with_session<R>(
        &self,
        key: &FlowKey,
        now: Instant,
        f: impl FnOnce(&mut EntryMut<'_, X>) -> R,
    ) -> Option<R> {
        let (mut shard, forward, dir) = self.locate(key)?;
        let out = shard.lookup(&forward, now).map(|mut entry| {
            entry.set_direction(dir);
            f(&mut entry)
        });
        self.sync_reverse(&mut shard);
        out
    }

    /// The shard (locked) and forward key of the session `key` belongs to. A forward key lives
    /// in the shard it hashes to, as do the reverse keys of that shard's sessions, so that shard
    /// answers first; only a reverse key of a session elsewhere needs the reverse index.
    fn locate(
        &self,
        key: &FlowKey,
    ) -> Option<(MutexGuard<'_, SessionTable<X>>, FlowKey, Direction)> {
        let home = self.shards[self.shard_of(key)].lock();
        if let Some((_, dir)) = home.get(key) {
            return Some((home, *key, dir));
        }
        drop(home);
        let forward = *self.reverse[self.shard_of(key)].lock().get(key)?;
        Some((self.shards[self.shard_of(&forward)].lock(), forward, Direction::Outbound))
    }

    /// Removes the session `key` belongs to.
    pub fn remove(&self, key: &FlowKey) -> Option<Session<X>> {
        let (mut shard, forward, _) = self.locate(key)?;
        let s = shard.remove(&forward);
        self.sync_reverse(&mut shard);
        s
    }

    /// Expires sessions in every shard, `budget_per_shard` slots each; returns how many.
    pub fn expire(&self, now: Instant, budget_per_shard: usize) -> usize {
        let mut n = 0;
        for shard in self.shards.iter() {
            let mut shard = shard.lock();
            n += shard.expire(now, budget_per_shard);
            self.sync_reverse(&mut shard);
        }
        n
    }

    /// Sessions held.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Calls `f` on every session, shard by shard (each shard locked while it is visited).
    pub fn for_each(&self, mut f: impl FnMut(SessionView<'_, X>)) {
        for shard in self.shards.iter() {
            for v in shard.lock().iter() {
                f(v);
            }
        }
    }
}
