//! Schedulers: which backend takes a new flow.
//!
//! A [`Scheduler`] is built from one [`BackendSet`] snapshot and never changes afterwards; a
//! configuration change builds a new one and the [`Balancer`] swaps it in atomically. `pick` is
//! synchronous, lock-free for every scheduler except smooth WRR (nginx holds a lock there too), and
//! returns [`PickError::NoBackend`] when no backend may take the flow: it never panics, including
//! for weight-0 and empty pools. Every scheduler draws only from [`BackendSet::usable`]: down,
//! draining, disabled and weight-0 backends take no new flows, and the set's Envoy-style panic
//! threshold (put down backends back in use) is decided there, once, for all of them.
//!
//! | name | scheduler | matches | pick |
//! |---|---|---|---|
//! | `rr` | [`RoundRobin`] | IPVS rr, nginx round robin with equal weights | O(1) |
//! | `swrr` | [`SmoothWeighted`] | nginx weighted round robin (exact sequence) | O(n), lock |
//! | `vnswrr` | [`VnSmoothWeighted`] | Tengine vnswrr (precomputed nginx sequence) | O(1) |
//! | `lc` | [`LeastConnections`] | IPVS lc | O(n) |
//! | `wlc` | [`WeightedLeastConnections`] | IPVS wlc | O(n) |
//! | `sed` | [`ShortestExpectedDelay`] | IPVS sed | O(n) |
//! | `nq` | [`NeverQueue`] | IPVS nq | O(n) |
//! | `p2c` | [`LeastRequest`] | Envoy least request (P2C), IPVS twos | O(1) |
//! | `random` | [`WeightedRandom`] | nginx/HAProxy/Envoy random, weighted | O(1) |
//! | `sh` | [`SourceHash`] | IPVS sh | O(1) |
//! | `dh` | [`DestinationHash`] | IPVS dh | O(1) |
//! | `mh` | [`Maglev`] | IPVS mh, Envoy Maglev (weighted) | O(1) |
//! | `ketama` | [`Ketama`] | nginx `hash ... consistent` (same points) | O(log) |
//! | `bounded` | [`BoundedLoad`] | HAProxy `hash-balance-factor` | O(n) |
//! | `fo` | [`Failover`] | IPVS fo, plus priority groups | O(1) |
//!
//! Load-aware schedulers read live load through [`PickContext::load_of`] (and the IPVS
//! connection schedulers inactive connections through [`PickContext::inactive_of`]): from the
//! caller's [`LoadSource`] when the context has one, otherwise from the snapshot's
//! [`BackendRuntime`](crate::backend::BackendRuntime) counters, which the session table keeps.
//!
//! Hashing schedulers take their key from [`PickContext::hash`] or [`PickContext::flow`]:
//! Maglev, ketama and bounded load prefer the hash (ketama expects `crc32(key)` there, see
//! [`Ketama::key_hash`]); source and destination hashing prefer the flow's address and fall back
//! to the hash. Randomized schedulers are seeded by [`SchedulerConfig::seed`].

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};

use crate::backend::{
    Backend, BackendId, BackendSet, BackendState, RuntimeRegistry, SetError, SetOptions,
};
use crate::flow::{FlowKey, HashKey};
use crate::time::Instant;

mod addr_hash;
mod bounded;
mod failover;
mod ketama;
mod least_conn;
mod maglev;
mod p2c;
mod random;
mod rr;
mod swrr;
mod vnswrr;

pub use addr_hash::{DestinationHash, SourceHash};
pub use bounded::BoundedLoad;
pub use failover::Failover;
pub use ketama::Ketama;
pub use least_conn::{
    LeastConnections, NeverQueue, ShortestExpectedDelay, WeightedLeastConnections,
};
pub use maglev::Maglev;
pub use p2c::LeastRequest;
pub use random::WeightedRandom;
pub use rr::RoundRobin;
pub use swrr::SmoothWeighted;
pub use vnswrr::VnSmoothWeighted;

/// Live load of backends, supplied by the caller when the runtime counters are not the right
/// measure (e.g. a service with its own in-flight accounting).
pub trait LoadSource {
    /// Current load (connections, requests in flight) of the backend at `index` in the set.
    fn load(&self, index: usize, backend: &Backend) -> u64;

    /// Inactive connections of the backend at `index` (IPVS `inactconns`), which only the IPVS
    /// connection schedulers `lc` and `wlc` weigh (256 inactive = 1 active). Defaults to 0: a
    /// source that counts requests has nothing else to report.
    fn inactive(&self, index: usize, backend: &Backend) -> u64 {
        let _ = (index, backend);
        0
    }
}

