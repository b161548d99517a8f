//! Round robin (IPVS `rr`; nginx round robin when all weights are equal).

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{PickContext, PickError, Picked, Scheduler, picked};
use crate::backend::BackendSet;

/// Cycles through the usable backends in configuration order, starting at a seeded position.
///
/// Weights only matter as "0 = no new flows". O(1) and lock-free: one atomic increment per pick.
#[derive(Debug)]
pub struct RoundRobin {
    set: BackendSet,
    next: AtomicUsize,
}

impl RoundRobin {
    /// A round robin over `set`; `seed` picks the starting position so that many balancers
    /// started at once do not all hit the first backend first.
    pub fn new(set: BackendSet, seed: u64) -> Self {
        let n = set.usable().len().max(1);
        RoundRobin { next: AtomicUsize::new((seed % n as u64) as usize), set }
    }
}

impl Scheduler for RoundRobin {
    fn name(&self) -> &'static str {
        "rr"
    }

    fn backends(&self) -> &BackendSet {
        &self.set
    }

    fn pick(&self, _ctx: &PickContext<'_>) -> Result<Picked<'_>, PickError> {
        let usable = self.set.usable();
        if usable.is_empty() {
            return Err(PickError::NoBackend);
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % usable.len();
        Ok(picked(&self.set, usable[i] as usize))
    }
}
