//! The pool's scheduler, swapped atomically when backends change; pluggable.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;
use slb_core::backend::{
    Backend, BackendId, BackendSet, BackendState, RuntimeRegistry, SetError, SetOptions,
};
use slb_core::sched::{Scheduler, SchedulerConfig};
use slb_core::time::Instant;

/// Builds a scheduler for a backend snapshot: slb-core's built-ins through [`SchedulerConfig`],
/// or an application's own.
///
/// ```
/// use slb_core::backend::BackendSet;
/// use slb_core::sched::{RoundRobin, Scheduler};
/// use slb_l7::pool::SchedulerFactory;
///
/// /// Round robin that always starts at the first backend.
/// #[derive(Debug)]
/// struct FromTheTop;
/// impl SchedulerFactory for FromTheTop {
///     fn build(&self, set: BackendSet) -> Box<dyn Scheduler> {
///         Box::new(RoundRobin::new(set, 0))
///     }
/// }
/// ```
pub trait SchedulerFactory: Send + Sync + fmt::Debug {
    /// A scheduler over `set`.
    fn build(&self, set: BackendSet) -> Box<dyn Scheduler>;
}

impl SchedulerFactory for SchedulerConfig {
    fn build(&self, set: BackendSet) -> Box<dyn Scheduler> {
        SchedulerConfig::build(self, set)
    }
}

/// Like slb-core's `Balancer`, but with a pluggable [`SchedulerFactory`].
pub(crate) struct Selector {
    factory: Arc<dyn SchedulerFactory>,
    options: SetOptions,
    registry: Arc<RuntimeRegistry>,
    current: ArcSwap<Box<dyn Scheduler>>,
}

impl fmt::Debug for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Selector").field("factory", &self.factory).finish()
    }
}

impl Selector {
    pub(crate) fn new(factory: Arc<dyn SchedulerFactory>, options: SetOptions) -> Self {
        let registry = Arc::new(RuntimeRegistry::new());
        let set = BackendSet::empty();
        Selector { current: ArcSwap::from_pointee(factory.build(set)), factory, options, registry }
    }

    /// A selector taking over from `prev` (a reload changed the pool's settings): it shares the
    /// runtime registry (in-flight counts, smooth-WRR weights, slow-start clocks) and starts from
    /// `prev`'s backends, so that the next update sees which backends were already up.
    pub(crate) fn successor(
        factory: Arc<dyn SchedulerFactory>,
        options: SetOptions,
        prev: &Selector,
    ) -> Self {
        let registry = prev.registry.clone();
        let backends = prev.current.load().backends().backends().to_vec();
        let set =
            BackendSet::new(backends, &registry, options).unwrap_or_else(|_| BackendSet::empty());
        Selector { current: ArcSwap::from_pointee(factory.build(set)), factory, options, registry }
    }

    pub(crate) fn load(&self) -> arc_swap::Guard<Arc<Box<dyn Scheduler>>> {
        self.current.load()
    }

    /// Replaces the backends; runtime state of remaining backends carries over, and a backend
    /// that becomes usable starts its slow-start window at `now`.
    pub(crate) fn update(&self, backends: Vec<Backend>, now: Instant) -> Result<(), SetError> {
        let old = self.current.load_full();
        let old_set = old.backends();
        let set = BackendSet::new(backends, &self.registry, self.options)?;
        if self.options.slow_start.is_some() {
            for (i, b) in set.backends().iter().enumerate() {
                let was_up = old_set
                    .index_of(b.id)
                    .and_then(|j| old_set.get(j))
                    .is_some_and(|o| o.state == BackendState::Up && o.weight > 0);
                if !was_up && b.state == BackendState::Up && b.weight > 0 {
                    set.runtime(i).start_slow_start(now);
                }
            }
        }
        let ids: HashSet<BackendId> = set.backends().iter().map(|b| b.id).collect();
        self.current.store(Arc::new(self.factory.build(set)));
        self.registry.retain(|id| ids.contains(&id));
        Ok(())
    }
}