/// What a scheduler may look at for one pick.
#[derive(Clone, Copy, Default)]
pub struct PickContext<'a> {
    /// The flow being scheduled, when there is one (L4): source/destination hashing use it.
    pub flow: Option<&'a FlowKey>,
    /// The hash key of the request for the consistent schedulers (Maglev, ketama, bounded load):
    /// a flow hash, a client-IP hash, or the hash of a header, cookie or URI.
    pub hash: Option<u64>,
    /// Now, for slow start.
    pub now: Instant,
    /// Live load; `None` reads the runtime active counters.
    pub load: Option<&'a dyn LoadSource>,
}

impl fmt::Debug for PickContext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PickContext")
            .field("flow", &self.flow)
            .field("hash", &self.hash)
            .field("now", &self.now)
            .field("load", &self.load.map(|_| ".."))
            .finish()
    }
}

impl<'a> PickContext<'a> {
    /// A context with only a hash key.
    pub fn with_hash(hash: u64) -> Self {
        PickContext { hash: Some(hash), ..PickContext::default() }
    }

    /// The load of backend `index` of `set`, from [`PickContext::load`] or the runtime counters.
    #[inline]
    pub fn load_of(&self, set: &BackendSet, index: usize) -> u64 {
        match self.load {
            Some(src) => set.get(index).map_or(u64::MAX, |b| src.load(index, b)),
            None => u64::from(set.runtime(index).active()),
        }
    }

    /// The inactive connections of backend `index` of `set`, from [`LoadSource::inactive`] or the
    /// runtime counters.
    #[inline]
    pub fn inactive_of(&self, set: &BackendSet, index: usize) -> u64 {
        match self.load {
            Some(src) => set.get(index).map_or(0, |b| src.inactive(index, b)),
            None => u64::from(set.runtime(index).inactive()),
        }
    }
}

/// A scheduler's choice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Picked<'a> {
    /// Position in the scheduler's snapshot.
    pub index: usize,
    /// The backend.
    pub backend: &'a Backend,
}

impl Picked<'_> {
    /// The chosen backend's id.
    pub fn id(&self) -> BackendId {
        self.backend.id
    }
}

/// Why no backend was picked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PickError {
    /// No backend may take new flows (all down, draining, disabled or weight 0, or none at all).
    #[error("no usable backend")]
    NoBackend,
    /// A hashing scheduler was given no hash key or flow.
    #[error("the scheduler needs a hash key or a flow")]
    MissingKey,
}

/// Picks a backend for each new flow. Object-safe; built from one snapshot.
pub trait Scheduler: Send + Sync + fmt::Debug {
    /// Short name, as in [`SchedulerKind`]'s `FromStr` (`"rr"`, `"mh"`, ...).
    fn name(&self) -> &'static str;
    /// The snapshot this scheduler was built from.
    fn backends(&self) -> &BackendSet;
    /// Chooses a backend for a new flow.
    fn pick(&self, ctx: &PickContext<'_>) -> Result<Picked<'_>, PickError>;
}

/// Helper for implementations: the pick of `index` in `set`.
#[inline]
pub(crate) fn picked(set: &BackendSet, index: usize) -> Picked<'_> {
    Picked { index, backend: &set.backends()[index] }
}

/// The built-in schedulers, by configuration name.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum SchedulerKind {
    /// `rr`: round robin over usable backends, weights only as on/off.
    RoundRobin,
    /// `swrr`: nginx smooth weighted round robin.
    SmoothWeighted,
    /// `vnswrr`: Tengine's precomputed smooth weighted round robin, O(1) per pick.
    VnSmoothWeighted,
    /// `lc`: IPVS least connections.
    LeastConnections,
    /// `wlc`: IPVS weighted least connections.
    WeightedLeastConnections,
    /// `sed`: IPVS shortest expected delay.
    ShortestExpectedDelay,
    /// `nq`: IPVS never queue.
    NeverQueue,
    /// `p2c`: Envoy least request, power of two choices, weight-aware.
    LeastRequest,
    /// `random`: weighted random.
    WeightedRandom,
    /// `sh`: IPVS source hashing.
    SourceHash,
    /// `dh`: IPVS destination hashing.
    DestinationHash,
    /// `mh`: Maglev consistent hashing with a prime table size (default 65537).
    Maglev {
        /// Lookup table size; must be prime.
        table_size: u32,
    },
    /// `ketama`: nginx-compatible ketama consistent hashing.
    Ketama,
    /// `bounded`: consistent hashing with bounded loads (HAProxy `hash-balance-factor`).
    BoundedLoad {
        /// Balance factor in percent (>= 100; default 125).
        balance_factor: u32,
    },
    /// `fo`: failover to the first available backend by priority.
    Failover,
}

