//! What the engine remembers per session key: enough to apply the conflict rules, not the
//! session itself (the owner's table holds that).
//!
//! Entries expire at their remaining timeout (tombstones after `tombstone_ttl`); a bounded sweep
//! removes them. Each origin node may hold at most `max_entries_per_origin` entries, and at most
//! `max_origins` distinct origins are held; beyond that new keys are refused (the caller counts
//! and sheds them). The table therefore never holds more than their product.

use std::cmp::Reverse;
use std::collections::hash_map::Entry;
use std::collections::{BinaryHeap, HashMap};

use slb_core::time::Instant;

use crate::conflict::{Held, Target};
use crate::types::{NodeId, SessionKey};

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
    map: HashMap<SessionKey, Known>,
    expiry: BinaryHeap<Reverse<(Instant, SessionKey)>>,
    per_origin: HashMap<NodeId, usize>,
    max_per_origin: usize,
    max_origins: usize,
}

impl KnownTable {
    pub(crate) fn new(max_per_origin: usize, max_origins: usize) -> Self {
        KnownTable {
            map: HashMap::new(),
            expiry: BinaryHeap::new(),
            per_origin: HashMap::new(),
            max_per_origin,
            max_origins,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// The entry for `key`, expired or not.
    pub(crate) fn get(&self, key: &SessionKey) -> Option<&Known> {
        self.map.get(key)
    }

    /// Stores `k` for `key`. Returns false (and stores nothing) when `k.origin` is at its limit
    /// and `key` is not already held by that origin, or `k.origin` would be one origin too many.
    pub(crate) fn insert(&mut self, key: SessionKey, k: Known) -> bool {
        let count = match self.per_origin.get(&k.origin) {
            Some(&c) => c,
            None if self.per_origin.len() >= self.max_origins => return false,
            None => 0,
        };
        match self.map.entry(key) {
            Entry::Occupied(mut o) => {
                let old = *o.get();
                if old.origin != k.origin {
                    if count >= self.max_per_origin {
                        return false;
                    }
                    dec(&mut self.per_origin, old.origin);
                    *self.per_origin.entry(k.origin).or_insert(0) += 1;
                }
                o.insert(k);
                if old.expires != k.expires {
                    self.expiry.push(Reverse((k.expires, key)));
                }
            }
            Entry::Vacant(v) => {
                if count >= self.max_per_origin {
                    return false;
                }
                v.insert(k);
                *self.per_origin.entry(k.origin).or_insert(0) += 1;
                self.expiry.push(Reverse((k.expires, key)));
            }
        }
        if self.expiry.len() > 2 * self.map.len() + 1024 {
            self.rebuild_heap();
        }
        true
    }

    fn rebuild_heap(&mut self) {
        self.expiry = self.map.iter().map(|(k, v)| Reverse((v.expires, *k))).collect();
    }

    /// Removes up to `budget` expired entries. Returns how many were removed.
    pub(crate) fn sweep(&mut self, now: Instant, budget: usize) -> usize {
        let mut removed = 0;
        for _ in 0..budget {
            let Some(Reverse((at, key))) = self.expiry.peek().copied() else { break };
            if at > now {
                break;
            }
            self.expiry.pop();
            if let Entry::Occupied(o) = self.map.entry(key) {
                if o.get().expires == at {
                    let k = o.remove();
                    dec(&mut self.per_origin, k.origin);
                    removed += 1;
                }
            }
        }
        removed
    }

    /// Entries held for `origin`.
    #[cfg(test)]
    pub(crate) fn count_for(&self, origin: NodeId) -> usize {
        self.per_origin.get(&origin).copied().unwrap_or(0)
    }
}

fn dec(m: &mut HashMap<NodeId, usize>, o: NodeId) {
    if let Entry::Occupied(mut e) = m.entry(o) {
        *e.get_mut() -= 1;
        if *e.get() == 0 {
            e.remove();
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
        let mut t = KnownTable::new(2, 2);
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
        assert!(t.expiry.len() <= 2 * t.len() + 1025);
        assert_eq!(t.sweep(Instant::from_secs(1_000_000), 100_000), 2);
        assert_eq!(t.len(), 0);
    }
}
