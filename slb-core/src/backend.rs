//! Backends, immutable backend-set snapshots, and the runtime state that outlives snapshots.
//!
//! Configuration changes (add, remove, re-weight, drain, health flips) build a new [`BackendSet`]
//! and a new scheduler from it; readers keep using the old snapshot until they load the new one,
//! so nobody locks. What must *not* reset on such a swap, active connection counts, smooth-WRR
//! current weights and slow-start clocks, lives in a [`BackendRuntime`] per [`BackendId`], owned by
//! a [`RuntimeRegistry`] and shared by every snapshot that contains that backend.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::RwLock;

use crate::time::Instant;

/// A backend's identity: stable across snapshots, unique within a registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendId(pub u32);

impl fmt::Display for BackendId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Whether a backend takes new flows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum BackendState {
    /// Healthy and enabled: takes new flows.
    #[default]
    Up,
    /// Failed its health checks or was ejected: no new flows (except in panic mode).
    Down,
    /// Being removed gracefully: keeps existing flows, takes no new ones.
    Draining,
    /// Switched off by an operator: no new flows, never, not even in panic mode.
    Disabled,
}

/// A backend (real server, upstream peer).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend {
    /// Stable identity.
    pub id: BackendId,
    /// Where to send traffic.
    pub addr: SocketAddr,
    /// Relative share of new flows; 0 means "no new flows".
    pub weight: u32,
    /// Administrative / health state.
    pub state: BackendState,
    /// Failover priority: the failover scheduler uses the lowest value that has a usable backend.
    pub priority: u32,
    /// Free-form labels (zone, version, ...), not interpreted by slb.
    pub metadata: BTreeMap<String, String>,
}

impl Backend {
    /// An up backend with weight 1 and priority 0.
    pub fn new(id: BackendId, addr: SocketAddr) -> Self {
        Backend {
            id,
            addr,
            weight: 1,
            state: BackendState::Up,
            priority: 0,
            metadata: BTreeMap::new(),
        }
    }

    /// Sets the weight.
    pub fn with_weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// Sets the state.
    pub fn with_state(mut self, state: BackendState) -> Self {
        self.state = state;
        self
    }

    /// Sets the failover priority.
    pub fn with_priority(mut self, priority: u32) -> Self {
        self.priority = priority;
        self
    }
}

const NEVER: u64 = u64::MAX;

/// Per-backend state that survives snapshot swaps.
///
/// All fields are atomics: the data plane updates them without locks.
#[derive(Debug)]
pub struct BackendRuntime {
    active: AtomicU32,
    inactive: AtomicU32,
    /// Smooth-WRR current weight (nginx `current_weight`).
    pub(crate) swrr_current: AtomicI64,
    /// When the backend last became usable, for slow start (nanos, or `NEVER`).
    slow_start_since: AtomicU64,
}

impl Default for BackendRuntime {
    fn default() -> Self {
        BackendRuntime {
            active: AtomicU32::new(0),
            inactive: AtomicU32::new(0),
            swrr_current: AtomicI64::new(0),
            slow_start_since: AtomicU64::new(NEVER),
        }
    }
}

impl BackendRuntime {
    /// Active connections / in-flight requests (IPVS `activeconns`).
    pub fn active(&self) -> u32 {
        self.active.load(Ordering::Relaxed)
    }

    /// Inactive connections (IPVS `inactconns`: TCP not established, UDP).
    pub fn inactive(&self) -> u32 {
        self.inactive.load(Ordering::Relaxed)
    }

    /// One more active connection or request.
    pub fn inc_active(&self) {
        self.active.fetch_add(1, Ordering::Relaxed);
    }

    /// One fewer active connection or request (saturating at 0).
    pub fn dec_active(&self) {
        let _ =
            self.active.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1));
    }

    /// One more inactive connection.
    pub fn inc_inactive(&self) {
        self.inactive.fetch_add(1, Ordering::Relaxed);
    }

    /// One fewer inactive connection (saturating at 0).
    pub fn dec_inactive(&self) {
        let _ =
            self.inactive.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1));
    }

    /// Starts (or restarts) the slow-start window at `now`.
    pub fn start_slow_start(&self, now: Instant) {
        self.slow_start_since.store(now.as_nanos(), Ordering::Relaxed);
    }

    /// When the current slow-start window began, if one did.
    pub fn slow_start_since(&self) -> Option<Instant> {
        match self.slow_start_since.load(Ordering::Relaxed) {
            NEVER => None,
            n => Some(Instant::from_nanos(n)),
        }
    }
}

/// Owner of every backend's [`BackendRuntime`], keyed by [`BackendId`].
///
/// One registry is shared by all snapshots (and by the session table, which keeps the connection
/// counters in it), so a backend that stays in the configuration keeps its counters.
#[derive(Debug, Default)]
pub struct RuntimeRegistry {
    map: RwLock<HashMap<BackendId, Arc<BackendRuntime>>>,
}

