//! Consistent hashing with bounded loads (HAProxy `hash-balance-factor`).

use super::ketama::{Ring, ring_hash};
use super::{PickContext, PickError, Picked, Scheduler, picked};
use crate::backend::BackendSet;
use crate::flow::HashKey;

/// Consistent hashing with bounded loads (Mirrokni, Thorup, Zadimoghaddam), as HAProxy does it
/// for `balance hash ... hash-balance-factor <f>`.
///
/// The ring is [`Ketama`](super::Ketama)'s (nginx points, `crc32(key)` in [`PickContext::hash`]).
/// A request walks the ring from its key's point and takes the first backend that has room:
/// with `L` the total load of the usable backends ([`PickContext::load_of`]), the pool has
/// `ceil((L + 1) * f / 100)` slots, shared out by weight exactly as HAProxy's
/// `chash_server_is_eligible` does (whole slots per weight unit, the remainder by cumulative
/// weight, at least one slot each), and a backend has room while its load is below its slots.
/// So no backend carries more than about `f`% of its fair share, and while loads are even a key
/// stays on its ketama backend. `f` is a percentage of at least 100 (smaller values are raised
/// to 100); 125 (the default for the name `bounded`) allows 25% above average.
///
/// A pick is O(n) (the load total) plus the walk. Cumulative weights follow address order (not
/// configuration order), so nodes configured in different orders agree.
#[derive(Debug)]
pub struct BoundedLoad {
    set: BackendSet,
    key: HashKey,
    ring: Ring,
    factor: u32,
    /// Per set index: (cumulative weight of usable backends before it, its weight).
    weights: Vec<(u64, u64)>,
    total_weight: u64,
}

impl BoundedLoad {
    /// The default balance factor (percent).
    pub const DEFAULT_FACTOR: u32 = 125;

    /// Builds the ring over `set`; `factor` is the balance factor in percent.
    pub fn new(set: BackendSet, factor: u32, key: HashKey) -> Self {
        let mut weights = vec![(0, 0); set.len()];
        let mut total_weight = 0u64;
        // Cumulative weights in address order, so that every node computes the same slots.
        let mut order: Vec<u32> = set.usable().to_vec();
        order.sort_by_key(|&i| (set.backends()[i as usize].addr, i));
        for &i in &order {
            let w = u64::from(set.backends()[i as usize].weight);
            weights[i as usize] = (total_weight, w);
            total_weight += w;
        }
        BoundedLoad {
            ring: Ring::new(&set),
            set,
            key,
            factor: factor.max(100),
            weights,
            total_weight,
        }
    }

    /// The balance factor in use (percent).
    pub fn factor(&self) -> u32 {
        self.factor
    }

    /// HAProxy's slot count of the backend at `index` when the pool serves `served` requests.
    pub(crate) fn slots(&self, index: usize, served: u64) -> u128 {
        let tot_w = u128::from(self.total_weight.max(1));
        let tot_slots = (u128::from(served) + 1) * u128::from(self.factor);
        let tot_slots = tot_slots.div_ceil(100);
        let (cum, w) = self.weights[index];
        let (cum, w) = (u128::from(cum), u128::from(w));
        let rem = tot_slots % tot_w;
        let slots = w * (tot_slots / tot_w) + (cum + w) * rem / tot_w - cum * rem / tot_w;
        slots.max(1)
    }
}

impl Scheduler for BoundedLoad {
    fn name(&self) -> &'static str {
        "bounded"
    }

    fn backends(&self) -> &BackendSet {
        &self.set
    }

    fn pick(&self, ctx: &PickContext<'_>) -> Result<Picked<'_>, PickError> {
        let n = self.ring.len();
        if n == 0 {
            return Err(PickError::NoBackend);
        }
        let h = ring_hash(ctx, &self.key)?;
        let start = self.ring.find(h);
        let served: u64 =
            self.set.usable().iter().map(|&i| ctx.load_of(&self.set, i as usize)).sum();
        let mut last = u32::MAX;
        for step in 0..n {
            let owner = self.ring.owner((start + step) % n);
            if owner == last {
                continue;
            }
            last = owner;
            let i = owner as usize;
            if u128::from(ctx.load_of(&self.set, i)) < self.slots(i, served) {
                return Ok(picked(&self.set, i));
            }
        }
        // Only reachable with a load source that changed under us: fall back to the key's owner.
        Ok(picked(&self.set, self.ring.owner(start) as usize))
    }
}
