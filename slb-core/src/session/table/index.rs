//! The session table's hash index: slot numbers in cache-line buckets, found by a 16-bit tag.
//!
//! ```text
//!   bucket (64 bytes, one cache line, 64-byte aligned)
//!   | slot+1 x 10 (u32; 0 = empty way) | tag x 10 (u16) | passed (u16) | pass filter (u16) |
//! ```
//! A key's hash picks its home bucket (high 32 bits, by multiply-shift, so any bucket count
//! works), its tag (low 16 bits) and its filter bit (bits 16-19). A lookup reads the home
//! bucket, compares the ten tags at once and checks the key of each matching slot, so a hit
//! costs two dependent memory accesses: the bucket and the slot. An entry whose home bucket is
//! full goes to the next bucket with room (linear probing by buckets); every full bucket it
//! passes counts it in `passed` and sets its filter bit in the `pass filter`. A search goes on
//! past a bucket only while the bucket's filter has its key's bit, so a key that is not there
//! (every reply's forward lookup) costs one bucket unless one of the few entries that passed
//! its home bucket shares its bit (one in 16 per entry), where testing `passed` alone would
//! search on for every key of an overflowed bucket. A removal decrements the counts it passed
//! and clears a filter when its count returns to zero; until then the filter keeps the bits of
//! entries removed since (extra searches, never a missed entry). The index grows (doubling)
//! past 70 % of its ways.
//!
//! The buckets live in a zeroed `Vec<u64>` (allocated with `alloc_zeroed`, so a large index is
//! not touched until used: a driver may still advise huge pages for it), aligned to 64 bytes
//! by skipping up to seven leading words.

use crate::sys;

/// Ways (entries) per bucket.
const WAYS: usize = 10;
/// Words per bucket.
const WORDS: usize = 8;
/// Word holding tags 0-3; tags 4-7 and 8-9 follow, then the pass count and filter.
const TAG_WORD: usize = 5;
/// Most entries per 100 ways before the index grows.
const LOAD_PERCENT: usize = 70;

/// The hash index of one key direction of one address family.
#[derive(Debug, Default)]
pub(super) struct Index {
    words: Vec<u64>,
    /// Word offset of bucket 0 (64-byte alignment).
    off: usize,
    /// Number of buckets (0: nothing allocated yet).
    n: usize,
    len: usize,
    /// Entries held before the next insert grows the index.
    max: usize,
}

#[inline(always)]
fn tag_of(hash: u64) -> u16 {
    hash as u16
}

/// `hash`'s bit in a bucket's pass filter.
#[inline(always)]
fn filter_bit(hash: u64) -> u16 {
    1 << ((hash >> 16) & 15)
}

impl Index {
    /// An index with room for `entries` without growing.
    pub(super) fn with_capacity(entries: usize) -> Self {
        let n = if entries == 0 { 0 } else { (entries * 100).div_ceil(WAYS * LOAD_PERCENT) };
        Index::with_buckets(n)
    }

    fn with_buckets(n: usize) -> Self {
        if n == 0 {
            return Index::default();
        }
        let words = vec![0u64; n * WORDS + WORDS - 1];
        let misalign = (words.as_ptr() as usize / 8) % WORDS;
        let off = (WORDS - misalign) % WORDS;
        Index { words, off, n, len: 0, max: n * WAYS * LOAD_PERCENT / 100 }
    }

    /// Entries held.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Heap bytes.
    pub(super) fn memory_bytes(&self) -> usize {
        self.words.capacity() * 8
    }

    /// The allocation (start, bytes), for memory advice.
    pub(super) fn region(&self) -> (*const u8, usize) {
        (self.words.as_ptr().cast(), self.words.capacity() * 8)
    }

    #[inline(always)]
    fn home(&self, hash: u64) -> usize {
        (((hash >> 32) * self.n as u64) >> 32) as usize
    }

    #[inline(always)]
    fn base(&self, b: usize) -> usize {
        self.off + b * WORDS
    }

    #[inline(always)]
    fn slot_at(&self, base: usize, j: usize) -> u32 {
        (self.words[base + j / 2] >> (32 * (j & 1))) as u32
    }

