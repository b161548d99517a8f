//! What the engine remembers per session key: enough to apply the conflict rules, not the
//! session itself (the owner's table holds that).
//!
//! Entries expire at their remaining timeout (tombstones after `tombstone_ttl`); a bounded sweep
//! removes them. Each origin node may hold at most `max_entries_per_origin` entries, and at most
//! `max_origins` distinct origins are held; beyond that new keys are refused (the caller counts
//! and sheds them). The table therefore never holds more than their product.
//!
//! Session keys come from client traffic, so the map is hashed with a secret key
//! ([`HashKey`], derived from the cluster secret): clients cannot aim collisions at it. Expiry
//! uses one bucket per ~16 ms (`BTreeMap<bucket, keys>`), O(log buckets) per refresh; stale bucket
//! entries (the key was refreshed since) are skipped by the sweep, and the buckets are rebuilt
//! when they hold more than twice the live entries.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hash, Hasher};

use slb_core::flow::{FlowKey, HashKey};
use slb_core::time::Instant;

use crate::conflict::{Held, Target};
use crate::types::{NodeId, SessionKey};

/// A session key with its keyed hash computed once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Slot {
    hash: u64,
    key: SessionKey,
}

impl Hash for Slot {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// Hands the precomputed hash through.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used (by `Slot`); fold anything else in deterministically.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

type Map = HashMap<Slot, Known, BuildHasherDefault<PassThrough>>;

/// Expiry bucket width: 2^24 ns (about 16.8 ms). Small buckets keep each one short (no large
/// reallocation while a burst of sessions lands in one bucket) at the cost of more buckets.
const BUCKET_SHIFT: u32 = 24;

fn bucket_of(at: Instant) -> u64 {
    at.as_nanos().div_ceil(1 << BUCKET_SHIFT)
}

/// One remembered version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Known {
    pub(crate) origin: NodeId,
    pub(crate) stamp: u64,
    pub(crate) expires: Instant,
    pub(crate) target: Target,
    /// Produced by local traffic (`handle_local`).
    pub(crate) local: bool,
    pub(crate) removed: bool,
    /// When this node last synced it (local entries only).
    pub(crate) last_sync: Instant,
}

impl Known {
    pub(crate) fn held(&self, now: Instant) -> Held {
        Held {
            origin: self.origin,
            stamp: self.stamp,
            owned_here: self.local,
            expired: self.expires <= now,
            target: self.target,
        }
    }
}

#[derive(Debug)]
pub(crate) struct KnownTable {
    map: Map,
    hash_key: HashKey,
    /// Expiry second -> keys that expired then (possibly stale).
    buckets: BTreeMap<u64, Vec<Slot>>,
    bucketed: usize,
    per_origin: OriginCounts,
    max_per_origin: usize,
    max_origins: usize,
}

impl std::fmt::Debug for PassThrough {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PassThrough")
    }
}

impl KnownTable {
    pub(crate) fn new(
        max_per_origin: usize,
        max_origins: usize,
        hash_key: HashKey,
        capacity: usize,
    ) -> Self {
        KnownTable {
            map: Map::with_capacity_and_hasher(capacity, Default::default()),
            hash_key,
            buckets: BTreeMap::new(),
            bucketed: 0,
            per_origin: OriginCounts::default(),
            max_per_origin,
            max_origins,
        }
    }

