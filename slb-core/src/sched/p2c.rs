//! Power of two choices, least request (Envoy `LEAST_REQUEST`; IPVS `twos`).

use super::random::WeightedSampler;
use super::{PickContext, PickError, Picked, Scheduler, picked};
use crate::backend::BackendSet;
use crate::rng::AtomicSplitMix64;

/// Power of two choices, weight-aware: draw two candidates at random in proportion to their
/// weights, and take the one with the lower `load / weight` (the first candidate on ties).
///
/// This is Envoy's least-request balancer with `choice_count = 2` (the two-choices paradigm of
/// Mitzenmacher) made weight-aware the way IPVS `twos` does it (weighted draws, then the lower
/// load per weight), rather than Envoy's separate EDF path for unequal weights: it keeps O(1)
/// picks at any pool size and still sends about `weight / sum` of flows to each backend when
/// loads are even. Load is [`PickContext::load_of`] (active connections or in-flight requests);
/// weights are effective weights, so slow start applies to the draws and the comparison.
///
/// The random source is a seeded SplitMix64 held in an atomic: `pick(&self)` is lock-free and
/// one atomic operation draws both candidates. The two candidates may be the same backend
/// (Envoy allows it too); unusable backends are never drawn.
#[derive(Debug)]
pub struct LeastRequest {
    set: BackendSet,
    sampler: WeightedSampler,
    rng: AtomicSplitMix64,
}

impl LeastRequest {
    /// A P2C scheduler over `set`, its random sequence fixed by `seed`.
    pub fn new(set: BackendSet, seed: u64) -> Self {
        LeastRequest { sampler: WeightedSampler::new(&set), set, rng: AtomicSplitMix64::new(seed) }
    }
}

impl Scheduler for LeastRequest {
    fn name(&self) -> &'static str {
        "p2c"
    }

    fn backends(&self) -> &BackendSet {
        &self.set
    }

    #[inline]
    fn pick(&self, ctx: &PickContext<'_>) -> Result<Picked<'_>, PickError> {
        if self.sampler.is_empty() {
            return Err(PickError::NoBackend);
        }
        let (a, b) = if self.sampler.slow_start() {
            (
                self.sampler.sample_slow(&self.set, &self.rng, ctx.now),
                self.sampler.sample_slow(&self.set, &self.rng, ctx.now),
            )
        } else {
            let (r1, r2) = self.rng.next_pair();
            (self.sampler.sample_fast(r1), self.sampler.sample_fast(r2))
        };
        if a == b {
            return Ok(picked(&self.set, a));
        }
        let (la, lb) = (ctx.load_of(&self.set, a), ctx.load_of(&self.set, b));
        let wa = self.sampler.weight(&self.set, a, ctx.now);
        let wb = self.sampler.weight(&self.set, b, ctx.now);
        // la / wa <= lb / wb, without division.
        let a_wins = u128::from(la) * u128::from(wb) <= u128::from(lb) * u128::from(wa);
        Ok(picked(&self.set, if a_wins { a } else { b }))
    }
}