    #[inline(always)]
    fn set_way(&mut self, base: usize, j: usize, slot_plus_one: u32, tag: u16) {
        let w = &mut self.words[base + j / 2];
        let shift = 32 * (j & 1);
        *w = (*w & !(0xffff_ffffu64 << shift)) | (u64::from(slot_plus_one) << shift);
        let t = &mut self.words[base + TAG_WORD + j / 4];
        let shift = 16 * (j & 3);
        *t = (*t & !(0xffffu64 << shift)) | (u64::from(tag) << shift);
    }

    /// Entries that passed the bucket at `base` (went on to a later bucket).
    #[cfg(test)]
    fn passed(&self, base: usize) -> u16 {
        (self.words[base + WORDS - 1] >> 32) as u16
    }

    /// Whether an entry with `hash` may have passed the bucket at `base`: false proves that
    /// no entry with this hash lies beyond it.
    #[inline(always)]
    fn may_pass(&self, base: usize, hash: u64) -> bool {
        (self.words[base + WORDS - 1] >> 48) as u16 & filter_bit(hash) != 0
    }

    /// Counts an entry with `hash` passing the bucket at `base` (`up`), or one that passed it
    /// leaving.
    fn add_passed(&mut self, base: usize, hash: u64, up: bool) {
        let w = self.words[base + WORDS - 1];
        let (count, filter) = ((w >> 32) as u16, (w >> 48) as u16);
        // A saturated count stays saturated, and its filter full: searches then always go
        // on (still correct).
        let (count, filter) = match (up, count) {
            (_, u16::MAX) => (u16::MAX, u16::MAX),
            (true, c) => (c + 1, filter | filter_bit(hash)),
            (false, 0 | 1) => (0, 0),
            (false, c) => (c - 1, filter),
        };
        self.words[base + WORDS - 1] =
            (w & 0xffff_ffff) | (u64::from(count) << 32) | (u64::from(filter) << 48);
    }

    /// Bit `j` set for each way of the bucket at `base` whose tag may be `tag` (every way with
    /// that tag, and rarely a neighbour of one: callers check the slot).
    #[inline(always)]
    fn matches(&self, base: usize, tag: u16) -> u32 {
        const LOW: u64 = 0x0001_0001_0001_0001;
        const HIGH: u64 = 0x8000_8000_8000_8000;
        // Gathers bits 0, 16, 32, 48 into bits 48-51 (the partial products cannot carry).
        const GATHER: u64 = (1 << 48) | (1 << 33) | (1 << 18) | (1 << 3);
        let pat = u64::from(tag) * LOW;
        let lanes = |w: u64| {
            // A zero 16-bit lane of `x` sets its top bit here (a borrow out of a zero lane can
            // also mark the lane above it: a false candidate, never a missed one).
            let x = w ^ pat;
            let z = (x.wrapping_sub(LOW) & !x & HIGH) >> 15;
            (z.wrapping_mul(GATHER) >> 48) as u32 & 0xf
        };
        let w = &self.words[base + TAG_WORD..base + WORDS];
        (lanes(w[0]) | lanes(w[1]) << 4 | lanes(w[2]) << 8) & ((1 << WAYS) - 1)
    }

    /// The slot whose entry matches `hash` and for which `eq` holds.
    #[inline(always)]
    pub(super) fn find(&self, hash: u64, mut eq: impl FnMut(u32) -> bool) -> Option<u32> {
        if self.n == 0 {
            return None;
        }
        let tag = tag_of(hash);
        let mut b = self.home(hash);
        for _ in 0..self.n {
            let base = self.base(b);
            let mut m = self.matches(base, tag);
            while m != 0 {
                let j = m.trailing_zeros() as usize;
                m &= m - 1;
                let s = self.slot_at(base, j);
                if s != 0 && eq(s - 1) {
                    return Some(s - 1);
                }
            }
            if !self.may_pass(base, hash) {
                return None;
            }
            b = if b + 1 == self.n { 0 } else { b + 1 };
        }
        None
    }

    /// The first slot whose tag matches `hash`, without looking at any slot: what a burst
    /// lookup fetches next. `None` proves that no entry has this hash.
    #[inline(always)]
    pub(super) fn candidate(&self, hash: u64) -> Option<u32> {
        if self.n == 0 {
            return None;
        }
        let base = self.base(self.home(hash));
        if let Some(s) = self.first_live(base, tag_of(hash)) {
            return Some(s);
        }
        if self.may_pass(base, hash) { self.candidate_far(hash) } else { None }
    }

