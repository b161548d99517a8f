//! Precomputed smooth weighted round robin for large pools (Tengine `vnswrr`).

use std::sync::atomic::{AtomicU64, Ordering};

use super::{PickContext, PickError, Picked, Scheduler, picked};
use crate::backend::BackendSet;
use crate::rng::mix64;

/// Tengine's virtual-node smooth weighted round robin: nginx's smooth sequence, precomputed.
///
/// The usable backends' weights are divided by their greatest common divisor; one full cycle of
/// nginx's smooth WRR over those weights (length `T`, the sum of the reduced weights) is computed
/// once, and a pick is one atomic increment and one table read: O(1) and lock-free, where
/// [`SmoothWeighted`](super::SmoothWeighted) is O(n) under a lock. Each scheduler starts at a
/// seeded random position in the cycle (as Tengine does), so many balancers built at once do not
/// all send their first flows to the same backend.
///
/// Over every window of `T` consecutive picks each backend is picked exactly its reduced weight
/// times, in the same interleaved order nginx produces (weights {5, 1, 1} give `a a b a c a a`,
/// rotated by the random start).
///
/// Memory is bounded: the cycle holds at most [`VnSmoothWeighted::MAX_CYCLE`] entries (4 bytes
/// each). Weights whose reduced sum is larger are scaled down proportionally first (each positive
/// weight keeps at least 1), so shares are then exact to within about `n / MAX_CYCLE` instead of
/// exactly. Building costs O(T * d) for `d` distinct weights. Slow start does not apply (the
/// sequence is fixed when the scheduler is built); use [`SmoothWeighted`](super::SmoothWeighted)
/// when it must. Nor does position survive a rebuild: each new snapshot starts its own cycle at
/// its seeded position, as Tengine rebuilds its virtual nodes on reload.
#[derive(Debug)]
pub struct VnSmoothWeighted {
    set: BackendSet,
    cycle: Vec<u32>,
    start: u64,
    next: AtomicU64,
}

impl VnSmoothWeighted {
    /// Longest precomputed cycle (entries).
    pub const MAX_CYCLE: usize = 1 << 20;

    /// Builds the cycle for `set`; `seed` chooses the starting position.
    pub fn new(set: BackendSet, seed: u64) -> Self {
        let usable = set.usable();
        let weights: Vec<u64> =
            usable.iter().map(|&i| u64::from(set.backends()[i as usize].weight)).collect();
        let weights = scale_to(reduce_by_gcd(&weights), Self::MAX_CYCLE as u64);
        let cycle: Vec<u32> =
            smooth_cycle(&weights).into_iter().map(|k| usable[k as usize]).collect();
        let start = if cycle.is_empty() { 0 } else { mix64(seed) % cycle.len() as u64 };
        VnSmoothWeighted { set, cycle, start, next: AtomicU64::new(0) }
    }

    /// The precomputed cycle (set indices), from its first position rather than the random start.
    pub fn cycle(&self) -> &[u32] {
        &self.cycle
    }

