//! [`FaultInjector`]: seeded loss, duplication and corruption on any link (smoltcp's
//! `FaultInjector` idea, batch-shaped). The kernel on this machine has no netem, so lossy-link
//! tests inject faults here.

use std::io;

use slb_core::rng::SplitMix64;

use super::{Link, LinkStats};
use crate::frame::FrameBuf;

/// Fault rates, each a probability in 0..=1, applied independently per frame and direction.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct FaultConfig {
    /// Drop the frame.
    pub drop: f64,
    /// Send (or deliver) it twice.
    pub duplicate: f64,
    /// Flip one random bit of it.
    pub corrupt: f64,
    /// Apply to received frames (else only to sent ones).
    pub on_receive: bool,
}

/// Wraps a link and injects faults, from a seeded generator ([`SplitMix64`]) so that a failing
/// run replays.
#[derive(Debug)]
pub struct FaultInjector<L> {
    inner: L,
    cfg: FaultConfig,
    rng: SplitMix64,
    /// Frames dropped, duplicated, corrupted.
    counts: (u64, u64, u64),
    scratch: Vec<FrameBuf>,
}

impl<L: Link> FaultInjector<L> {
    /// Wraps `inner`.
    pub fn new(inner: L, cfg: FaultConfig, seed: u64) -> Self {
        FaultInjector {
            inner,
            cfg,
            rng: SplitMix64::new(seed),
            counts: (0, 0, 0),
            scratch: Vec::new(),
        }
    }

    /// The wrapped link.
    pub fn inner(&self) -> &L {
        &self.inner
    }

    /// Frames dropped, duplicated and corrupted so far.
    pub fn faults(&self) -> (u64, u64, u64) {
        self.counts
    }

    /// Applies the faults to `frames`, returning what goes on.
    fn mangle(&mut self, frames: &[FrameBuf]) -> Vec<FrameBuf> {
        let mut out = Vec::with_capacity(frames.len());
        for f in frames {
            if self.rng.chance(self.cfg.drop) {
                self.counts.0 += 1;
                continue;
            }
            let mut f = f.clone();
            if self.rng.chance(self.cfg.corrupt) && !f.is_empty() {
                let bit = (self.rng.next_u64() % (f.len() as u64 * 8)) as usize;
                f.as_mut_slice()[bit / 8] ^= 1 << (bit % 8);
                self.counts.2 += 1;
            }
            if self.rng.chance(self.cfg.duplicate) {
                self.counts.1 += 1;
                out.push(f.clone());
            }
            out.push(f);
        }
        out
    }
}

impl<L: Link> Link for FaultInjector<L> {
    fn recv_batch(&mut self, bufs: &mut [FrameBuf]) -> io::Result<usize> {
        if !self.cfg.on_receive {
            return self.inner.recv_batch(bufs);
        }
        // Deliver what earlier duplication left over first.
        let mut n = 0;
        while n < bufs.len() && !self.scratch.is_empty() {
            bufs[n] = self.scratch.remove(0);
            n += 1;
        }
        let got = self.inner.recv_batch(&mut bufs[n..])?;
        let mangled = self.mangle(&bufs[n..n + got]);
        for f in mangled {
            if n < bufs.len() {
                bufs[n] = f;
                n += 1;
            } else {
                self.scratch.push(f);
            }
        }
        Ok(n)
    }

    fn send_batch(&mut self, frames: &[FrameBuf]) -> io::Result<usize> {
        let out = self.mangle(frames);
        self.inner.send_batch(&out)?;
        Ok(frames.len())
    }

    fn stats(&self) -> LinkStats {
        self.inner.stats()
    }

    #[cfg(unix)]
    fn poll_fd(&self) -> Option<std::os::fd::RawFd> {
        self.inner.poll_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::MemoryLink;

    #[test]
    fn faults_are_seeded_and_roughly_at_rate() {
        let run = |seed| {
            let (a, mut b) = MemoryLink::pair(10_000);
            let cfg = FaultConfig { drop: 0.1, duplicate: 0.05, ..FaultConfig::default() };
            let mut f = FaultInjector::new(a, cfg, seed);
            let frames: Vec<FrameBuf> =
                (0..1000u32).map(|i| FrameBuf::from_slice(&i.to_be_bytes().repeat(4))).collect();
            f.send_batch(&frames).unwrap();
            let mut bufs = vec![FrameBuf::default(); 2000];
            let n = b.recv_batch(&mut bufs).unwrap();
            (n, f.faults())
        };
        let (n, (dropped, dup, _)) = run(42);
        assert_eq!(run(42).0, n, "same seed, same faults");
        assert_eq!(n as u64, 1000 - dropped + dup);
        assert!((50..=150).contains(&dropped), "{dropped}");
        assert!((20..=80).contains(&dup), "{dup}");
    }
}
