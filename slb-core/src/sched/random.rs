//! Weighted random choice in O(1) (Vose's alias method), and the sampler P2C shares.

use super::{PickContext, PickError, Picked, Scheduler, picked};
use crate::backend::BackendSet;
use crate::rng::{AtomicSplitMix64, below};
use crate::time::Instant;

/// One column of an alias table: keep `own` when the coin is below `keep`, else take `alias`.
#[derive(Clone, Copy, Debug)]
struct Column {
    own: u32,
    alias: u32,
    /// Probability of keeping `own`, in units of 2^-32.
    keep: u32,
}

/// Vose's alias table over weighted items: a sample costs one random number and one read.
///
/// Built with integer arithmetic, so the probabilities are exact up to the 2^-32 rounding of each
/// column's threshold. A column that keeps its own item with certainty has `alias == own`.
#[derive(Clone, Debug, Default)]
pub(crate) struct AliasTable {
    columns: Vec<Column>,
}

impl AliasTable {
    /// A table over `(item, weight)` pairs; zero weights are left out.
    pub(crate) fn new(items: impl IntoIterator<Item = (u32, u64)>) -> Self {
        let items: Vec<(u32, u64)> = items.into_iter().filter(|&(_, w)| w > 0).collect();
        let n = items.len() as u128;
        if n == 0 {
            return AliasTable::default();
        }
        let total: u128 = items.iter().map(|&(_, w)| u128::from(w)).sum();
        // Column capacity is `total`; item i brings `w_i * n` of mass.
        let mut mass: Vec<u128> = items.iter().map(|&(_, w)| u128::from(w) * n).collect();
        let mut columns: Vec<Column> =
            items.iter().map(|&(it, _)| Column { own: it, alias: it, keep: u32::MAX }).collect();
        let (mut small, mut large): (Vec<usize>, Vec<usize>) =
            (0..items.len()).partition(|&i| mass[i] < total);
        while let (Some(s), Some(&l)) = (small.pop(), large.last()) {
            columns[s].alias = items[l].0;
            columns[s].keep = ((mass[s] << 32) / total) as u32;
            mass[l] -= total - mass[s];
            if mass[l] < total {
                large.pop();
                small.push(l);
            }
        }
        // Whatever is left is full (exactly, or up to rounding): it keeps its own item.
        AliasTable { columns }
    }

    /// True when the table holds no item.
    pub(crate) fn is_empty(&self) -> bool {
        self.columns.is_empty()
    }

    /// The item for 64 random bits.
    #[inline(always)]
    pub(crate) fn sample(&self, r: u64) -> u32 {
        let c = self.columns[below((r >> 32) as u32, self.columns.len())];
        if (r as u32) < c.keep { c.own } else { c.alias }
    }
}

/// Samples usable backends in proportion to their weights, honouring slow start.
///
/// Without slow start a sample is one alias-table read. During a slow-start window a sampled
/// backend is kept with probability `effective / configured weight` and otherwise redrawn
/// (rejection sampling), which makes the samples proportional to effective weights; after 32
/// rejections the last draw is kept so that a pick stays bounded.
#[derive(Debug)]
pub(crate) struct WeightedSampler {
    table: AliasTable,
    /// Configured weight per set index (0 for unusable backends): a small contiguous array
    /// where the backends' own records are large and scattered.
    weights: Vec<u32>,
    slow_start: bool,
}

impl WeightedSampler {
    pub(crate) fn new(set: &BackendSet) -> Self {
        let table = AliasTable::new(
            set.usable().iter().map(|&i| (i, u64::from(set.backends()[i as usize].weight))),
        );
        let mut weights = vec![0; set.len()];
        for &i in set.usable() {
            weights[i as usize] = set.backends()[i as usize].weight;
        }
        WeightedSampler { table, weights, slow_start: set.options().slow_start.is_some() }
    }

    /// The weight of the backend at `index` at `now` (effective weight during slow start).
    #[inline(always)]
    pub(crate) fn weight(&self, set: &BackendSet, index: usize, now: Instant) -> u32 {
        if self.slow_start { set.effective_weight(index, now) } else { self.weights[index] }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// True when samples must go through [`WeightedSampler::sample_slow`].
    #[inline(always)]
    pub(crate) fn slow_start(&self) -> bool {
        self.slow_start
    }

    /// A sample from 64 random bits, ignoring slow start.
    #[inline(always)]
    pub(crate) fn sample_fast(&self, r: u64) -> usize {
        self.table.sample(r) as usize
    }

    /// A sample proportional to effective weights at `now`.
    pub(crate) fn sample_slow(
        &self,
        set: &BackendSet,
        rng: &AtomicSplitMix64,
        now: Instant,
    ) -> usize {
        let mut i = 0;
        for _ in 0..32 {
            let (r, coin) = rng.next_pair();
            i = self.table.sample(r) as usize;
            let w = u64::from(self.weights[i]);
            let e = u64::from(set.effective_weight(i, now));
            if e >= w || u128::from(coin) * u128::from(w) < u128::from(e) << 64 {
                return i;
            }
        }
        i
    }

    #[inline]
    pub(crate) fn sample(&self, set: &BackendSet, rng: &AtomicSplitMix64, now: Instant) -> usize {
        if self.slow_start {
            self.sample_slow(set, rng, now)
        } else {
            self.sample_fast(rng.next_u64())
        }
    }
}

/// Weighted random: each pick is an independent draw in proportion to weight (nginx `random`
/// without `two`; HAProxy `random(1)`; Envoy `RANDOM` with weights).
///
/// O(1) and lock-free: one atomic step of a seeded generator and one alias-table read.
#[derive(Debug)]
pub struct WeightedRandom {
    set: BackendSet,
    sampler: WeightedSampler,
    rng: AtomicSplitMix64,
}

impl WeightedRandom {
    /// A weighted random scheduler over `set`, its random sequence fixed by `seed`.
    pub fn new(set: BackendSet, seed: u64) -> Self {
        WeightedRandom {
            sampler: WeightedSampler::new(&set),
            set,
            rng: AtomicSplitMix64::new(seed),
        }
    }
}

impl Scheduler for WeightedRandom {
    fn name(&self) -> &'static str {
        "random"
    }

    fn backends(&self) -> &BackendSet {
        &self.set
    }

    #[inline]
    fn pick(&self, ctx: &PickContext<'_>) -> Result<Picked<'_>, PickError> {
        if self.sampler.is_empty() {
            return Err(PickError::NoBackend);
        }
        Ok(picked(&self.set, self.sampler.sample(&self.set, &self.rng, ctx.now)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alias_probabilities_are_exact() {
        let weights = [(10u32, 5u64), (11, 0), (12, 1), (13, 3), (14, 1)];
        let t = AliasTable::new(weights);
        assert_eq!(t.columns.len(), 4);
        // Integrate each column's thresholds: the mass per item must equal weight / total.
        let mut mass = std::collections::HashMap::<u32, f64>::new();
        for c in &t.columns {
            let k = f64::from(c.keep) / 4_294_967_296.0;
            *mass.entry(c.own).or_default() += k;
            *mass.entry(c.alias).or_default() += 1.0 - k;
        }
        for (item, w) in weights {
            let got = mass.get(&item).copied().unwrap_or(0.0) / 4.0;
            assert!((got - w as f64 / 10.0).abs() < 1e-8, "item {item}: {got}");
        }
    }
}