    /// Where in the cycle the first pick lands.
    pub fn start(&self) -> usize {
        self.start as usize
    }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Divides every weight by the weights' greatest common divisor.
fn reduce_by_gcd(weights: &[u64]) -> Vec<u64> {
    let g = weights.iter().fold(0, |g, &w| gcd(g, w)).max(1);
    weights.iter().map(|w| w / g).collect()
}

/// Scales weights down so that they sum to at most about `cap` (each positive weight stays >= 1).
fn scale_to(weights: Vec<u64>, cap: u64) -> Vec<u64> {
    let total: u128 = weights.iter().map(|&w| u128::from(w)).sum();
    if total <= u128::from(cap) {
        return weights;
    }
    // Leave room for the "at least 1" round-ups.
    let room = u128::from(cap.saturating_sub(weights.len() as u64).max(1));
    let scaled: Vec<u64> = weights
        .iter()
        .map(|&w| if w == 0 { 0 } else { ((u128::from(w) * room / total) as u64).max(1) })
        .collect();
    reduce_by_gcd(&scaled)
}

/// One full cycle of nginx's smooth WRR over `weights` (entries are positions in `weights`).
///
/// nginx picks, at step `k`, the peer maximising `k * w - T * c` (`c`: times picked so far,
/// `T`: total weight), first peer on ties. Peers of equal weight are therefore picked in
/// position order, round by round, so it is enough to track, per distinct weight, the pick count
/// of its current round and the next member: O(d) per step for `d` distinct weights.
fn smooth_cycle(weights: &[u64]) -> Vec<u32> {
    struct Group {
        weight: i128,
        members: Vec<u32>,
        /// Picks of the members not yet picked in the current round.
        count: i128,
        /// Next member to pick (index into `members`).
        at: usize,
    }
    let total: u64 = weights.iter().sum();
    let mut groups: Vec<Group> = Vec::new();
    for (i, &w) in weights.iter().enumerate() {
        if w == 0 {
            continue;
        }
        match groups.iter_mut().find(|g| g.weight == i128::from(w)) {
            Some(g) => g.members.push(i as u32),
            None => groups.push(Group {
                weight: i128::from(w),
                members: vec![i as u32],
                count: 0,
                at: 0,
            }),
        }
    }
    let t = i128::from(total);
    let mut out = Vec::with_capacity(total as usize);
    for k in 1..=i128::from(total) {
        let mut best: Option<(usize, i128, u32)> = None;
        for (gi, g) in groups.iter().enumerate() {
            let value = k * g.weight - t * g.count;
            let member = g.members[g.at];
            let better = match best {
                None => true,
                Some((_, bv, bm)) => value > bv || (value == bv && member < bm),
            };
            if better {
                best = Some((gi, value, member));
            }
        }
        let Some((gi, _, member)) = best else { break };
        out.push(member);
        let g = &mut groups[gi];
        g.at += 1;
        if g.at == g.members.len() {
            g.at = 0;
            g.count += 1;
        }
    }
    out
}

impl Scheduler for VnSmoothWeighted {
    fn name(&self) -> &'static str {
        "vnswrr"
    }

    fn backends(&self) -> &BackendSet {
        &self.set
    }

    #[inline]
    fn pick(&self, _ctx: &PickContext<'_>) -> Result<Picked<'_>, PickError> {
        let n = self.cycle.len() as u64;
        if n == 0 {
            return Err(PickError::NoBackend);
        }
        let k = self.next.fetch_add(1, Ordering::Relaxed).wrapping_add(self.start) % n;
        Ok(picked(&self.set, self.cycle[k as usize] as usize))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// nginx's loop, step by step, as the reference.
    fn nginx(weights: &[u64], steps: usize) -> Vec<u32> {
        let total: i64 = weights.iter().map(|&w| w as i64).sum();
        let mut cur = vec![0i64; weights.len()];
        (0..steps)
            .map(|_| {
                let mut best: Option<usize> = None;
                for (i, &w) in weights.iter().enumerate() {
                    if w == 0 {
                        continue;
                    }
                    cur[i] += w as i64;
                    if best.is_none_or(|b| cur[i] > cur[b]) {
                        best = Some(i);
                    }
                }
                let b = best.unwrap();
                cur[b] -= total;
                b as u32
            })
            .collect()
    }

    #[test]
    fn cycle_equals_nginx_loop() {
        for w in [
            &[5, 1, 1][..],
            &[1, 1, 1, 1],
            &[3, 0, 2, 3, 1, 2],
            &[7, 7, 3, 1, 1, 9, 4],
            &[100, 1],
            &[2, 4, 6],
        ] {
            let r = reduce_by_gcd(w);
            let t: u64 = r.iter().sum();
            assert_eq!(smooth_cycle(&r), nginx(&r, t as usize), "{w:?}");
        }
    }

    #[test]
    fn huge_weights_are_scaled_into_the_cap() {
        let w = scale_to(vec![u64::from(u32::MAX), 1, u64::from(u32::MAX) / 2], 1 << 20);
        let sum: u64 = w.iter().sum();
        assert!(sum <= 1 << 20, "{sum}");
        assert!(w.iter().all(|&x| x >= 1));
        assert!((w[0] as f64 / w[2] as f64 - 2.0).abs() < 0.01, "{w:?}");
    }
}
