//! A seeded, lock-free random source for the randomized schedulers.
//!
//! SplitMix64 (Steele, Lea, Flood): the state advances by a fixed odd constant and each output
//! is a bijective mix of the state. Advancing is one `fetch_add`, so many threads can draw from
//! one generator through `&self` without a lock; concurrent draws get distinct states. The
//! sequence is a pure function of the seed, so tests that pin the seed are reproducible.

use std::sync::atomic::{AtomicU64, Ordering};

const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

/// SplitMix64's output function (a bijection on `u64`).
#[inline(always)]
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// An atomic SplitMix64 generator.
#[derive(Debug)]
pub(crate) struct AtomicRng {
    state: AtomicU64,
}

impl AtomicRng {
    /// A generator whose sequence is fixed by `seed`.
    pub(crate) fn new(seed: u64) -> Self {
        AtomicRng { state: AtomicU64::new(mix64(seed ^ GOLDEN)) }
    }

    /// The next 64 random bits.
    #[inline]
    pub(crate) fn next_u64(&self) -> u64 {
        let s = self.state.fetch_add(GOLDEN, Ordering::Relaxed).wrapping_add(GOLDEN);
        mix64(s)
    }

    /// Two independent 64-bit outputs for the price of one atomic operation.
    #[inline]
    pub(crate) fn next_pair(&self) -> (u64, u64) {
        let s = self.state.fetch_add(GOLDEN.wrapping_mul(2), Ordering::Relaxed);
        (mix64(s.wrapping_add(GOLDEN)), mix64(s.wrapping_add(GOLDEN.wrapping_mul(2))))
    }
}

/// A uniform index in `0..n` from 32 random bits (Lemire's multiply-shift; the bias is at most
/// `n / 2^32`, far below anything a scheduler could notice).
#[inline(always)]
pub(crate) fn below(bits32: u32, n: usize) -> usize {
    ((u64::from(bits32) * n as u64) >> 32) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_match_single_draws_and_seeds_repeat() {
        let a = AtomicRng::new(7);
        let b = AtomicRng::new(7);
        let (x, y) = a.next_pair();
        assert_eq!((x, y), (b.next_u64(), b.next_u64()));
        assert_eq!(a.next_u64(), b.next_u64());
        assert_ne!(AtomicRng::new(8).next_u64(), AtomicRng::new(7).next_u64());
        assert!((0..1000).all(|i| below(u32::MAX - i, 10) < 10));
        assert_eq!(below(0, 10), 0);
    }
}