    fn slot(&self, key: &SessionKey) -> Slot {
        let f = FlowKey::new(key.proto, key.client, key.virt);
        Slot { hash: self.hash_key.hash_flow(&f), key: *key }
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// The entry for `key`, expired or not.
    pub(crate) fn get(&self, key: &SessionKey) -> Option<&Known> {
        self.map.get(&self.slot(key))
    }

    fn bucket(&mut self, at: Instant, slot: Slot) {
        self.buckets.entry(bucket_of(at)).or_default().push(slot);
        self.bucketed += 1;
    }

    /// Stores `k` for `key`. Returns false (and stores nothing) when `k.origin` is at its limit
    /// and `key` is not already held by that origin, or `k.origin` would be one origin too many.
    pub(crate) fn insert(&mut self, key: SessionKey, k: Known) -> bool {
        self.apply(&key, |_| Some(k)) == Applied::Stored
    }

    /// Looks `key` up once and lets `decide` choose what to store (`None`: leave it as is).
    pub(crate) fn apply<F>(&mut self, key: &SessionKey, decide: F) -> Applied
    where
        F: FnOnce(Option<&Known>) -> Option<Known>,
    {
        let slot = self.slot(key);
        let (k, rebucket) = match self.map.entry(slot) {
            Entry::Occupied(mut o) => {
                let old = *o.get();
                let Some(k) = decide(Some(&old)) else { return Applied::Declined };
                if old.origin != k.origin {
                    if !self.per_origin.admit(k.origin, self.max_per_origin, self.max_origins) {
                        return Applied::Refused;
                    }
                    self.per_origin.dec(old.origin);
                }
                o.insert(k);
                (k, bucket_of(old.expires) != bucket_of(k.expires))
            }
            Entry::Vacant(v) => {
                let Some(k) = decide(None) else { return Applied::Declined };
                if !self.per_origin.admit(k.origin, self.max_per_origin, self.max_origins) {
                    return Applied::Refused;
                }
                v.insert(k);
                (k, true)
            }
        };
        if rebucket {
            self.bucket(k.expires, slot);
        }
        if self.bucketed > 2 * self.map.len() + 1024 {
            self.rebuild_buckets();
        }
        Applied::Stored
    }

    fn rebuild_buckets(&mut self) {
        let mut b: BTreeMap<u64, Vec<Slot>> = BTreeMap::new();
        for (s, k) in &self.map {
            b.entry(bucket_of(k.expires)).or_default().push(*s);
        }
        self.buckets = b;
        self.bucketed = self.map.len();
    }

    /// Removes expired entries from up to `budget` bucket slots. Returns how many were removed.
    pub(crate) fn sweep(&mut self, now: Instant, budget: usize) -> usize {
        let mut removed = 0;
        let mut left = budget;
        while left > 0 {
            let Some(mut first) = self.buckets.first_entry() else { break };
            if first.key().saturating_mul(1 << BUCKET_SHIFT) > now.as_nanos() {
                break;
            }
            let slots = first.get_mut();
            while left > 0 {
                let Some(slot) = slots.pop() else { break };
                left -= 1;
                self.bucketed -= 1;
                if let Entry::Occupied(o) = self.map.entry(slot) {
                    if o.get().expires <= now {
                        let k = o.remove();
                        self.per_origin.dec(k.origin);
                        removed += 1;
                    }
                }
            }
            if slots.is_empty() {
                first.remove();
            }
        }
        removed
    }

    /// Entries held for `origin`.
    #[cfg(test)]
    pub(crate) fn count_for(&self, origin: NodeId) -> usize {
        self.per_origin.0.iter().find(|(o, _)| *o == origin).map_or(0, |(_, c)| *c)
    }
}

/// What [`KnownTable::apply`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Applied {
    /// The decision was to keep what is held.
    Declined,
    /// Stored.
    Stored,
    /// Refused: the origin's limit, or the limit on origins.
    Refused,
}

/// Entries per origin: a short list (a cluster has few nodes), scanned linearly.
#[derive(Debug, Default)]
struct OriginCounts(Vec<(NodeId, usize)>);

impl OriginCounts {
    /// Counts one more entry for `o` if its limits allow.
    fn admit(&mut self, o: NodeId, max_per_origin: usize, max_origins: usize) -> bool {
        if let Some((_, c)) = self.0.iter_mut().find(|(x, _)| *x == o) {
            if *c >= max_per_origin {
                return false;
            }
            *c += 1;
            return true;
        }
        if self.0.len() >= max_origins || max_per_origin == 0 {
            return false;
        }
        self.0.push((o, 1));
        true
    }

    fn dec(&mut self, o: NodeId) {
        if let Some(i) = self.0.iter().position(|(x, _)| *x == o) {
            self.0[i].1 -= 1;
            if self.0[i].1 == 0 {
                self.0.swap_remove(i);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::ForwardMode;
    use slb_core::flow::Protocol;

    fn key(port: u16) -> SessionKey {
        SessionKey {
            proto: Protocol::Udp,
            client: format!("192.0.2.1:{port}").parse().unwrap(),
            virt: "198.51.100.1:53".parse().unwrap(),
        }
    }

    fn known(origin: u32, expires: u64) -> Known {
        Known {
            origin: NodeId(origin),
            stamp: 1,
            expires: Instant::from_secs(expires),
            target: Target::new(ForwardMode::Nat, "10.0.0.1:53".parse().unwrap(), None),
            local: false,
            removed: false,
            last_sync: Instant::ZERO,
        }
    }

    #[test]
    fn per_origin_limit_expiry_and_heap_bound() {
        let mut t = KnownTable::new(2, 2, HashKey::new(1, 2), 0);
        assert!(t.insert(key(1), known(1, 10)));
        assert!(t.insert(key(2), known(1, 20)));
        assert!(!t.insert(key(3), known(1, 20)), "origin 1 is full");
        assert!(t.insert(key(3), known(2, 5)));
        assert!(t.insert(key(1), known(1, 30)), "refreshing a held key is allowed");
        assert!(!t.insert(key(3), known(1, 30)), "moving a key to a full origin is not");
        assert_eq!((t.count_for(NodeId(1)), t.count_for(NodeId(2))), (2, 1));
        assert!(!t.insert(key(9), known(3, 20)), "a third origin is one too many");
        assert_eq!(
            t.sweep(Instant::from_secs(15), 100),
            1,
            "key 3 expired; key 1's old expiry is stale"
        );
        assert!(t.get(&key(1)).is_some() && t.get(&key(3)).is_none());
        assert_eq!(t.count_for(NodeId(2)), 0);
        for i in 0..5000 {
            t.insert(key(1), known(1, 31 + i));
        }
        assert!(t.bucketed <= 2 * t.len() + 1025);
        assert_eq!(t.sweep(Instant::from_secs(1_000_000), 100_000), 2);
        assert_eq!(t.len(), 0);
    }
}
