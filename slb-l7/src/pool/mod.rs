//! Upstream pools: backends on a slb-core scheduler, their keep-alive connections, health
//! (active probes and passive ejection) and the retry budget.
//!
//! A pool's backend list can change at runtime ([`Pool::set_backends`]): the scheduler is rebuilt
//! off to the side and swapped atomically, and backends that stay keep their runtime state
//! (in-flight counts, smooth-WRR weights, health, idle connections, counters).

mod retry;
mod select;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use slb_core::backend::{Backend, BackendId, BackendRuntime, BackendState, SetOptions};
use slb_core::flow::HashKey;
use slb_core::health::{
    HealthConfig, HealthProbe, HealthStatus, HealthTracker, OutlierConfig, OutlierDetector,
    OutlierEvent,
};
use slb_core::sched::{PickContext, PickError, Scheduler};
use slb_core::time::{Clock, Instant};
use tokio::sync::Notify;

pub use retry::{RetryBudget, RetryPolicy};
pub use select::SchedulerFactory;
pub(crate) use select::Selector;

use crate::admin::AdminError;
use crate::metrics::BackendStats;
use crate::sticky::cookie::TOKEN_LEN;
use crate::sticky::{CookieRewrite, Sticky, StickyRequest};
use crate::upstream::{Connector, IdlePool, KeepAlive};

/// What the hashing schedulers hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HashSource {
    /// The client's IP address.
    ClientIp,
    /// The request URI (path and query).
    Uri,
    /// A request header's value (name in lower case).
    Header(String),
    /// A cookie's value.
    Cookie(String),
}

impl HashSource {
    /// Parses `client_ip`, `uri`, `header:NAME`, `cookie:NAME`.
    pub fn parse(s: &str) -> Option<HashSource> {
        match s {
            "client_ip" | "" => Some(HashSource::ClientIp),
            "uri" => Some(HashSource::Uri),
            _ => match s.split_once(':') {
                Some(("header", n)) if !n.is_empty() => {
                    Some(HashSource::Header(n.to_ascii_lowercase()))
                }
                Some(("cookie", n)) if !n.is_empty() => Some(HashSource::Cookie(n.to_owned())),
                _ => None,
            },
        }
    }
}

/// Finds `name`'s value in a Cookie header value.
pub(crate) fn cookie_value<'a>(header: &'a [u8], name: &str) -> Option<&'a [u8]> {
    header.split(|&b| b == b';').find_map(|kv| {
        let kv = crate::http::trim(kv);
        let eq = kv.iter().position(|&b| b == b'=')?;
        (&kv[..eq] == name.as_bytes()).then(|| &kv[eq + 1..])
    })
}

/// A backend as an application describes it to [`Pool::set_backends`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendSpec {
    /// Address.
    pub addr: SocketAddr,
    /// Relative share; 0: no new requests.
    pub weight: u32,
    /// Administrative state: `Up`, `Draining` or `Disabled` (health decides about `Down`).
    pub state: BackendState,
}

impl BackendSpec {
    /// An enabled backend with weight 1.
    pub fn new(addr: SocketAddr) -> Self {
        BackendSpec { addr, weight: 1, state: BackendState::Up }
    }

    /// With a weight.
    pub fn with_weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }
}

/// A backend's view for status pages and the API.
#[derive(Clone, Debug)]
pub struct BackendStatus {
    /// Identity (stable while the address stays in the pool).
    pub id: BackendId,
    /// Address.
    pub addr: SocketAddr,
    /// Address as text.
    pub address: String,
    /// Weight.
    pub weight: u32,
    /// Administrative state.
    pub admin: BackendState,
    /// Active health verdict (`Up` when no active checks run).
    pub health: HealthStatus,
    /// Ejected by passive health.
    pub ejected: bool,
    /// Takes new requests.
    pub usable: bool,
    /// Requests in flight.
    pub active: u32,
    /// Health probes done and failed.
    pub checks: (u64, u64),
    /// Rise and fall thresholds, consecutive results towards a flip.
    pub rise_fall_streak: (u32, u32, u32),
    /// Idle keep-alive connections.
    pub idle: usize,
    /// Counters.
    pub stats: Arc<BackendStats>,
}

