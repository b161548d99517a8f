//! Burst lookups: find many keys at once so that their cache misses overlap.
//!
//! One lookup in a big table waits for two memory accesses in a row (the index bucket, then the
//! session slot), each a cache (and often TLB) miss of a few hundred nanoseconds. Independent
//! misses overlap: [`SessionTable::prepare`] hashes a burst of keys and reads all their home
//! buckets first, then all the candidate slots, so a burst of 16 waits about as long as one
//! lookup. It records where each key was found in a [`Prepared`]; the caller then does its
//! per-key work with [`SessionTable::lookup_prepared`], whose answer is exactly what
//! [`SessionTable::lookup`] would give at that moment: a hint that no longer holds (the table
//! changed in between) is detected and the lookup done afresh. A key not found by forward key
//! costs a third round (its reverse bucket) unless the caller marks it as one that can only be
//! a reverse key ([`SessionTable::prepare_directed`]).
//!
//! The reads are prefetch instructions (`sys::prefetch`, the crate's one `unsafe` block): they
//! retire at once, so a round's misses are all in flight while the CPU goes on to the next
//! round's arithmetic. On targets without a prefetch instruction they are ordinary loads, whose
//! values are folded together and passed to [`std::hint::black_box`]; nothing waits on them,
//! so the CPU still keeps many in flight.

use std::hint::black_box;

use super::{Direction, EntryMut, Fam, Family, K4, K6, PackedKey, SessionTable};
use crate::flow::{FlowKey, HashKey};
use crate::time::Instant;

/// Keys prepared per round: a whole batch of a link (32 frames), so that a batch waits for two
/// memory latencies (buckets, then slots), not four. The loops that issue the reads are kept
/// to a few instructions per key (addresses computed beforehand), so that a round's reads all
/// fit in the CPU's reorder window behind the first miss.
const ROUND: usize = 32;

const VALID: u8 = 1;
const V6: u8 = 2;
const OUTBOUND: u8 = 4;

/// Where [`SessionTable::prepare`] found one key (or proof that it was absent), for
/// [`SessionTable::lookup_prepared`]. `Prepared::default()` holds nothing (the lookup is done
/// afresh).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Prepared {
    table: u32,
    flags: u8,
    /// Candidate slot + 1; 0: the key was absent.
    slot: u32,
    /// The table's insert count when prepared.
    inserts: u64,
}

/// The family of a key, with the key's hash.
#[derive(Clone, Copy)]
enum Packed {
    V4(u64),
    V6(u64),
    /// Mixed families: no session can have this key.
    None,
}

impl Packed {
    #[inline(always)]
    fn of(hk: &HashKey, key: &FlowKey) -> Packed {
        if let Some(k) = K4::pack(key) {
            return Packed::V4(Family::<K4, ()>::hash(hk, &k));
        }
        match K6::pack(key) {
            Some(k) => Packed::V6(Family::<K6, ()>::hash(hk, &k)),
            None => Packed::None,
        }
    }
}

impl<K: PackedKey, X> Family<K, X> {
    /// The reverse index if `rev`, else the forward one.
    #[inline(always)]
    fn index(&self, rev: bool) -> &super::index::Index {
        if rev { &self.rev } else { &self.fwd }
    }

    /// Checks a prepared candidate: `Some(answer)` when it holds, `None` when the lookup must
    /// be done afresh.
    #[inline(always)]
    fn resolve(&self, k: &K, p: &Prepared, fresh: bool) -> Option<Option<(u32, Direction)>> {
        if p.slot == 0 {
            // Absent when prepared (no tag matched in either index): still absent if nothing
            // was inserted since.
            return fresh.then_some(None);
        }
        let idx = p.slot - 1;
        let s = self.slots.get(idx as usize)?.as_ref()?;
        if p.flags & OUTBOUND == 0 {
            // A forward key is unique and always wins: a live slot holding it is the answer.
            return (s.fwd == *k).then_some(Some((idx, Direction::Inbound)));
        }
        // Found by its reverse key, with no forward match when prepared: holds while no session
        // was inserted (which could bring that forward key). Then the slot, still live, still
        // holds the session the reverse index led to (with a reverse key): the key decides.
        (fresh && self.rev_keys.get(idx as usize) == Some(k))
            .then_some(Some((idx, Direction::Outbound)))
    }
}