impl RuntimeRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        RuntimeRegistry::default()
    }

    /// The runtime of `id`, created on first use.
    pub fn get_or_create(&self, id: BackendId) -> Arc<BackendRuntime> {
        if let Some(rt) = self.map.read().get(&id) {
            return Arc::clone(rt);
        }
        Arc::clone(self.map.write().entry(id).or_default())
    }

    /// The runtime of `id`, if it exists.
    pub fn get(&self, id: BackendId) -> Option<Arc<BackendRuntime>> {
        self.map.read().get(&id).cloned()
    }

    /// Drops runtimes of backends for which `keep` is false and that have no connections left.
    pub fn retain(&self, mut keep: impl FnMut(BackendId) -> bool) {
        self.map.write().retain(|id, rt| keep(*id) || rt.active() > 0 || rt.inactive() > 0);
    }

    /// Number of backends with a runtime.
    pub fn len(&self) -> usize {
        self.map.read().len()
    }

    /// True when no backend has a runtime.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Options that shape how a [`BackendSet`] decides which backends are usable.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct SetOptions {
    /// Envoy's panic threshold: when the share of up backends (among those with weight > 0 that
    /// are not disabled or draining) falls below this fraction, down backends are used as well,
    /// on the theory that health checking is more likely broken than most backends. `None` (the
    /// default) never panics; Envoy's default is `Some(0.5)`.
    pub panic_threshold: Option<f64>,
    /// Slow start: a backend that has just become usable gets a weight that ramps linearly from
    /// 10% to 100% over this window (HAProxy `slowstart`). Applies to the dynamic weighted
    /// schedulers (smooth WRR, weighted least connections, least request, weighted random).
    pub slow_start: Option<Duration>,
}

/// Why a backend set could not be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SetError {
    /// Two backends share an id.
    #[error("duplicate backend id {0}")]
    DuplicateId(BackendId),
}

#[derive(Debug)]
struct SetInner {
    backends: Vec<Backend>,
    runtime: Vec<Arc<BackendRuntime>>,
    by_id: HashMap<BackendId, u32>,
    usable: Vec<u32>,
    panic: bool,
    options: SetOptions,
}

/// An immutable snapshot of a pool's backends, cheap to clone (one `Arc`).
///
/// Indices (`0..len()`) are positions in this snapshot only; [`BackendId`]s are stable.
#[derive(Clone, Debug)]
pub struct BackendSet {
    inner: Arc<SetInner>,
}

impl BackendSet {
    /// Builds a snapshot, attaching each backend's runtime from `registry`.
    pub fn new(
        backends: Vec<Backend>,
        registry: &RuntimeRegistry,
        options: SetOptions,
    ) -> Result<Self, SetError> {
        let mut by_id = HashMap::with_capacity(backends.len());
        for (i, b) in backends.iter().enumerate() {
            if by_id.insert(b.id, i as u32).is_some() {
                return Err(SetError::DuplicateId(b.id));
            }
        }
        let runtime = backends.iter().map(|b| registry.get_or_create(b.id)).collect();
        let eligible =
            |b: &Backend| b.weight > 0 && matches!(b.state, BackendState::Up | BackendState::Down);
        let n_eligible = backends.iter().filter(|b| eligible(b)).count();
        let n_up = backends.iter().filter(|b| eligible(b) && b.state == BackendState::Up).count();
        let panic = match options.panic_threshold {
            Some(t) if n_eligible > 0 => (n_up as f64) < t * n_eligible as f64,
            _ => false,
        };
        let usable = backends
            .iter()
            .enumerate()
            .filter(|(_, b)| eligible(b) && (panic || b.state == BackendState::Up))
            .map(|(i, _)| i as u32)
            .collect();
        Ok(BackendSet {
            inner: Arc::new(SetInner { backends, runtime, by_id, usable, panic, options }),
        })
    }

    /// An empty set.
    pub fn empty() -> Self {
        BackendSet::new(Vec::new(), &RuntimeRegistry::new(), SetOptions::default())
            .unwrap_or_else(|_| unreachable!("an empty set has no duplicate ids"))
    }

    /// All backends, usable or not, in configuration order.
    pub fn backends(&self) -> &[Backend] {
        &self.inner.backends
    }

    /// Number of backends.
    pub fn len(&self) -> usize {
        self.inner.backends.len()
    }

    /// True when the set has no backends.
    pub fn is_empty(&self) -> bool {
        self.inner.backends.is_empty()
    }

    /// The backend at `index`.
    pub fn get(&self, index: usize) -> Option<&Backend> {
        self.inner.backends.get(index)
    }

    /// The index of backend `id`.
    pub fn index_of(&self, id: BackendId) -> Option<usize> {
        self.inner.by_id.get(&id).map(|&i| i as usize)
    }