/// What a pool replacing another on reload takes over besides identities and counters.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Keep {
    /// Idle upstream connections (TLS and PROXY settings unchanged).
    pub(crate) connections: bool,
    /// Health trackers (health settings unchanged; otherwise only the verdicts carry over).
    pub(crate) health: bool,
    /// Ejections (passive settings unchanged).
    pub(crate) passive: bool,
}

/// Per-backend data that the request path needs after a pick.
#[derive(Debug)]
pub(crate) struct BackendSlot {
    pub(crate) id: BackendId,
    pub(crate) addr: SocketAddr,
    pub(crate) idle: IdlePool,
    pub(crate) stats: Arc<BackendStats>,
    /// The backend's sticky-cookie token (zero when the pool has no cookie stickiness).
    pub(crate) token: [u8; TOKEN_LEN],
    /// Mirror of the outlier detector's consecutive-failure count, so that successes need no lock
    /// while it is zero.
    consecutive: AtomicU32,
}

#[derive(Debug)]
struct Member {
    spec: BackendSpec,
    id: BackendId,
    health: HealthStatus,
    ejected: bool,
    tracker: Option<HealthTracker>,
    stats: Arc<BackendStats>,
}

#[derive(Debug)]
struct PoolState {
    members: Vec<Member>,
    ids: HashMap<SocketAddr, BackendId>,
    next_id: u32,
    outlier: OutlierDetector,
}

/// Active health checking of a pool.
#[derive(Clone)]
pub(crate) struct ActiveHealth {
    pub(crate) config: HealthConfig,
    pub(crate) probe: Arc<dyn HealthProbe>,
    pub(crate) kind: &'static str,
}

/// Everything a pool is built from.
pub struct PoolSettings {
    /// Scheduler factory (slb-core's `SchedulerConfig` or an application's).
    pub scheduler: Arc<dyn SchedulerFactory>,
    /// Whether the scheduler needs a hash key.
    pub needs_hash: bool,
    /// Hash key source.
    pub hash: HashSource,
    /// Hashing key.
    pub hash_key: HashKey,
    /// Panic threshold and slow start.
    pub set_options: SetOptions,
    /// Host field override.
    pub host: Option<String>,
    /// Retry policy.
    pub retry: RetryPolicy,
    /// Passive health; `None` disables ejection.
    pub passive: Option<OutlierConfig>,
    /// Count 5xx responses as passive failures.
    pub count_5xx: bool,
    pub(crate) connector: Connector,
    pub(crate) keepalive: KeepAlive,
    pub(crate) response_header_timeout: Duration,
    pub(crate) read_timeout: Duration,
    pub(crate) active: Option<ActiveHealth>,
    /// Stickiness (kept across reloads that leave the pool's sticky settings alone).
    pub(crate) sticky: Option<Arc<Sticky>>,
}

/// An upstream pool.
pub struct Pool {
    name: String,
    selector: Selector,
    pub(crate) settings: PoolSettings,
    pub(crate) budget: RetryBudget,
    state: Mutex<PoolState>,
    slots: ArcSwap<HashMap<BackendId, Arc<BackendSlot>>>,
    /// Sticky-cookie token to backend.
    tokens: ArcSwap<HashMap<[u8; TOKEN_LEN], BackendId>>,
    /// Replaced by a reload: background tasks stop.
    retired: AtomicBool,
    clock: Clock,
    /// Wakes the pool's maintenance task (ejections, backend changes).
    pub(crate) changed: Notify,
    /// Wakes the pool's health-check task (backend changes).
    pub(crate) health_wake: Notify,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("name", &self.name).finish()
    }
}

/// The outcome of a try, for passive health.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Passive {
    Success,
    Failure,
}

/// Picks on a fresh scheduler when the one loaded was replaced while picking (a backend list
/// changing several times within one pick).
const PICK_ATTEMPTS: usize = 3;

