//! Smooth weighted round robin, exactly nginx's `ngx_http_upstream_get_peer`.

use std::sync::atomic::Ordering;

use parking_lot::Mutex;

use super::{PickContext, PickError, Picked, Scheduler, picked};
use crate::backend::BackendSet;

/// nginx's smooth weighted round robin.
///
/// Each pick adds every usable backend's (effective) weight to its current weight, takes the
/// backend with the largest current weight (the first one on ties), and subtracts the total weight
/// from the winner. Weights {5, 1, 1} give `a a b a c a a` per cycle of 7, spreading the heavy
/// backend's turns instead of bunching them. O(n) per pick under a mutex, as in nginx; for large
/// pools use the precomputed variant.
///
/// Current weights live in each backend's runtime, so a configuration change does not restart the
/// sequence for backends that stay. During a slow-start window the effective weight ramps up.
#[derive(Debug)]
pub struct SmoothWeighted {
    set: BackendSet,
    lock: Mutex<()>,
}

impl SmoothWeighted {
    /// A smooth WRR over `set`.
    pub fn new(set: BackendSet) -> Self {
        SmoothWeighted { set, lock: Mutex::new(()) }
    }
}

impl Scheduler for SmoothWeighted {
    fn name(&self) -> &'static str {
        "swrr"
    }

    fn backends(&self) -> &BackendSet {
        &self.set
    }

    fn pick(&self, ctx: &PickContext<'_>) -> Result<Picked<'_>, PickError> {
        let usable = self.set.usable();
        let _guard = self.lock.lock();
        let mut total: i64 = 0;
        let mut best: Option<(usize, i64)> = None;
        for &i in usable {
            let i = i as usize;
            let w = i64::from(self.set.effective_weight(i, ctx.now));
            let rt = self.set.runtime(i);
            let cur = rt.swrr_current.load(Ordering::Relaxed) + w;
            rt.swrr_current.store(cur, Ordering::Relaxed);
            total += w;
            if best.is_none_or(|(_, b)| cur > b) {
                best = Some((i, cur));
            }
        }
        let (i, cur) = best.ok_or(PickError::NoBackend)?;
        self.set.runtime(i).swrr_current.store(cur - total, Ordering::Relaxed);
        Ok(picked(&self.set, i))
    }
}