impl<X> SessionTable<X> {
    /// Prepares the lookups of a burst of keys: hashes them all, then reads all their index
    /// buckets, then all their candidate sessions, so that the memory accesses of the whole
    /// burst overlap. `out[i]` receives the hint for `keys[i]` (for the shorter of the two
    /// slices); pass it with the same key to [`SessionTable::lookup_prepared`].
    pub fn prepare(&self, keys: &[FlowKey], out: &mut [Prepared]) {
        self.prepare_inner(keys, &[], out, false);
    }

    /// [`SessionTable::prepare`] for a caller that will also read the reverse key of the
    /// sessions found by their forward key ([`EntryMut::reverse_key`]): that memory is fetched
    /// with the rest of the burst.
    pub fn prepare_with_reverse(&self, keys: &[FlowKey], out: &mut [Prepared]) {
        self.prepare_inner(keys, &[], out, true);
    }

    /// [`SessionTable::prepare`] for a caller that knows of some keys that no session has
    /// them as its forward key (a director knows it of every packet not sent to one of its
    /// virtual services' addresses: the replies). `reverse_only` is a bit set, bit `i % 32` of
    /// word `i / 32` for `keys[i]`: a key whose bit is set is looked up in the reverse index
    /// alone, which saves reading its forward bucket, one memory round of the burst.
    /// [`SessionTable::lookup_prepared`] with such a hint gives what a lookup by reverse key
    /// alone would give: the same as [`SessionTable::lookup`] when the caller is right. Keys
    /// past the end of the set are looked up both ways.
    pub fn prepare_directed(&self, keys: &[FlowKey], reverse_only: &[u32], out: &mut [Prepared]) {
        self.prepare_inner(keys, reverse_only, out, false);
    }

    #[inline(always)]
    fn prepare_inner(
        &self,
        keys: &[FlowKey],
        reverse_only: &[u32],
        out: &mut [Prepared],
        with_rev: bool,
    ) {
        const { assert!(ROUND == 32, "one word of `reverse_only` per round") };
        let hk = self.config.hash_key;
        let n = keys.len().min(out.len());
        let mut acc = 0u64;
        for (r, (keys, out)) in keys[..n].chunks(ROUND).zip(out[..n].chunks_mut(ROUND)).enumerate()
        {
            // Each round first computes, then reads memory in a tight loop, so that all the
            // round's reads fit in the CPU's reorder window and are in flight together.
            let mut packed = [Packed::None; ROUND];
            let mut at = [usize::MAX; ROUND];
            let mut all_v4 = true;
            // Keys looked up by reverse key alone (bit i: keys[i]).
            let rev_only = reverse_only.get(r).copied().unwrap_or(0);
            for (i, ((p, a), key)) in packed.iter_mut().zip(&mut at).zip(keys).enumerate() {
                *p = Packed::of(&hk, key);
                // (`rev_only != 0` first: a round with no flag, every inbound batch, then skips
                // the per-key test; it cost inbound batches a few percent.)
                let rev = rev_only != 0 && rev_only >> i & 1 == 1;
                *a = match *p {
                    Packed::V4(h) => self.v4.index(rev).home_word(h),
                    Packed::V6(h) => {
                        all_v4 = false;
                        self.v6.index(rev).home_word(h)
                    }
                    Packed::None => {
                        all_v4 = false;
                        usize::MAX
                    }
                };
            }
            // Round one: the home buckets, forward (or reverse for the keys looked up by
            // reverse key alone).
            if all_v4 && rev_only == 0 {
                for &a in &at[..keys.len()] {
                    acc ^= self.v4.fwd.touch_at(a);
                }
            } else if all_v4 {
                for (i, &a) in at[..keys.len()].iter().enumerate() {
                    acc ^= self.v4.index(rev_only >> i & 1 == 1).touch_at(a);
                }
            } else {
                for (i, (p, &a)) in packed.iter().zip(&at).take(keys.len()).enumerate() {
                    let rev = rev_only >> i & 1 == 1;
                    acc ^= match *p {
                        Packed::V4(_) => self.v4.index(rev).touch_at(a),
                        Packed::V6(_) => self.v6.index(rev).touch_at(a),
                        Packed::None => 0,
                    };
                }
            }
            // Round two: candidates (then their slots are read) or, for keys with no forward
            // one, the reverse home buckets.
            let mut again = 0u32;
            for (i, (p, o)) in packed.iter().zip(out.iter_mut()).enumerate() {
                let rev = rev_only != 0 && rev_only >> i & 1 == 1;
                let dir = if rev { OUTBOUND } else { 0 };
                let (cand, flags) = match *p {
                    Packed::V4(h) => (self.v4.index(rev).candidate(h), VALID | dir),
                    Packed::V6(h) => (self.v6.index(rev).candidate(h), VALID | V6 | dir),
                    Packed::None => (Some(u32::MAX), 0),
                };
                again |= u32::from(cand.is_none() && !rev) << i;
                let slot = cand.map_or(0, |c| c.wrapping_add(1));
                *o = Prepared { table: self.id, flags, slot, inserts: self.inserts };
            }
            if all_v4 && again == 0 {
                // The common burst: IPv4 keys found at once, one line each (and the reverse
                // keys of those found by reverse key, or of all with `with_rev`, in a second
                // loop, so that the slots' reads go first).
                for o in out.iter() {
                    acc ^= self.v4.touch_slot(o.slot.wrapping_sub(1));
                }
                if with_rev || rev_only != 0 {
                    for o in out.iter() {
                        if with_rev || o.flags & OUTBOUND != 0 {
                            acc ^= self.v4.touch_rev(o.slot.wrapping_sub(1));
                        }
                    }
                }
                continue;
            }
            acc ^= self.touch(&packed, out, again, with_rev);
            // Round three: reverse candidates and their slots.
            if again != 0 {
                let mut m = again;
                while m != 0 {
                    let i = m.trailing_zeros() as usize;
                    m &= m - 1;
                    let cand = match packed[i] {
                        Packed::V4(h) => self.v4.rev.candidate(h),
                        Packed::V6(h) => self.v6.rev.candidate(h),
                        Packed::None => None,
                    };
                    out[i].slot = cand.map_or(0, |c| c + 1);
                    out[i].flags |= OUTBOUND;
                }
                acc ^= self.touch(&packed, out, 0, with_rev);
            }
        }
        black_box(acc);
    }