impl Pool {
    /// A pool with `backends`; with `prev`, one taking over `prev`'s scheduler runtime state
    /// (a reload changed the pool's settings).
    pub(crate) fn with_predecessor(
        name: String,
        settings: PoolSettings,
        backends: Vec<BackendSpec>,
        clock: Clock,
        prev: Option<&Pool>,
    ) -> Arc<Pool> {
        let selector = match prev {
            Some(p) => {
                Selector::successor(settings.scheduler.clone(), settings.set_options, &p.selector)
            }
            None => Selector::new(settings.scheduler.clone(), settings.set_options),
        };
        let outlier = OutlierDetector::new(settings.passive.unwrap_or_default(), backends.len());
        let pool = Arc::new(Pool {
            name,
            selector,
            settings,
            budget: RetryBudget::default(),
            state: Mutex::new(PoolState {
                members: Vec::new(),
                ids: HashMap::new(),
                next_id: 1,
                outlier,
            }),
            slots: ArcSwap::from_pointee(HashMap::new()),
            tokens: ArcSwap::from_pointee(HashMap::new()),
            retired: AtomicBool::new(false),
            clock,
            changed: Notify::new(),
            health_wake: Notify::new(),
        });
        pool.set_backends(backends);
        pool
    }

    /// The pool's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn now(&self) -> Instant {
        self.clock.at(std::time::Instant::now())
    }

    /// Replaces the backends. Backends whose address stays keep their identity and all their
    /// state; new ones start as the health configuration says (down until proven healthy by
    /// default when active checks run, up otherwise).
    pub fn set_backends(&self, backends: Vec<BackendSpec>) {
        let mut st = self.state.lock();
        self.apply(&mut st, backends);
        drop(st);
        self.changed.notify_one();
        self.health_wake.notify_one();
    }

    /// Changes the backend list through `f`, atomically: `f` sees the current list, and its
    /// result replaces it in one step (one scheduler rebuild), or nothing changes if it fails.
    pub fn update_backends(
        &self,
        f: impl FnOnce(&mut Vec<BackendSpec>) -> Result<(), AdminError>,
    ) -> Result<(), AdminError> {
        let mut st = self.state.lock();
        let mut specs: Vec<BackendSpec> = st.members.iter().map(|m| m.spec.clone()).collect();
        f(&mut specs)?;
        self.apply(&mut st, specs);
        drop(st);
        self.changed.notify_one();
        self.health_wake.notify_one();
        Ok(())
    }

    /// Adds a backend (an error if its address is in the pool already).
    pub fn add_backend(&self, spec: BackendSpec) -> Result<(), AdminError> {
        self.update_backends(|list| {
            if list.iter().any(|b| b.addr == spec.addr) {
                return Err(AdminError::BackendExists(spec.addr));
            }
            list.push(spec);
            Ok(())
        })
    }

    /// Removes the backend at `addr`. Requests in flight to it finish.
    pub fn remove_backend(&self, addr: SocketAddr) -> Result<(), AdminError> {
        self.update_backends(|list| {
            let before = list.len();
            list.retain(|b| b.addr != addr);
            if list.len() == before {
                return Err(AdminError::NoSuchBackend(addr));
            }
            Ok(())
        })
    }

    /// Sets the administrative state of the backend at `addr`: `Up` (enable), `Draining` (no new
    /// requests, sticky clients move on; requests in flight finish) or `Disabled`.
    pub fn set_backend_state(
        &self,
        addr: SocketAddr,
        state: BackendState,
    ) -> Result<(), AdminError> {
        if state == BackendState::Down {
            return Err(AdminError::Invalid("health decides about down; use disabled".into()));
        }
        self.update_backends(|list| {
            let b =
                list.iter_mut().find(|b| b.addr == addr).ok_or(AdminError::NoSuchBackend(addr))?;
            b.state = state;
            Ok(())
        })
    }

    /// Sets the weight of the backend at `addr` (0: no new requests).
    pub fn set_backend_weight(&self, addr: SocketAddr, weight: u32) -> Result<(), AdminError> {
        self.update_backends(|list| {
            let b =
                list.iter_mut().find(|b| b.addr == addr).ok_or(AdminError::NoSuchBackend(addr))?;
            b.weight = weight;
            Ok(())
        })
    }

    /// The backends as specified (address, weight, administrative state).
    pub fn specs(&self) -> Vec<BackendSpec> {
        self.state.lock().members.iter().map(|m| m.spec.clone()).collect()
    }

    /// Takes over the backends of `old` (a pool this one replaces on reload) that are in
    /// `specs`: identities, counters, health (the tracker itself when `keep.health`, else the
    /// verdict), ejections and the outlier detector (when `keep.passive`) and idle connections
    /// (when `keep.connections`); then applies `specs`.
    pub(crate) fn inherit(&self, old: &Pool, specs: Vec<BackendSpec>, keep: Keep) {
        let now = self.now();
        let mut ost = old.state.lock();
        let mut st = self.state.lock();
        st.ids = ost.ids.clone();
        st.next_id = ost.next_id;
        if keep.passive {
            std::mem::swap(&mut st.outlier, &mut ost.outlier);
        }
        let wanted: std::collections::HashSet<SocketAddr> = specs.iter().map(|s| s.addr).collect();
        for m in ost.members.iter().filter(|m| wanted.contains(&m.spec.addr)) {
            let tracker = match (&m.tracker, &self.settings.active) {
                (_, None) => None,
                (Some(t), Some(_)) if keep.health => Some(t.clone()),
                (_, Some(a)) => {
                    let mut t = HealthTracker::new(
                        a.config,
                        now,
                        u64::from(m.id.0) ^ hash_addr(m.spec.addr),
                    );
                    t.force(m.health);
                    Some(t)
                }
            };
            let health = tracker.as_ref().map_or(HealthStatus::Up, |t| t.status());
            st.members.push(Member {
                spec: m.spec.clone(),
                id: m.id,
                health,
                ejected: keep.passive && m.ejected,
                tracker,
                stats: m.stats.clone(),
            });
        }
        drop(ost);
        if keep.connections {
            let old_slots = old.slots.load();
            let mut slots = HashMap::new();
            for m in &st.members {
                if let Some(slot) = old_slots.get(&m.id) {
                    let token = match &self.settings.sticky {
                        Some(s) if s.cookie().is_some() => {
                            s.key.server_token(&self.name, m.spec.addr)
                        }
                        _ => [0; TOKEN_LEN],
                    };
                    if slot.token == token {
                        slots.insert(m.id, slot.clone());
                    }
                }
            }
            self.slots.store(Arc::new(slots));
        }
        self.apply(&mut st, specs);
        drop(st);
        self.changed.notify_one();
        self.health_wake.notify_one();
    }

    fn apply(&self, st: &mut PoolState, backends: Vec<BackendSpec>) {
        let now = self.now();
        let mut old: HashMap<SocketAddr, Member> =
            st.members.drain(..).map(|m| (m.spec.addr, m)).collect();
        let mut members = Vec::with_capacity(backends.len());
        for spec in backends {
            if members.iter().any(|m: &Member| m.spec.addr == spec.addr) {
                continue;
            }
            let m = match old.remove(&spec.addr) {
                Some(mut m) => {
                    m.spec = spec;
                    m
                }
                None => {
                    let id = match st.ids.get(&spec.addr) {
                        Some(id) => *id,
                        None => {
                            let id = BackendId(st.next_id);
                            st.next_id += 1;
                            st.ids.insert(spec.addr, id);
                            id
                        }
                    };
                    let tracker = self.settings.active.as_ref().map(|a| {
                        HealthTracker::new(a.config, now, u64::from(id.0) ^ hash_addr(spec.addr))
                    });
                    let health = tracker.as_ref().map_or(HealthStatus::Up, |t| t.status());
                    Member {
                        spec,
                        id,
                        health,
                        ejected: false,
                        tracker,
                        stats: Arc::new(BackendStats::default()),
                    }
                }
            };
            members.push(m);
        }
        let gone: Vec<BackendId> = old.values().map(|m| m.id).collect();
        for addr in old.keys() {
            st.ids.remove(addr);
        }
        if let Some(s) = &self.settings.sticky {
            s.forget(&gone);
        }
        st.members = members;
        let ids: Vec<BackendId> = st.members.iter().map(|m| m.id).collect();
        st.outlier.set_pool(&ids);
        let slots = self.slots.load();
        let mut next = HashMap::with_capacity(st.members.len());
        let mut tokens = HashMap::with_capacity(st.members.len());
        for m in &st.members {
            let slot = slots.get(&m.id).cloned().unwrap_or_else(|| {
                let token = match &self.settings.sticky {
                    Some(s) if s.cookie().is_some() => s.key.server_token(&self.name, m.spec.addr),
                    _ => [0; TOKEN_LEN],
                };
                Arc::new(BackendSlot {
                    id: m.id,
                    addr: m.spec.addr,
                    idle: IdlePool::new(self.settings.keepalive.shards),
                    stats: m.stats.clone(),
                    token,
                    consecutive: AtomicU32::new(0),
                })
            });
            tokens.insert(slot.token, m.id);
            next.insert(m.id, slot);
        }
        // A pick on the scheduler being replaced must still find its backend's slot, and one on
        // the new scheduler must find the new backends' slots: publish both sets, rebuild, and
        // only then drop the slots of removed backends ([`Pool::pick`] picks again on the new
        // scheduler when a slot is missing).
        let mut both: HashMap<BackendId, Arc<BackendSlot>> = (**slots).clone();
        both.extend(next.iter().map(|(id, slot)| (*id, slot.clone())));
        self.slots.store(Arc::new(both));
        self.tokens.store(Arc::new(tokens));
        self.rebuild(st, now);
        self.slots.store(Arc::new(next));
    }

    /// Builds the scheduler's view from the members. Called with the state locked.
    fn rebuild(&self, st: &PoolState, now: Instant) {
        let backends = st
            .members
            .iter()
            .map(|m| {
                let state = match m.spec.state {
                    BackendState::Up if m.health == HealthStatus::Down || m.ejected => {
                        BackendState::Down
                    }
                    s => s,
                };
                Backend::new(m.id, m.spec.addr).with_weight(m.spec.weight).with_state(state)
            })
            .collect();
        // Ids are unique by construction (one per address), so this cannot fail.
        let _ = self.selector.update(backends, now);
    }

    /// The backends with their health and counters.
    pub fn backends(&self) -> Vec<BackendStatus> {
        self.backend_rows()
    }

    pub(crate) fn backend_rows(&self) -> Vec<BackendStatus> {
        let sched = self.selector.load();
        let set = sched.backends();
        let st = self.state.lock();
        let slots = self.slots.load();
        let (rise, fall) =
            self.settings.active.as_ref().map_or((0, 0), |a| (a.config.rise, a.config.fall));
        st.members
            .iter()
            .map(|m| {
                let idx = set.index_of(m.id);
                let (checks, failures, _) =
                    m.tracker.as_ref().map_or((0, 0, None), |t| t.counters());
                BackendStatus {
                    id: m.id,
                    addr: m.spec.addr,
                    address: m.spec.addr.to_string(),
                    weight: m.spec.weight,
                    admin: m.spec.state,
                    health: m.health,
                    ejected: m.ejected,
                    usable: idx.is_some_and(|i| set.is_usable(i)),
                    active: idx.map_or(0, |i| set.runtime(i).active()),
                    checks: (checks, failures),
                    rise_fall_streak: (rise, fall, m.tracker.as_ref().map_or(0, |t| t.streak())),
                    idle: slots.get(&m.id).map_or(0, |s| s.idle.len()),
                    stats: m.stats.clone(),
                }
            })
            .collect()
    }

    /// The kind of active check (`"none"`, `"tcp"`, `"http"`, or `"custom"`).
    pub fn check_kind(&self) -> &'static str {
        self.settings.active.as_ref().map_or("none", |a| a.kind)
    }

    /// Retry budget counters.
    pub fn retry_budget(&self) -> &RetryBudget {
        &self.budget
    }

    /// The hash for this request, when the scheduler needs one.
    pub(crate) fn wants_hash(&self) -> bool {
        self.settings.needs_hash
    }

    /// Picks a backend not in `tried`. Returns the slot and its runtime (for in-flight counting).
    pub(crate) fn pick(
        &self,
        hash: Option<u64>,
        tried: &[BackendId],
        prefer: Option<BackendId>,
    ) -> Result<(Arc<BackendSlot>, Arc<BackendRuntime>), PickError> {
        let sched = self.selector.load();
        if let Some(id) = prefer.filter(|id| !tried.contains(id)) {
            // A sticky backend is used while it is up, enabled and weighted; a down, draining,
            // disabled or ejected one falls back to the scheduler.
            let set = sched.backends();
            if let Some(i) = set.index_of(id) {
                let b = &set.backends()[i];
                if b.state == BackendState::Up && b.weight > 0 {
                    if let Some(slot) = self.slots.load().get(&id) {
                        return Ok((slot.clone(), set.runtime(i).clone()));
                    }
                }
            }
        }
        let ctx = PickContext { hash, now: self.now(), ..PickContext::default() };
        let mut sched = sched;
        for _ in 0..PICK_ATTEMPTS {
            let (id, i) = pick_untried(sched.as_ref().as_ref(), &ctx, tried)?;
            if let Some(slot) = self.slots.load().get(&id) {
                return Ok((slot.clone(), sched.backends().runtime(i).clone()));
            }
            // The backend was removed after this scheduler was loaded: its successor is in
            // place by now (see `apply`), so pick again on it.
            sched = self.selector.load();
        }
        Err(PickError::NoBackend)
    }

    /// What the request says about stickiness (nothing when the pool has none).
    pub(crate) fn sticky_request<'a>(
        &self,
        cookies: impl Iterator<Item = &'a [u8]>,
        client: IpAddr,
    ) -> StickyRequest {
        let Some(s) = &self.settings.sticky else { return StickyRequest::default() };
        s.request(cookies, client, epoch_secs(), self.now(), &self.tokens.load())
    }

    /// After `slot` answered: the cookie edit for the response (and the source template renewed).
    pub(crate) fn sticky_response(
        &self,
        req: &StickyRequest,
        slot: &BackendSlot,
        client: IpAddr,
    ) -> CookieRewrite {
        let Some(s) = &self.settings.sticky else { return CookieRewrite::None };
        s.response(req, slot.id, &slot.token, client, epoch_secs(), self.now())
    }

    /// Marks the pool as replaced (by a reload); its background tasks end.
    pub(crate) fn retire(&self) {
        self.retired.store(true, Ordering::Relaxed);
        self.changed.notify_one();
        self.health_wake.notify_one();
    }

    /// True once replaced by a reload.
    pub(crate) fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Relaxed)
    }

    /// Source-IP templates held (0 without source stickiness).
    pub fn sticky_templates(&self) -> usize {
        self.settings.sticky.as_ref().map_or(0, |s| s.templates())
    }

    /// Passive health input from live traffic.
    pub(crate) fn report(&self, slot: &BackendSlot, outcome: Passive) {
        let Some(_) = self.settings.passive else { return };
        match outcome {
            Passive::Success => {
                if slot.consecutive.load(Ordering::Relaxed) != 0 {
                    slot.consecutive.store(0, Ordering::Relaxed);
                    self.state.lock().outlier.handle_success(slot.id);
                }
            }
            Passive::Failure => {
                slot.consecutive.fetch_add(1, Ordering::Relaxed);
                let now = self.now();
                let mut st = self.state.lock();
                if let Some(OutlierEvent::Ejected(id, until)) =
                    st.outlier.handle_failure(slot.id, now)
                {
                    slot.consecutive.store(0, Ordering::Relaxed);
                    if let Some(m) = st.members.iter_mut().find(|m| m.id == id) {
                        m.ejected = true;
                    }
                    tracing::warn!(pool = %self.name, backend = %slot.addr, until = ?until, "backend ejected after consecutive failures");
                    self.rebuild(&st, now);
                    drop(st);
                    self.changed.notify_one();
                }
            }
        }
    }

    /// Ends ejections that are due; returns when the next one ends.
    pub(crate) fn handle_ejection_timeouts(&self) -> Option<Instant> {
        let now = self.now();
        let mut st = self.state.lock();
        let events = st.outlier.handle_timeout(now);
        if !events.is_empty() {
            for e in &events {
                if let OutlierEvent::Returned(id) = e {
                    if let Some(m) = st.members.iter_mut().find(|m| m.id == *id) {
                        m.ejected = false;
                        tracing::info!(pool = %self.name, backend = %m.spec.addr, "backend back from ejection");
                    }
                }
            }
            self.rebuild(&st, now);
        }
        st.outlier.poll_timeout()
    }

    /// Closes idle connections that timed out.
    pub(crate) fn sweep_idle(&self) {
        for slot in self.slots.load().values() {
            slot.idle.sweep(&self.settings.keepalive);
        }
    }

    /// Active health: the probes due at `now` (id, address), and when the next is due.
    pub(crate) fn due_probes(
        &self,
        now: Instant,
    ) -> (Vec<(BackendId, SocketAddr)>, Option<Instant>) {
        let st = self.state.lock();
        let mut due = Vec::new();
        let mut next: Option<Instant> = None;
        for m in &st.members {
            if let Some(t) = &m.tracker {
                if t.poll_timeout() <= now {
                    due.push((m.id, m.spec.addr));
                } else {
                    next = Some(next.map_or(t.poll_timeout(), |n| n.min(t.poll_timeout())));
                }
            }
        }
        (due, next)
    }

    /// Active health: feeds a probe result.
    pub(crate) fn handle_probe(&self, id: BackendId, now: Instant, healthy: bool, reason: &str) {
        let mut st = self.state.lock();
        let Some(m) = st.members.iter_mut().find(|m| m.id == id) else { return };
        let Some(t) = &mut m.tracker else { return };
        if let Some(tr) = t.handle_result(now, healthy) {
            m.health = tr.to;
            if tr.to == HealthStatus::Down {
                tracing::warn!(pool = %self.name, backend = %m.spec.addr, reason, "backend down (health check)");
            } else {
                tracing::info!(pool = %self.name, backend = %m.spec.addr, "backend up (health check)");
            }
            self.rebuild(&st, now);
        }
    }
}

