//! Storage and indexes of one address family: the session slots (one cache line each for
//! IPv4), their reverse keys and queue generations, the free list, and the forward and reverse
//! indexes; and the packed references the eviction queues hold.

use super::index::Index;
use crate::flow::HashKey;
use crate::session::key::PackedKey;
use crate::session::{InsertError, Session};

/// What a lookup by forward key reads: the session and its forward key, in one aligned cache
/// line when they fit in 64 bytes (an IPv4 session whose dataplane data `X` takes at most 16
/// bytes), so that a lookup touches one line after the bucket.
/// The reverse key and the queue generation live in arrays of their own (see [`Family`]).
/// (An IPv6 slot, with its 38-byte key, takes two lines.)
#[derive(Debug)]
#[repr(C, align(64))]
pub(super) struct Slot<K, X> {
    pub(super) s: Session<X>,
    pub(super) fwd: K,
}

/// Bit of [`Family::tags`] set when the slot has a reverse key (clear while it is free).
pub(super) const HAS_REV: u32 = 1 << 31;

/// Storage and indexes of one address family.
#[derive(Debug)]
pub(super) struct Family<K, X> {
    pub(super) slots: Vec<Option<Slot<K, X>>>,
    /// Each slot's reverse key (same index as `slots`), [`PackedKey::NONE`] where the slot has
    /// none or is free (exactly where `tags` lacks [`HAS_REV`], so that a reader of the reverse
    /// key needs no other memory): 16 bytes for IPv4, so that one does not straddle cache lines
    /// (given the allocator's 16-byte alignment).
    pub(super) rev_keys: Vec<K>,
    /// Each slot's queue generation (low 31 bits) and [`HAS_REV`].
    pub(super) tags: Vec<u32>,
    /// Free slots with the generation of their last occupant, so that a queue reference to a
    /// freed slot never matches its next occupant.
    pub(super) free: Vec<(u32, u32)>,
    pub(super) fwd: Index,
    pub(super) rev: Index,
}

impl<K: PackedKey, X> Family<K, X> {
    pub(super) fn with_capacity(n: usize) -> Self {
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
    pub(super) fn hash(hk: &HashKey, k: &K) -> u64 {
        let (a, b, c) = k.words();
        hk.hash_words(a, b, c)
    }

    #[inline]
    pub(super) fn find_fwd_h(&self, h: u64, k: &K) -> Option<u32> {
        let slots = &self.slots;
        self.fwd.find(h, |i| {
            slots.get(i as usize).is_some_and(|s| s.as_ref().is_some_and(|s| s.fwd == *k))
        })
    }

    #[inline]
    pub(super) fn find_rev_h(&self, h: u64, k: &K) -> Option<u32> {
        // The reverse index holds only live slots with a reverse key: the key decides.
        let rev_keys = &self.rev_keys;
        self.rev.find(h, |i| rev_keys.get(i as usize) == Some(k))
    }

    #[inline]
    pub(super) fn find_fwd(&self, hk: &HashKey, k: &K) -> Option<u32> {
        self.find_fwd_h(Self::hash(hk, k), k)
    }

    #[inline]
    pub(super) fn find_rev(&self, hk: &HashKey, k: &K) -> Option<u32> {
        self.find_rev_h(Self::hash(hk, k), k)
    }

    /// Has the CPU fetch slot `idx`'s key and session early (a burst lookup's step, as
    /// [`Index::touch_at`]: a prefetch, or a read whose value means nothing).
    #[inline(always)]
    pub(super) fn touch_slot(&self, idx: u32) -> u64 {
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
    pub(super) fn touch_rev(&self, idx: u32) -> u64 {
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
    pub(super) fn touch_slot_rev(&self, idx: u32) -> u64 {
        self.touch_slot(idx) ^ self.touch_rev(idx)
    }

    pub(super) fn insert(
        &mut self,
        hk: &HashKey,
        fwd: K,
        rev: Option<K>,
        s: Session<X>,
    ) -> (u32, u32) {
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
    pub(super) fn remove(&mut self, hk: &HashKey, idx: u32) -> Option<(Slot<K, X>, Option<K>)> {
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
    pub(super) fn rev_of(&self, idx: u32) -> Option<K> {
        let k = self.rev_keys[idx as usize];
        (!k.is_none()).then_some(k)
    }

    /// The queue generation of slot `idx`.
    #[inline]
    pub(super) fn gen_of(&self, idx: u32) -> u32 {
        self.tags[idx as usize] & !HAS_REV
    }

    pub(super) fn memory_bytes(&self) -> usize {
        self.slots.capacity() * size_of::<Option<Slot<K, X>>>()
            + self.rev_keys.capacity() * size_of::<K>()
            + self.tags.capacity() * 4
            + self.free.capacity() * 8
            + self.fwd.memory_bytes()
            + self.rev.memory_bytes()
    }

    pub(super) fn regions(&self) -> [(*const u8, usize); 5] {
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
pub(super) enum Fam {
    V4,
    V6,
}

/// A packed reference into the table: family, slot index, generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Ref(u64);

impl Ref {
    pub(super) fn new(fam: Fam, idx: u32, gen_: u32) -> Self {
        Ref((u64::from(fam == Fam::V6) << 63) | (u64::from(gen_) << 32) | u64::from(idx))
    }
    pub(super) fn fam(self) -> Fam {
        if self.0 >> 63 == 1 { Fam::V6 } else { Fam::V4 }
    }
    pub(super) fn idx(self) -> u32 {
        self.0 as u32
    }
    pub(super) fn gen_(self) -> u32 {
        ((self.0 >> 32) as u32) & 0x7fff_ffff
    }
}

/// Fails if `fwd` (or `rev`) is already a key of the family.
pub(super) fn check<K: PackedKey, X>(
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
