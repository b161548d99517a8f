//! The one seeded pseudo-random generator of slb: SplitMix64 (Steele, Lea, Flood, "Fast
//! splittable pseudorandom number generators", 2014), in a plain and an atomic form.
//!
//! The state advances by a fixed odd constant ([`GAMMA`]) and each output is a bijective mix of
//! the state ([`mix64`]). It is small, fast, has no bad seeds (zero included) and passes BigCrush,
//! which is all slb asks of it: scheduler picks, health-check jitter, fault injection in
//! simulated links and fabrics, test data. It is not a cryptographic generator: keys and MACs
//! come from the operating system.
//!
//! Every sequence is a pure function of its seed, so a test that pins a seed replays exactly
//! (STYLE.md: randomness is seeded and injected).
//!
//! - [`SplitMix64`]: `&mut self`, for one owner (simulators, trackers, tests).
//! - [`AtomicSplitMix64`]: `&self` and lock-free, for schedulers shared between threads: advancing
//!   is one `fetch_add`, so concurrent draws get distinct states.
//!
//! ```
//! use slb_core::rng::SplitMix64;
//!
//! let mut a = SplitMix64::new(7);
//! let mut b = SplitMix64::new(7);
//! assert_eq!(a.next_u64(), b.next_u64());
//! let x = a.next_f64();
//! assert!((0.0..1.0).contains(&x));
//! ```

use std::sync::atomic::{AtomicU64, Ordering};

/// SplitMix64's increment: 2^64 divided by the golden ratio, rounded to odd.
pub const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// SplitMix64's output function (a bijection on `u64`, the finalizer of MurmurHash3 with
/// Stafford's "variant 13" constants). Also usable alone as a counter-based generator:
/// `mix64(seed ^ i.wrapping_mul(GAMMA))` is a random-access stream.
#[inline(always)]
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// 53 random bits as a float in `[0, 1)`.
#[inline(always)]
fn unit(bits: u64) -> f64 {
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// A uniform index in `0..n` from 32 random bits (Lemire's multiply-shift; the bias is at most
/// `n / 2^32`, far below anything a scheduler could notice).
#[inline(always)]
pub fn below(bits32: u32, n: usize) -> usize {
    ((u64::from(bits32) * n as u64) >> 32) as usize
}

/// A SplitMix64 generator for one owner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator whose state starts at `seed` (the reference seeding: the first output is
    /// `mix64(seed + GAMMA)`).
    pub const fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GAMMA);
        mix64(self.state)
    }

    /// A uniform float in `[0, 1)` (53 random bits).
    #[inline]
    pub fn next_f64(&mut self) -> f64 {
        unit(self.next_u64())
    }

    /// True with probability `p` (never when `p <= 0`; one draw when `p > 0`).
    #[inline]
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.next_f64() <= p
    }

    /// Fills `out` with random bytes (eight per draw, little-endian).
    pub fn fill_bytes(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(8) {
            let b = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&b[..chunk.len()]);
        }
    }

    /// `len` random bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        self.fill_bytes(&mut v);
        v
    }

    /// Shuffles `v` in place (Fisher-Yates; the modulo bias is below 2^-40 for any slice that
    /// fits in memory).
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, (self.next_u64() % (i as u64 + 1)) as usize);
        }
    }
}

/// A SplitMix64 generator drawn from through `&self`, lock-free.
#[derive(Debug)]
pub struct AtomicSplitMix64 {
    state: AtomicU64,
}

impl AtomicSplitMix64 {
    /// A generator whose sequence is fixed by `seed`. The seed is mixed first, so that nearby
    /// seeds (a scheduler per pool: 0, 1, 2, ...) start far apart in the sequence.
    pub fn new(seed: u64) -> Self {
        AtomicSplitMix64 { state: AtomicU64::new(mix64(seed ^ GAMMA)) }
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&self) -> u64 {
        let s = self.state.fetch_add(GAMMA, Ordering::Relaxed).wrapping_add(GAMMA);
        mix64(s)
    }

    /// Two successive outputs for the price of one atomic operation (the same two that two
    /// calls of [`AtomicSplitMix64::next_u64`] would give without a draw in between).
    #[inline]
    pub fn next_pair(&self) -> (u64, u64) {
        let s = self.state.fetch_add(GAMMA.wrapping_mul(2), Ordering::Relaxed);
        (mix64(s.wrapping_add(GAMMA)), mix64(s.wrapping_add(GAMMA.wrapping_mul(2))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_reference_outputs() {
        // The first outputs of Vigna's splitmix64.c for seed 1234567.
        let mut r = SplitMix64::new(1234567);
        let want: [u64; 5] = [
            6457827717110365317,
            3203168211198807973,
            9817491932198370423,
            4593380528125082431,
            16408922859458223821,
        ];
        for w in want {
            assert_eq!(r.next_u64(), w);
        }
    }

    #[test]
    fn pairs_match_single_draws_and_seeds_repeat() {
        let a = AtomicSplitMix64::new(7);
        let b = AtomicSplitMix64::new(7);
        let (x, y) = a.next_pair();
        assert_eq!((x, y), (b.next_u64(), b.next_u64()));
        assert_eq!(a.next_u64(), b.next_u64());
        assert_ne!(AtomicSplitMix64::new(8).next_u64(), AtomicSplitMix64::new(7).next_u64());
        assert!((0..1000).all(|i| below(u32::MAX - i, 10) < 10));
        assert_eq!(below(0, 10), 0);
    }

    #[test]
    fn the_atomic_form_is_the_plain_one_from_a_mixed_seed() {
        let a = AtomicSplitMix64::new(42);
        let mut p = SplitMix64::new(mix64(42 ^ GAMMA));
        for _ in 0..10 {
            assert_eq!(a.next_u64(), p.next_u64());
        }
    }

    #[test]
    fn helpers_stay_in_range() {
        let mut r = SplitMix64::new(0);
        assert!((0..1000).all(|_| (0.0..1.0).contains(&r.next_f64())));
        assert!(!r.chance(0.0) && r.chance(1.0));
        let b = r.bytes(13);
        assert_eq!(b.len(), 13);
        let mut v: Vec<u32> = (0..100).collect();
        r.shuffle(&mut v);
        let mut s = v.clone();
        s.sort_unstable();
        assert_eq!(s, (0..100).collect::<Vec<_>>());
        assert_ne!(v, s);
    }
}