impl SchedulerKind {
    /// The configuration name.
    pub fn name(&self) -> &'static str {
        match self {
            SchedulerKind::RoundRobin => "rr",
            SchedulerKind::SmoothWeighted => "swrr",
            SchedulerKind::VnSmoothWeighted => "vnswrr",
            SchedulerKind::LeastConnections => "lc",
            SchedulerKind::WeightedLeastConnections => "wlc",
            SchedulerKind::ShortestExpectedDelay => "sed",
            SchedulerKind::NeverQueue => "nq",
            SchedulerKind::LeastRequest => "p2c",
            SchedulerKind::WeightedRandom => "random",
            SchedulerKind::SourceHash => "sh",
            SchedulerKind::DestinationHash => "dh",
            SchedulerKind::Maglev { .. } => "mh",
            SchedulerKind::Ketama => "ketama",
            SchedulerKind::BoundedLoad { .. } => "bounded",
            SchedulerKind::Failover => "fo",
        }
    }

    /// Every scheduler, with default parameters, in the order of the module table.
    pub const ALL: [SchedulerKind; 15] = [
        SchedulerKind::RoundRobin,
        SchedulerKind::SmoothWeighted,
        SchedulerKind::VnSmoothWeighted,
        SchedulerKind::LeastConnections,
        SchedulerKind::WeightedLeastConnections,
        SchedulerKind::ShortestExpectedDelay,
        SchedulerKind::NeverQueue,
        SchedulerKind::LeastRequest,
        SchedulerKind::WeightedRandom,
        SchedulerKind::SourceHash,
        SchedulerKind::DestinationHash,
        SchedulerKind::Maglev { table_size: Maglev::DEFAULT_TABLE_SIZE },
        SchedulerKind::Ketama,
        SchedulerKind::BoundedLoad { balance_factor: BoundedLoad::DEFAULT_FACTOR },
        SchedulerKind::Failover,
    ];

    /// True for schedulers that need [`PickContext::hash`] or [`PickContext::flow`].
    pub fn needs_key(&self) -> bool {
        matches!(
            self,
            SchedulerKind::SourceHash
                | SchedulerKind::DestinationHash
                | SchedulerKind::Maglev { .. }
                | SchedulerKind::Ketama
                | SchedulerKind::BoundedLoad { .. }
        )
    }
}

/// An unknown scheduler name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown scheduler {0:?} (known: rr, swrr, vnswrr, lc, wlc, sed, nq, p2c, random, sh, dh, mh, \
     ketama, bounded, fo)"
)]
pub struct UnknownScheduler(pub String);

impl FromStr for SchedulerKind {
    type Err = UnknownScheduler;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "rr" | "round_robin" => SchedulerKind::RoundRobin,
            "swrr" | "wrr" | "weighted_round_robin" => SchedulerKind::SmoothWeighted,
            "vnswrr" => SchedulerKind::VnSmoothWeighted,
            "lc" | "least_conn" | "least_connections" => SchedulerKind::LeastConnections,
            "wlc" | "weighted_least_connections" => SchedulerKind::WeightedLeastConnections,
            "sed" | "shortest_expected_delay" => SchedulerKind::ShortestExpectedDelay,
            "nq" | "never_queue" => SchedulerKind::NeverQueue,
            "p2c" | "least_request" | "twos" => SchedulerKind::LeastRequest,
            "random" | "weighted_random" => SchedulerKind::WeightedRandom,
            "sh" | "source_hash" => SchedulerKind::SourceHash,
            "dh" | "destination_hash" => SchedulerKind::DestinationHash,
            "mh" | "maglev" => SchedulerKind::Maglev { table_size: Maglev::DEFAULT_TABLE_SIZE },
            "ketama" | "chash" | "consistent_hash" => SchedulerKind::Ketama,
            "bounded" | "bounded_load" | "chash_bounded" => {
                SchedulerKind::BoundedLoad { balance_factor: BoundedLoad::DEFAULT_FACTOR }
            }
            "fo" | "failover" => SchedulerKind::Failover,
            _ => return Err(UnknownScheduler(s.to_owned())),
        })
    }
}

/// Everything needed to build a scheduler besides the backends.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SchedulerConfig {
    /// Which scheduler.
    pub kind: SchedulerKind,
    /// Seed for the randomized schedulers (random start, random choices). Tests pin it.
    pub seed: u64,
    /// Cluster hash key for hashing schedulers (must be equal on every node).
    pub hash_key: HashKey,
}

impl SchedulerConfig {
    /// A configuration with seed 0 and the default hash key.
    pub fn new(kind: SchedulerKind) -> Self {
        SchedulerConfig { kind, seed: 0, hash_key: HashKey::default() }
    }