    /// Reads the candidate slots of `out` (and, for the keys flagged in `rev_buckets`, their
    /// reverse home buckets) in one tight loop; with `with_rev`, the reverse keys of
    /// forward hits too.
    #[inline(always)]
    fn touch(
        &self,
        packed: &[Packed; ROUND],
        out: &[Prepared],
        rev_buckets: u32,
        with_rev: bool,
    ) -> u64 {
        let mut acc = 0u64;
        for (i, (p, o)) in packed.iter().zip(out).enumerate() {
            acc ^= match *p {
                Packed::V4(h) if rev_buckets >> i & 1 == 1 => self.v4.rev.touch(h),
                Packed::V6(h) if rev_buckets >> i & 1 == 1 => self.v6.rev.touch(h),
                Packed::V4(_) if o.slot != 0 && o.flags & OUTBOUND != 0 => {
                    self.v4.touch_slot_rev(o.slot - 1)
                }
                Packed::V6(_) if o.slot != 0 && o.flags & OUTBOUND != 0 => {
                    self.v6.touch_slot_rev(o.slot - 1)
                }
                Packed::V4(_) if o.slot != 0 && with_rev => self.v4.touch_slot_rev(o.slot - 1),
                Packed::V6(_) if o.slot != 0 && with_rev => self.v6.touch_slot_rev(o.slot - 1),
                Packed::V4(_) if o.slot != 0 => self.v4.touch_slot(o.slot - 1),
                Packed::V6(_) if o.slot != 0 => self.v6.touch_slot(o.slot - 1),
                _ => 0,
            };
        }
        acc
    }

