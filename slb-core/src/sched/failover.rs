//! Failover (IPVS `fo`, with priority groups).

use super::{PickContext, PickError, Picked, Scheduler, picked};
use crate::backend::BackendSet;

/// Failover: every new flow goes to one backend, the first available by priority.
///
/// Among the usable backends, the group with the lowest [`priority`](crate::backend::Backend)
/// value wins; within it, the highest weight (as IPVS `fo`, which has no priorities and picks the
/// highest weight), the first in configuration order on ties. So with equal weights the
/// configuration order is the failover order, and an operator can prefer a backend by raising
/// its weight. The choice is fixed when the scheduler is built (a pick is O(1)); when that
/// backend goes down, the new snapshot picks the next one.
#[derive(Debug)]
pub struct Failover {
    set: BackendSet,
    chosen: Option<usize>,
}

impl Failover {
    /// A failover scheduler over `set`.
    pub fn new(set: BackendSet) -> Self {
        let mut chosen: Option<(usize, u32, u32)> = None;
        for &i in set.usable() {
            let b = &set.backends()[i as usize];
            let better =
                chosen.is_none_or(|(_, p, w)| b.priority < p || (b.priority == p && b.weight > w));
            if better {
                chosen = Some((i as usize, b.priority, b.weight));
            }
        }
        Failover { chosen: chosen.map(|c| c.0), set }
    }
}

impl Scheduler for Failover {
    fn name(&self) -> &'static str {
        "fo"
    }

    fn backends(&self) -> &BackendSet {
        &self.set
    }

    #[inline]
    fn pick(&self, _ctx: &PickContext<'_>) -> Result<Picked<'_>, PickError> {
        self.chosen.map(|i| picked(&self.set, i)).ok_or(PickError::NoBackend)
    }
}