    /// The slot of the first live way of the bucket at `base` whose tag may be `tag`.
    #[inline(always)]
    fn first_live(&self, base: usize, tag: u16) -> Option<u32> {
        let mut m = self.matches(base, tag);
        while m != 0 {
            let j = m.trailing_zeros() as usize;
            m &= m - 1;
            let s = self.slot_at(base, j);
            if s != 0 {
                return Some(s - 1);
            }
        }
        None
    }

    #[cold]
    fn candidate_far(&self, hash: u64) -> Option<u32> {
        self.find(hash, |_| true)
    }

    /// Whether [`Index::candidate`] searches past `hash`'s home bucket (no live way there
    /// has its tag, and the bucket's pass filter has its bit): for tests that must take that
    /// path.
    #[cfg(test)]
    pub(super) fn searches_past_home(&self, hash: u64) -> bool {
        if self.n == 0 {
            return false;
        }
        let base = self.base(self.home(hash));
        self.first_live(base, tag_of(hash)).is_none() && self.may_pass(base, hash)
    }

    /// Where a burst lookup reads `hash`'s home bucket: the index of one of its words, for
    /// [`Index::touch_at`] (`usize::MAX` when nothing is allocated).
    #[inline(always)]
    pub(super) fn home_word(&self, hash: u64) -> usize {
        if self.n == 0 { usize::MAX } else { self.base(self.home(hash)) + TAG_WORD }
    }

    /// Has the CPU fetch the cache line of word `at` (from [`Index::home_word`]) while it goes
    /// on with other work: a prefetch, or where there is none a read whose value means nothing.
    #[inline(always)]
    pub(super) fn touch_at(&self, at: usize) -> u64 {
        if !sys::PREFETCH {
            return self.words.get(at).copied().unwrap_or(0);
        }
        if at < self.words.len() {
            sys::prefetch(self.words.as_ptr().wrapping_add(at));
        }
        0
    }

    /// Reads a word of `hash`'s home bucket ([`Index::home_word`], then [`Index::touch_at`]).
    #[inline(always)]
    pub(super) fn touch(&self, hash: u64) -> u64 {
        self.touch_at(self.home_word(hash))
    }

    /// Adds `slot` under `hash`; `rehash` gives the hash of any slot already indexed (needed
    /// when the index grows).
    pub(super) fn insert(&mut self, hash: u64, slot: u32, rehash: impl Fn(u32) -> u64) {
        if self.len >= self.max {
            self.grow(&rehash);
        }
        self.place(hash, slot);
        self.len += 1;
    }

    fn place(&mut self, hash: u64, slot: u32) {
        let tag = tag_of(hash);
        let mut b = self.home(hash);
        // There is always a free way: the index grows before it is full.
        loop {
            let base = self.base(b);
            if let Some(j) = (0..WAYS).find(|&j| self.slot_at(base, j) == 0) {
                self.set_way(base, j, slot + 1, tag);
                return;
            }
            self.add_passed(base, hash, true);
            b = if b + 1 == self.n { 0 } else { b + 1 };
        }
    }

    fn grow(&mut self, rehash: &impl Fn(u32) -> u64) {
        let mut bigger = Index::with_buckets((self.n * 2).max(4));
        for b in 0..self.n {
            let base = self.base(b);
            for j in 0..WAYS {
                let s = self.slot_at(base, j);
                if s != 0 {
                    bigger.place(rehash(s - 1), s - 1);
                }
            }
        }
        bigger.len = self.len;
        *self = bigger;
    }