    /// Builds the scheduler for `set`.
    pub fn build(&self, set: BackendSet) -> Box<dyn Scheduler> {
        match self.kind {
            SchedulerKind::RoundRobin => Box::new(RoundRobin::new(set, self.seed)),
            SchedulerKind::SmoothWeighted => Box::new(SmoothWeighted::new(set)),
            SchedulerKind::VnSmoothWeighted => Box::new(VnSmoothWeighted::new(set, self.seed)),
            SchedulerKind::LeastConnections => Box::new(LeastConnections::new(set)),
            SchedulerKind::WeightedLeastConnections => Box::new(WeightedLeastConnections::new(set)),
            SchedulerKind::ShortestExpectedDelay => Box::new(ShortestExpectedDelay::new(set)),
            SchedulerKind::NeverQueue => Box::new(NeverQueue::new(set)),
            SchedulerKind::LeastRequest => Box::new(LeastRequest::new(set, self.seed)),
            SchedulerKind::WeightedRandom => Box::new(WeightedRandom::new(set, self.seed)),
            SchedulerKind::SourceHash => Box::new(SourceHash::new(set, self.hash_key)),
            SchedulerKind::DestinationHash => Box::new(DestinationHash::new(set, self.hash_key)),
            SchedulerKind::Maglev { table_size } => {
                Box::new(Maglev::new(set, table_size, self.hash_key))
            }
            SchedulerKind::Ketama => Box::new(Ketama::new(set, self.hash_key)),
            SchedulerKind::BoundedLoad { balance_factor } => {
                Box::new(BoundedLoad::new(set, balance_factor, self.hash_key))
            }
            SchedulerKind::Failover => Box::new(Failover::new(set)),
        }
    }
}

/// A pool's live scheduler, swapped atomically when its backends change.
///
/// Readers call [`Balancer::scheduler`] (a lock-free load) and pick from it; writers call
/// [`Balancer::update`], which builds the next snapshot and scheduler off to the side. Runtime state
/// of backends that remain (connection counts, smooth-WRR weights, slow-start clocks) carries over;
/// a backend that is new or comes back up starts its slow-start window at the update's `now`.
pub struct Balancer {
    config: SchedulerConfig,
    options: SetOptions,
    registry: Arc<RuntimeRegistry>,
    current: ArcSwap<Box<dyn Scheduler>>,
}

impl fmt::Debug for Balancer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Balancer")
            .field("config", &self.config)
            .field("backends", &self.current.load().backends().len())
            .finish()
    }
}

impl Balancer {
    /// A balancer with its own runtime registry.
    pub fn new(
        config: SchedulerConfig,
        options: SetOptions,
        backends: Vec<Backend>,
    ) -> Result<Self, SetError> {
        Balancer::with_registry(config, options, backends, Arc::new(RuntimeRegistry::new()))
    }

    /// A balancer sharing `registry` (e.g. with a session table that keeps connection counts).
    pub fn with_registry(
        config: SchedulerConfig,
        options: SetOptions,
        backends: Vec<Backend>,
        registry: Arc<RuntimeRegistry>,
    ) -> Result<Self, SetError> {
        let set = BackendSet::new(backends, &registry, options)?;
        Ok(Balancer {
            config,
            options,
            registry,
            current: ArcSwap::from_pointee(config.build(set)),
        })
    }

    /// The current scheduler (a cheap, lock-free load; hold it only for one pick).
    pub fn scheduler(&self) -> Guard<Arc<Box<dyn Scheduler>>> {
        self.current.load()
    }

    /// The current snapshot.
    pub fn backends(&self) -> BackendSet {
        self.current.load().backends().clone()
    }

    /// The runtime registry.
    pub fn registry(&self) -> &Arc<RuntimeRegistry> {
        &self.registry
    }

    /// The scheduler configuration.
    pub fn config(&self) -> SchedulerConfig {
        self.config
    }

    /// Replaces the backends, atomically for readers.
    pub fn update(&self, backends: Vec<Backend>, now: Instant) -> Result<(), SetError> {
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
        let ids: std::collections::HashSet<BackendId> =
            set.backends().iter().map(|b| b.id).collect();
        self.current.store(Arc::new(self.config.build(set)));
        self.registry.retain(|id| ids.contains(&id));
        Ok(())
    }

    /// Switches to another scheduler over the same backends (runtime state kept).
    pub fn set_scheduler(&mut self, config: SchedulerConfig) {
        self.config = config;
        let set = self.current.load().backends().clone();
        self.current.store(Arc::new(config.build(set)));
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod kinds_tests;