    /// [`SessionTable::lookup`] with a hint from [`SessionTable::prepare`] for the same key:
    /// the same answer, found without the memory waits when the hint still holds. A hint for
    /// another key or table, or one the table's changes since have made stale, is ignored.
    #[inline(always)]
    pub fn lookup_prepared(
        &mut self,
        key: &FlowKey,
        hint: Prepared,
        now: Instant,
    ) -> Option<EntryMut<'_, X>> {
        let found = match self.resolve(key, &hint) {
            Some(answer) => answer,
            None => self.locate_unprepared(key),
        };
        let (fam, idx, dir) = found?;
        self.entry_at(fam, idx, dir, now)
    }

    /// [`SessionTable::locate`] kept out of line: the rare case of a prepared lookup.
    #[inline(never)]
    fn locate_unprepared(&self, key: &FlowKey) -> Option<(Fam, u32, Direction)> {
        self.locate(key)
    }

    #[inline(always)]
    fn resolve(&self, key: &FlowKey, p: &Prepared) -> Option<Option<(Fam, u32, Direction)>> {
        if p.table != self.id || p.flags & VALID == 0 {
            return None;
        }
        let fresh = p.inserts == self.inserts;
        if p.flags & V6 == 0 {
            let k = K4::pack(key)?;
            Some(self.v4.resolve(&k, p, fresh)?.map(|(i, d)| (Fam::V4, i, d)))
        } else {
            let k = K6::pack(key)?;
            Some(self.v6.resolve(&k, p, fresh)?.map(|(i, d)| (Fam::V6, i, d)))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::backend::BackendId;
    use crate::flow::Protocol;
    use crate::session::{ConnState, Session, TableConfig};

    fn fwd(i: u32) -> FlowKey {
        FlowKey::v4(Protocol::Udp, Ipv4Addr::from(0x0b00_0000 + i), 1000, [10, 0, 0, 1].into(), 53)
    }

    fn rev(i: u32) -> FlowKey {
        FlowKey::v4(Protocol::Udp, [10, 0, 2, 1].into(), 53, Ipv4Addr::from(0x0c00_0000 + i), 7)
    }

    /// A table holding sessions `fwd(i)` / `rev(i)` for `i` below 1000, and the time they
    /// were made.
    fn filled() -> (SessionTable<()>, Instant) {
        let mut t = SessionTable::new(TableConfig::default());
        let now = Instant::from_secs(1);
        for i in 0..1000 {
            let s = Session::new(BackendId(1), ConnState::Udp, now, ());
            t.insert(now, fwd(i), Some(rev(i)), s).unwrap();
        }
        (t, now)
    }

    #[test]
    fn fresh_hints_resolve_without_a_second_search() {
        let (mut t, now) = filled();
        // Hits both ways and misses of both families, more than one round.
        let mut keys: Vec<FlowKey> = (0..20).map(fwd).chain((0..20).map(rev)).collect();
        keys.push(fwd(5000));
        keys.push(FlowKey::new(
            Protocol::Tcp,
            "[2001:db8::1]:1".parse().unwrap(),
            "[2001:db8::2]:2".parse().unwrap(),
        ));
        let mut hints = vec![Prepared::default(); keys.len()];
        t.prepare(&keys, &mut hints);
        let mut with_rev = vec![Prepared::default(); keys.len()];
        t.prepare_with_reverse(&keys, &mut with_rev);
        assert_eq!(hints, with_rev, "reading more memory changes no hint");
        for (i, (k, h)) in keys.iter().zip(&hints).enumerate() {
            let want = t.locate(k).map(|(_, idx, d)| (idx, d));
            let got = t.resolve(k, h).unwrap_or_else(|| panic!("key {i} {k}: hint {h:?} unused"));
            assert_eq!(got.map(|(_, idx, d)| (idx, d)), want, "key {i}");
        }
        // An insert makes misses and reverse hits stale; forward hits still hold.
        let s = Session::new(BackendId(1), ConnState::Udp, now, ());
        t.insert(now, fwd(5000), None, s).unwrap();
        assert!(t.resolve(&keys[0], &hints[0]).is_some());
        assert!(t.resolve(&keys[20], &hints[20]).is_none());
        assert!(t.resolve(&keys[40], &hints[40]).is_none());
        let e = t.lookup_prepared(&keys[40], hints[40], now).expect("inserted since");
        assert_eq!(e.direction(), Direction::Inbound);
    }

    /// `flags` as `prepare_directed`'s bit set.
    fn bits(flags: &[bool]) -> Vec<u32> {
        let mut w = vec![0u32; flags.len().div_ceil(32)];
        for (i, &f) in flags.iter().enumerate() {
            w[i / 32] |= u32::from(f) << (i % 32);
        }
        w
    }

    #[test]
    fn reverse_only_hints_search_the_reverse_index_alone() {
        let (mut t, now) = filled();
        // Three rounds' worth of keys: reverse keys flagged (found by reverse key), forward
        // keys unflagged (found by forward key), forward keys flagged (the caller is wrong:
        // not found, as a lookup by reverse key alone), absent keys of both kinds, and an IPv6
        // key; flagged keys in every round at other offsets, so that a flag applied to the
        // wrong key shows.
        let mut keys = Vec::new();
        let mut flags: Vec<bool> = Vec::new();
        for i in 0..30 {
            keys.extend([rev(i), fwd(i), fwd(100 + i)]);
            flags.extend([true, false, true]);
        }
        keys.extend([rev(5000), fwd(5000)]);
        flags.extend([true, false]);
        keys.push(FlowKey::new(
            Protocol::Tcp,
            "[2001:db8::1]:1".parse().unwrap(),
            "[2001:db8::2]:2".parse().unwrap(),
        ));
        flags.push(true);
        // A key past the end of the flags: both ways.
        keys.push(rev(7));
        let mut hints = vec![Prepared::default(); keys.len()];
        t.prepare_directed(&keys, &bits(&flags), &mut hints);
        for (i, (k, h)) in keys.iter().zip(&hints).enumerate() {
            let got = t.resolve(k, h).unwrap_or_else(|| panic!("key {i} {k}: hint {h:?} unused"));
            let both = t.locate(k).map(|(_, idx, d)| (idx, d));
            let want = if flags.get(i) == Some(&true) {
                both.filter(|&(_, d)| d == Direction::Outbound)
            } else {
                both
            };
            assert_eq!(got.map(|(_, idx, d)| (idx, d)), want, "key {i} {k}");
        }
        assert_eq!(t.resolve(&keys[0], &hints[0]).unwrap().unwrap().2, Direction::Outbound);
        assert_eq!(t.resolve(&keys[2], &hints[2]), Some(None), "flagged forward key");
        assert!(t.resolve(&keys[1], &hints[1]).unwrap().is_some());
        // Unflagged keys get the hints `prepare` gives.
        let mut plain = vec![Prepared::default(); keys.len()];
        t.prepare(&keys, &mut plain);
        for (i, (a, b)) in hints.iter().zip(&plain).enumerate() {
            if flags.get(i) != Some(&true) {
                assert_eq!(a, b, "key {i}");
            }
        }
        // After an insert a reverse hit is checked afresh, both ways.
        let s = Session::new(BackendId(1), ConnState::Udp, now, ());
        t.insert(now, fwd(6000), None, s).unwrap();
        assert!(t.resolve(&keys[0], &hints[0]).is_none());
    }

    #[test]
    fn hints_hold_in_a_full_table() {
        // A preallocated table filled to its capacity holds its indexes at their 70 % load,
        // where some keys, present or not, are not in their home bucket, which has
        // overflowed with the key's filter bit set: the burst must search on for them, in both
        // indexes. (Few missing keys do: 1-2 % at this load.)
        let cap = 4096;
        let config = TableConfig { capacity: cap, preallocate: true, ..TableConfig::default() };
        let mut t: SessionTable<()> = SessionTable::new(config);
        let now = Instant::from_secs(1);
        for i in 0..cap as u32 {
            let s = Session::new(BackendId(1), ConnState::Udp, now, ());
            t.insert(now, fwd(i), Some(rev(i)), s).unwrap();
        }
        let n = cap as u32 + 2000;
        let keys: Vec<FlowKey> = (0..n).map(fwd).chain((0..n).map(rev)).collect();
        let hk = t.config.hash_key;
        let past = |k: &FlowKey, rev: bool| {
            let h = Family::<K4, ()>::hash(&hk, &K4::pack(k).unwrap());
            if rev { t.v4.rev.searches_past_home(h) } else { t.v4.fwd.searches_past_home(h) }
        };
        let fwd_hits = (0..cap as u32).filter(|&i| past(&fwd(i), false)).count();
        let fwd_misses = (cap as u32..n).filter(|&i| past(&fwd(i), false)).count();
        let rev_hits = (0..cap as u32).filter(|&i| past(&rev(i), true)).count();
        assert!(
            fwd_hits > 10 && fwd_misses > 10 && rev_hits > 10,
            "searches past the home bucket: {fwd_hits} {fwd_misses} {rev_hits}"
        );
        let mut hints = vec![Prepared::default(); keys.len()];
        t.prepare(&keys, &mut hints);
        // The same with the reverse keys looked up by reverse key alone.
        let reverse_only: Vec<bool> = (0..keys.len()).map(|i| i >= n as usize).collect();
        let mut directed = vec![Prepared::default(); keys.len()];
        t.prepare_directed(&keys, &bits(&reverse_only), &mut directed);
        for (i, (k, h)) in keys.iter().zip(&hints).enumerate() {
            let want = t.locate(k).map(|(_, idx, d)| (idx, d));
            let got = t.resolve(k, h).unwrap_or_else(|| panic!("key {i} {k}: hint {h:?} unused"));
            assert_eq!(got.map(|(_, idx, d)| (idx, d)), want, "key {i} {k}");
            let got = t.resolve(k, &directed[i]).expect("directed hint used");
            assert_eq!(got.map(|(_, idx, d)| (idx, d)), want, "directed key {i} {k}");
            let present = i < cap || (n as usize..n as usize + cap).contains(&i);
            assert_eq!(want.is_some(), present, "key {i} {k}");
        }
    }
}
