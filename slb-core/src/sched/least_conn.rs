//! The IPVS connection-counting schedulers: `lc`, `wlc`, `sed`, `nq`.
//!
//! All four scan the usable backends in configuration order (O(n) per pick, as in IPVS) and keep
//! the first backend on ties. Active connections come from [`PickContext::load_of`], inactive
//! ones from [`PickContext::inactive_of`]: by default the runtime counters the session table
//! keeps (IPVS `activeconns`/`inactconns`), otherwise the caller's
//! [`LoadSource`](super::LoadSource) (whose `inactive` defaults to 0, so a request-counting
//! source simply ranks by its load). Weights are effective weights (slow start applies).

use super::{PickContext, PickError, Picked, Scheduler, picked};
use crate::backend::BackendSet;

/// IPVS's connection overhead: an active connection costs 256 inactive ones.
#[inline(always)]
fn overhead(ctx: &PickContext<'_>, set: &BackendSet, i: usize) -> u128 {
    u128::from(ctx.load_of(set, i)) * 256 + u128::from(ctx.inactive_of(set, i))
}

/// The usable backends with their configured weights, in configuration order: a contiguous
/// array, so that a scan touches the backends' counters and little else.
#[derive(Debug)]
struct Members {
    list: Vec<(u32, u32)>,
    slow_start: bool,
}

impl Members {
    fn new(set: &BackendSet) -> Self {
        let list = set.usable().iter().map(|&i| (i, set.backends()[i as usize].weight)).collect();
        Members { list, slow_start: set.options().slow_start.is_some() }
    }

    /// The usable backend with the smallest `cost / weight` (first on ties); `cost` may say
    /// "take this one now" by returning `None`.
    #[inline(always)]
    fn least_by(
        &self,
        set: &BackendSet,
        ctx: &PickContext<'_>,
        weighted: bool,
        mut cost: impl FnMut(usize) -> Option<u128>,
    ) -> Result<usize, PickError> {
        let mut best: Option<(usize, u128, u128)> = None;
        for &(i, w) in &self.list {
            let i = i as usize;
            let Some(c) = cost(i) else { return Ok(i) };
            let w = match (weighted, self.slow_start) {
                (false, _) => 1,
                (true, false) => u128::from(w),
                (true, true) => u128::from(set.effective_weight(i, ctx.now)),
            };
            // c / w < bc / bw  <=>  c * bw < bc * w
            if best.is_none_or(|(_, bc, bw)| c * bw < bc * w) {
                best = Some((i, c, w));
            }
        }
        best.map(|(i, _, _)| i).ok_or(PickError::NoBackend)
    }
}

macro_rules! conn_scheduler {
    ($(#[$doc:meta])* $name:ident, $short:literal, $weighted:expr, |$ctx:ident, $set:ident, $i:ident| $cost:expr) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name {
            set: BackendSet,
            members: Members,
        }

        impl $name {
            /// A scheduler over `set`.
            pub fn new(set: BackendSet) -> Self {
                $name { members: Members::new(&set), set }
            }
        }

        impl Scheduler for $name {
            fn name(&self) -> &'static str {
                $short
            }

            fn backends(&self) -> &BackendSet {
                &self.set
            }

            fn pick(&self, ctx: &PickContext<'_>) -> Result<Picked<'_>, PickError> {
                let $set = &self.set;
                let $ctx = ctx;
                let i = self.members.least_by($set, $ctx, $weighted, |$i| $cost)?;
                Ok(picked(&self.set, i))
            }
        }
    };
}

conn_scheduler!(
    /// Least connections (IPVS `lc`): the smallest `active * 256 + inactive`, weights ignored
    /// (except that weight 0 takes nothing).
    LeastConnections,
    "lc",
    false,
    |ctx, set, i| Some(overhead(ctx, set, i))
);

conn_scheduler!(
    /// Weighted least connections (IPVS `wlc`, its default): the smallest
    /// `(active * 256 + inactive) / weight`.
    WeightedLeastConnections,
    "wlc",
    true,
    |ctx, set, i| Some(overhead(ctx, set, i))
);

conn_scheduler!(
    /// Shortest expected delay (IPVS `sed`): the smallest `(active + 1) / weight`; inactive
    /// connections do not count. Unlike `wlc`, an idle heavy backend beats an idle light one.
    ShortestExpectedDelay,
    "sed",
    true,
    |ctx, set, i| Some(u128::from(ctx.load_of(set, i)) + 1)
);

conn_scheduler!(
    /// Never queue (IPVS `nq`): the first backend with no active connection, else as `sed`.
    NeverQueue,
    "nq",
    true,
    |ctx, set, i| match ctx.load_of(set, i) {
        0 => None,
        a => Some(u128::from(a) + 1),
    }
);