    /// Removes `slot`, indexed under `hash`; false if it was not there.
    pub(super) fn remove(&mut self, hash: u64, slot: u32) -> bool {
        if self.n == 0 {
            return false;
        }
        let home = self.home(hash);
        let mut b = home;
        for passed in 0..self.n {
            let base = self.base(b);
            if let Some(j) = (0..WAYS).find(|&j| self.slot_at(base, j) == slot + 1) {
                self.set_way(base, j, 0, 0);
                self.len -= 1;
                let mut p = home;
                for _ in 0..passed {
                    let pb = self.base(p);
                    self.add_passed(pb, hash, false);
                    p = if p + 1 == self.n { 0 } else { p + 1 };
                }
                return true;
            }
            if !self.may_pass(base, hash) {
                return false;
            }
            b = if b + 1 == self.n { 0 } else { b + 1 };
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mix(x: u64) -> u64 {
        let x = (x ^ (x >> 31)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        x ^ (x >> 29)
    }

    #[test]
    fn buckets_are_cache_line_aligned_and_the_index_is_small() {
        let ix = Index::with_capacity(1 << 20);
        assert_eq!((ix.words.as_ptr() as usize + ix.off * 8) % 64, 0);
        let per_entry = ix.memory_bytes() as f64 / f64::from(1 << 20);
        assert!(per_entry < 10.0, "{per_entry} bytes per entry");
        assert!(ix.max >= 1 << 20);
    }

    #[test]
    fn insert_find_remove_with_collisions_and_growth() {
        // Hashes crowded into few home buckets (same high bits) and tags (same low bits):
        // overflow chains and tag collisions on every bucket.
        let hash = |s: u32| (u64::from(s % 3) << 62) | (u64::from(s % 5) << 16) | (s as u64 & 1);
        let mut ix = Index::default();
        for s in 0..500u32 {
            ix.insert(hash(s), s, hash);
        }
        assert_eq!(ix.len(), 500);
        for s in 0..500u32 {
            assert_eq!(ix.find(hash(s), |c| c == s), Some(s));
        }
        for s in (0..500u32).step_by(2) {
            assert!(ix.remove(hash(s), s));
            assert!(!ix.remove(hash(s), s), "already gone");
        }
        for s in 0..500u32 {
            let want = (s % 2 == 1).then_some(s);
            assert_eq!(ix.find(hash(s), |c| c == s), want);
        }
        assert_eq!(ix.len(), 250);
    }

    #[test]
    fn the_pass_filter_ends_searches_at_home_and_keeps_every_entry_findable() {
        // Twenty entries with one home bucket (hash bits 32-63 zero) and filter bits 0 or 1:
        // ten stay home, ten pass it.
        let hash = |s: u32| (u64::from(s % 2) << 16) | u64::from(s + 1);
        let mut ix = Index::with_capacity(1000);
        for s in 0..20u32 {
            ix.insert(hash(s), s, hash);
        }
        let home = ix.base(0);
        assert_eq!(ix.passed(home), 10);
        for s in 0..20u32 {
            assert_eq!(ix.find(hash(s), |c| c == s), Some(s), "entry {s}");
        }
        // Missing keys with the same home and an unused tag: with filter bit 0 or 1 the search
        // must go on; with any other bit the home bucket settles it.
        let missing = |bit: u64| (bit << 16) | 0x7777;
        for bit in 0..16u64 {
            assert_eq!(ix.searches_past_home(missing(bit)), bit < 2, "bit {bit}");
            assert_eq!(ix.candidate(missing(bit)), None, "bit {bit}");
            assert_eq!(ix.find(missing(bit), |_| true), None, "bit {bit}");
        }
        // The filter keeps removed entries' bits while others still pass, and clears with the
        // last of them.
        for s in 0..20u32 {
            assert!(ix.remove(hash(s), s), "entry {s}");
            for t in s + 1..20 {
                assert_eq!(ix.find(hash(t), |c| c == t), Some(t), "entry {t} after {s}");
            }
        }
        assert_eq!(ix.passed(home), 0);
        assert!(!ix.searches_past_home(missing(0)) && !ix.searches_past_home(missing(1)));
    }

    #[test]
    fn overflow_counts_return_to_zero() {
        let mut ix = Index::with_capacity(1000);
        let hashes: Vec<u64> = (0..1000u64).map(mix).collect();
        for (s, &h) in hashes.iter().enumerate() {
            ix.insert(h, s as u32, |i| hashes[i as usize]);
        }
        for (s, &h) in hashes.iter().enumerate() {
            assert!(ix.candidate(h).is_some());
            assert!(ix.remove(h, s as u32));
        }
        assert_eq!(ix.len(), 0);
        for b in 0..ix.n {
            assert_eq!(ix.passed(ix.base(b)), 0, "bucket {b}");
            assert!(!ix.may_pass(ix.base(b), 0), "bucket {b}: filter cleared");
            assert_eq!(ix.matches(ix.base(b), 0), (1 << WAYS) - 1, "all ways empty");
        }
    }
}