/// Seconds since the Unix epoch (sticky cookie times).
fn epoch_secs() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
}

fn hash_addr(a: SocketAddr) -> u64 {
    let ip = match a.ip() {
        IpAddr::V4(v) => u64::from(u32::from(v)),
        IpAddr::V6(v) => u128::from(v) as u64,
    };
    ip << 16 | u64::from(a.port())
}

/// Picks a backend not yet tried: the scheduler's choice, or for repeatable choices (hashing) the
/// next usable backend after it.
fn pick_untried(
    sched: &dyn Scheduler,
    ctx: &PickContext<'_>,
    tried: &[BackendId],
) -> Result<(BackendId, usize), PickError> {
    let first = sched.pick(ctx)?;
    if !tried.contains(&first.id()) {
        return Ok((first.id(), first.index));
    }
    for _ in 0..2 {
        let p = sched.pick(ctx)?;
        if !tried.contains(&p.id()) {
            return Ok((p.id(), p.index));
        }
    }
    let set = sched.backends();
    let usable = set.usable();
    let start = usable.iter().position(|&i| i as usize == first.index).unwrap_or(0);
    for k in 1..=usable.len() {
        let i = usable[(start + k) % usable.len()] as usize;
        if let Some(b) = set.get(i) {
            if !tried.contains(&b.id) {
                return Ok((b.id, i));
            }
        }
    }
    Err(PickError::NoBackend)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_sources_and_cookies() {
        assert_eq!(HashSource::parse("header:X-User"), Some(HashSource::Header("x-user".into())));
        assert_eq!(HashSource::parse("cookie:sid"), Some(HashSource::Cookie("sid".into())));
        assert_eq!(HashSource::parse("uri"), Some(HashSource::Uri));
        assert_eq!(HashSource::parse("header:"), None);
        assert_eq!(HashSource::parse("body"), None);
        assert_eq!(cookie_value(b"a=1; sid=xyz; b=2", "sid"), Some(&b"xyz"[..]));
        assert_eq!(cookie_value(b"sidx=1", "sid"), None);
    }
}