    /// The runtime state of the backend at `index`.
    ///
    /// # Panics
    /// If `index >= len()`.
    pub fn runtime(&self, index: usize) -> &Arc<BackendRuntime> {
        &self.inner.runtime[index]
    }

    /// Indices of the backends that may take new flows, in configuration order.
    pub fn usable(&self) -> &[u32] {
        &self.inner.usable
    }

    /// True when the panic threshold put down backends back into use.
    pub fn in_panic(&self) -> bool {
        self.inner.panic
    }

    /// The options the set was built with.
    pub fn options(&self) -> SetOptions {
        self.inner.options
    }

    /// Whether the backend at `index` may take new flows.
    pub fn is_usable(&self, index: usize) -> bool {
        self.inner.backends.get(index).is_some_and(|b| {
            b.weight > 0
                && (b.state == BackendState::Up
                    || (self.inner.panic && b.state == BackendState::Down))
        })
    }

    /// The weight the dynamic schedulers use at `now`: the configured weight, reduced during a
    /// slow-start window (linear from 10% to 100%, never below 1 for a positive weight).
    pub fn effective_weight(&self, index: usize, now: Instant) -> u32 {
        let w = self.inner.backends[index].weight;
        let (Some(window), Some(since)) =
            (self.inner.options.slow_start, self.inner.runtime[index].slow_start_since())
        else {
            return w;
        };
        let elapsed = now.saturating_duration_since(since);
        if elapsed >= window || window.is_zero() {
            return w;
        }
        let frac = 0.1 + 0.9 * elapsed.as_secs_f64() / window.as_secs_f64();
        ((f64::from(w) * frac) as u32).max(1).min(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn be(id: u32, state: BackendState) -> Backend {
        Backend::new(BackendId(id), SocketAddr::from(([10, 0, 2, id as u8], 80))).with_state(state)
    }

    #[test]
    fn usable_excludes_down_draining_disabled_and_zero_weight() {
        let reg = RuntimeRegistry::new();
        let set = BackendSet::new(
            vec![
                be(1, BackendState::Up),
                be(2, BackendState::Down),
                be(3, BackendState::Draining),
                be(4, BackendState::Disabled),
                be(5, BackendState::Up).with_weight(0),
                be(6, BackendState::Up),
            ],
            &reg,
            SetOptions::default(),
        )
        .unwrap();
        assert_eq!(set.usable(), &[0, 5]);
        assert!(!set.in_panic());
        assert_eq!(set.index_of(BackendId(6)), Some(5));
    }

    #[test]
    fn panic_threshold_brings_back_down_backends_only() {
        let reg = RuntimeRegistry::new();
        let opts = SetOptions { panic_threshold: Some(0.5), ..SetOptions::default() };
        let set = BackendSet::new(
            vec![
                be(1, BackendState::Up),
                be(2, BackendState::Down),
                be(3, BackendState::Down),
                be(4, BackendState::Disabled),
            ],
            &reg,
            opts,
        )
        .unwrap();
        assert!(set.in_panic());
        assert_eq!(set.usable(), &[0, 1, 2]);
        let healthy =
            BackendSet::new(vec![be(1, BackendState::Up), be(2, BackendState::Down)], &reg, opts)
                .unwrap();
        assert!(!healthy.in_panic(), "1 of 2 up is not below 50%");
        assert_eq!(healthy.usable(), &[0]);
    }

    #[test]
    fn runtime_survives_a_new_snapshot() {
        let reg = RuntimeRegistry::new();
        let a =
            BackendSet::new(vec![be(1, BackendState::Up)], &reg, SetOptions::default()).unwrap();
        a.runtime(0).inc_active();
        let b = BackendSet::new(
            vec![be(2, BackendState::Up), be(1, BackendState::Up).with_weight(5)],
            &reg,
            SetOptions::default(),
        )
        .unwrap();
        assert_eq!(b.runtime(1).active(), 1);
        assert_eq!(b.runtime(0).active(), 0);
        assert_eq!(
            BackendSet::new(
                vec![be(1, BackendState::Up), be(1, BackendState::Up)],
                &reg,
                SetOptions::default()
            )
            .unwrap_err(),
            SetError::DuplicateId(BackendId(1))
        );
    }

    #[test]
    fn slow_start_ramps_linearly() {
        let reg = RuntimeRegistry::new();
        let opts =
            SetOptions { slow_start: Some(Duration::from_secs(10)), ..SetOptions::default() };
        let set =
            BackendSet::new(vec![be(1, BackendState::Up).with_weight(100)], &reg, opts).unwrap();
        assert_eq!(set.effective_weight(0, Instant::from_secs(3)), 100, "no window started");
        set.runtime(0).start_slow_start(Instant::from_secs(10));
        assert_eq!(set.effective_weight(0, Instant::from_secs(10)), 10);
        assert_eq!(set.effective_weight(0, Instant::from_secs(15)), 55);
        assert_eq!(set.effective_weight(0, Instant::from_secs(20)), 100);
    }
}
