//! Building a proxy from a [`Config`] (plus an application's own probes, schedulers, discovery
//! and certificates) and running it on the caller's tokio runtime or on its own worker threads.
//!
//! Lifecycle: [`Phase::Running`] (accepting) → [`Phase::Draining`] (listeners closed or handed
//! to a new process; idle keep-alive connections closed, requests in flight finish and their
//! responses say `Connection: close`, HTTP/2 connections get GOAWAY) → [`Phase::Stopped`]
//! (background tasks end, worker runtimes exit, connections still open are dropped).

mod build;
mod handle;
mod reload;

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use slb_core::flow::HashKey;
use slb_core::health::HealthProbe;
use slb_core::time::Clock;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub(crate) use build::BuildContext;
pub use handle::{ListenerStats, ProxyHandle, RunningProxy, Serving, Workers};
pub use reload::ReloadSummary;

use crate::config::{Config, ConfigError, ConfigOverrides};
use crate::health::Discovery;
use crate::listener::{ListenerPlan, accept_loop, bind_std};
use crate::pool::{Pool, SchedulerFactory};
use crate::proxy::Active;
use crate::proxy_protocol::Networks;
use crate::sticky::StickyKey;
use crate::tls::ServerCert;
use crate::upgrade::{Inherited, ListeningSockets};

/// Where a running proxy is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Phase {
    /// Accepting connections.
    Running,
    /// Not accepting; connections finish what they are doing.
    Draining,
    /// Everything ends.
    Stopped,
}

/// The configuration in force and where it came from.
pub(crate) struct Current {
    pub(crate) config: Config,
    pub(crate) path: Option<PathBuf>,
    /// Applied to every configuration reloaded.
    pub(crate) overrides: Option<ConfigOverrides>,
}

/// State shared by every connection of a proxy.
pub(crate) struct Shared {
    pub(crate) active: ArcSwap<Active>,
    pub(crate) pools: Arc<ArcSwap<Vec<Arc<Pool>>>>,
    pub(crate) ctx: BuildContext,
    /// Held for the whole of a reload (one at a time).
    pub(crate) current: Mutex<Current>,
    /// Runtime and phase receiver for tasks started after `start` (pools added by a reload).
    pub(crate) background: Mutex<Option<(tokio::runtime::Handle, watch::Receiver<Phase>)>>,
    pub(crate) phase: watch::Sender<Phase>,
    /// Client connections open.
    pub(crate) connections: AtomicUsize,
    pub(crate) listener_stats: Vec<Arc<ListenerStats>>,
}

/// Extension points for [`Proxy::builder`]: an application's own health probe, scheduler,
/// backend discovery and certificates.
///
/// ```
/// use std::net::SocketAddr;
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// use slb_core::backend::BackendSet;
/// use slb_core::health::{HealthProbe, ProbeFuture, ProbeResult};
/// use slb_core::sched::{RoundRobin, Scheduler};
/// use slb_l7::config::Config;
/// use slb_l7::health::{Discovery, DiscoveryFuture};
/// use slb_l7::pool::{BackendSpec, SchedulerFactory};
/// use slb_l7::Proxy;
///
/// /// Asks the service's own registry whether a backend is healthy.
/// struct RegistryProbe;
/// impl HealthProbe for RegistryProbe {
///     fn probe(&self, _target: SocketAddr) -> ProbeFuture<'_> {
///         Box::pin(async { ProbeResult::Healthy })
///     }
/// }
///
/// /// Round robin that starts at the first backend.
/// #[derive(Debug)]
/// struct FromTheTop;
/// impl SchedulerFactory for FromTheTop {
///     fn build(&self, set: BackendSet) -> Box<dyn Scheduler> {
///         Box::new(RoundRobin::new(set, 0))
///     }
/// }
///
/// /// A fixed list, standing in for DNS or a service registry.
/// struct Fixed;
/// impl Discovery for Fixed {
///     fn discover(&self) -> DiscoveryFuture<'_> {
///         Box::pin(async { Ok(vec![BackendSpec::new("127.0.0.1:9001".parse().unwrap())]) })
///     }
/// }
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let cfg = Config::simple("127.0.0.1:0", "app", &[]);
/// let proxy = Proxy::builder(cfg)
///     .health_probe("app", Arc::new(RegistryProbe))
///     .scheduler("app", Arc::new(FromTheTop))
///     .discovery("app", Arc::new(Fixed), Duration::from_secs(10))
///     .build()
///     .unwrap();
/// let handle = proxy.handle();
/// let running = proxy.start().await.unwrap();
/// // Discovery runs at once: the pool gets its backend.
/// while handle.pool("app").unwrap().backends().is_empty() {
///     tokio::time::sleep(Duration::from_millis(10)).await;
/// }
/// running.shutdown().await;
/// # });
/// ```
#[derive(Default)]
pub struct ProxyBuilder {
    config: Config,
    probes: HashMap<String, Arc<dyn HealthProbe>>,
    schedulers: HashMap<String, Arc<dyn SchedulerFactory>>,
    discovery: Vec<(String, Arc<dyn Discovery>, Duration)>,
    certificates: HashMap<String, Vec<ServerCert>>,
    hash_key: Option<HashKey>,
    sticky_key: Option<StickyKey>,
    config_path: Option<PathBuf>,
    overrides: Option<ConfigOverrides>,
    inherited: Option<Inherited>,
}

impl ProxyBuilder {
    /// Starts from `config`.
    pub fn new(config: Config) -> Self {
        ProxyBuilder { config, ..ProxyBuilder::default() }
    }

    /// Uses `probe` for the active health checks of `pool` (instead of the configured TCP/HTTP
    /// check; interval, rise and fall still come from the pool's `health` section).
    pub fn health_probe(mut self, pool: &str, probe: Arc<dyn HealthProbe>) -> Self {
        self.probes.insert(pool.into(), probe);
        self
    }

    /// Uses `factory` to build the scheduler of `pool` (instead of the configured one).
    pub fn scheduler(mut self, pool: &str, factory: Arc<dyn SchedulerFactory>) -> Self {
        self.schedulers.insert(pool.into(), factory);
        self
    }

    /// Takes `pool`'s backends from `discovery`, polled every `interval`.
    pub fn discovery(
        mut self,
        pool: &str,
        discovery: Arc<dyn Discovery>,
        interval: Duration,
    ) -> Self {
        self.discovery.push((pool.into(), discovery, interval));
        self
    }

    /// Serves `cert` on the TLS listener named `listener` (in addition to configured files).
    pub fn certificate(mut self, listener: &str, cert: ServerCert) -> Self {
        self.certificates.entry(listener.into()).or_default().push(cert);
        self
    }

    /// Sets the cluster hash key of the hashing schedulers (default: slb-core's public key).
    pub fn hash_key(mut self, key: HashKey) -> Self {
        self.hash_key = Some(key);
        self
    }

    /// Signs sticky cookies with `key` (default: derived from `server.secret`, else the key
    /// inherited in an upgrade, else random).
    pub fn sticky_key(mut self, key: StickyKey) -> Self {
        self.sticky_key = Some(key);
        self
    }

    /// Remembers the file the configuration came from, for
    /// [`ProxyHandle::reload_from_file`] (SIGHUP, the admin API's `POST /reload`).
    pub fn config_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.config_path = Some(path.into());
        self
    }

    /// Applies `overrides` to the configuration now and to every configuration reloaded later
    /// (command-line options that must survive a SIGHUP reload of the file).
    pub fn config_overrides(mut self, overrides: ConfigOverrides) -> Self {
        self.overrides = Some(overrides);
        self
    }

    /// Serves on listening sockets handed over by a running proxy
    /// ([`upgrade::take_over`](crate::upgrade::take_over)) instead of binding new ones, and
    /// keeps its sticky-cookie key.
    pub fn inherit(mut self, inherited: Inherited) -> Self {
        self.inherited = Some(inherited);
        self
    }

    /// Validates and builds the proxy (no socket is opened yet).
    pub fn build(self) -> Result<Proxy, ConfigError> {
        let mut cfg = self.config;
        if let Some(o) = &self.overrides {
            o.apply(&mut cfg);
        }
        // A listener whose certificates all come from the builder is still a TLS listener.
        let builder_tls: HashSet<String> = self.certificates.keys().cloned().collect();
        mark_builder_tls(&mut cfg, &builder_tls);
        validate_with_builder_tls(&cfg, &builder_tls)?;
        let key = match (&self.sticky_key, &cfg.server.secret, &self.inherited) {
            (Some(k), _, _) => k.clone(),
            (None, Some(secret), _) => StickyKey::derive(secret.as_bytes()),
            (None, None, Some(inh)) => inh.key().clone(),
            (None, None, None) => {
                let mut b = [0u8; 32];
                getrandom::fill(&mut b).map_err(|e| {
                    ConfigError::one(
                        "server.secret",
                        format!("no random key available ({e}); set a secret"),
                    )
                })?;
                StickyKey::from_bytes(b)
            }
        };
        // One idle-connection shard per possible worker runtime (see `start_workers`).
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let ctx = BuildContext {
            probes: self.probes,
            schedulers: self.schedulers,
            hash_key: self.hash_key.unwrap_or_default(),
            clock: Clock::with_origin(std::time::Instant::now()),
            shards: cfg.server.workers.max(cpus),
            key,
            builder_tls,
            discovered: self.discovery.iter().map(|(p, _, _)| p.clone()).collect(),
        };
        let mut pools = HashMap::new();
        for (name, pc) in &cfg.pools {
            let pool = build::build_pool(name, pc, &ctx, None, None)?;
            pool.set_backends(build::backend_specs(pc));
            pools.insert(name.clone(), pool);
        }
        let router = build::build_router(&cfg, &pools);
        let settings = build::settings_of(&cfg);
        let mut listeners = Vec::new();
        let mut listener_stats = Vec::new();
        for (i, l) in cfg.listeners.iter().enumerate() {
            let addr: SocketAddr = l.address.parse().map_err(|_| {
                ConfigError::one(&format!("listeners[{i}].address"), "invalid address".into())
            })?;
            let tls = match &l.tls {
                None => None,
                Some(t) => {
                    let mut certs = Vec::new();
                    for (c, cc) in t.certificates.iter().enumerate() {
                        let cert = ServerCert::from_pem_files(&cc.cert, &cc.key, &cc.names)
                            .map_err(|e| {
                                ConfigError::one(
                                    &format!("listeners[{i}].tls.certificates[{c}]"),
                                    e,
                                )
                            })?;
                        certs.push(cert);
                    }
                    certs.extend(self.certificates.get(&l.name).cloned().unwrap_or_default());
                    let sc = crate::tls::server_config(&certs, l.http2)
                        .map_err(|e| ConfigError::one(&format!("listeners[{i}].tls"), e))?;
                    Some(tokio_rustls::TlsAcceptor::from(sc))
                }
            };
            let proxy_protocol =
                if l.proxy_protocol {
                    Some(Networks::parse(&l.trusted_proxies).map_err(|e| {
                        ConfigError::one(&format!("listeners[{i}].trusted_proxies"), e)
                    })?)
                } else {
                    None
                };
            let stats = Arc::new(ListenerStats::new(&l.name));
            listener_stats.push(stats.clone());
            listeners.push(ListenerPlan {
                name: l.name.clone(),
                addr,
                tls,
                http2: l.http2,
                max_connections: l.max_connections,
                proxy_protocol,
                stats,
            });
        }
        let parse_addr = |field: &str,
                          a: &Option<String>|
         -> Result<Option<SocketAddr>, ConfigError> {
            a.as_ref()
                .map(|a| a.parse().map_err(|_| ConfigError::one(field, "invalid address".into())))
                .transpose()
        };
        let status = parse_addr("status.address", &cfg.status.address)?;
        let admin = parse_addr("admin.address", &cfg.admin.address)?;
        for (p, _, _) in &self.discovery {
            if !pools.contains_key(p) {
                return Err(ConfigError::one("discovery", format!("no pool named {p:?}")));
            }
        }
        let pool_list: Vec<Arc<Pool>> =
            cfg.pools.keys().filter_map(|n| pools.get(n).cloned()).collect();
        let (phase, _) = watch::channel(Phase::Running);
        Ok(Proxy {
            shared: Arc::new(Shared {
                active: ArcSwap::from_pointee(Active { router, settings }),
                pools: Arc::new(ArcSwap::from_pointee(pool_list)),
                ctx,
                current: Mutex::new(Current {
                    config: cfg,
                    path: self.config_path,
                    overrides: self.overrides,
                }),
                background: Mutex::new(None),
                phase,
                connections: AtomicUsize::new(0),
                listener_stats,
            }),
            listeners,
            status,
            admin,
            discovery: self.discovery,
            inherited: self.inherited.map(Inherited::into_sockets).unwrap_or_default(),
        })
    }
}

/// Builder certificates turn a listener into a TLS listener.
pub(crate) fn mark_builder_tls(cfg: &mut Config, builder_tls: &HashSet<String>) {
    for l in &mut cfg.listeners {
        if builder_tls.contains(&l.name) && l.tls.is_none() {
            l.tls = Some(Default::default());
        }
    }
}

/// Validates `cfg`, counting builder certificates as certificates.
pub(crate) fn validate_with_builder_tls(
    cfg: &Config,
    builder_tls: &HashSet<String>,
) -> Result<(), ConfigError> {
    let mut check = cfg.clone();
    for l in &mut check.listeners {
        if builder_tls.contains(&l.name) {
            if let Some(t) = &mut l.tls {
                t.certificates.push(Default::default());
            }
        }
    }
    check.validate()
}

/// A proxy built from a configuration, not yet listening.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use slb_l7::config::Config;
/// use slb_l7::Proxy;
///
/// let cfg = Config::simple("127.0.0.1:8080", "app", &["127.0.0.1:9001", "127.0.0.1:9002"]);
/// let running = Proxy::from_config(cfg)?.start().await?;
/// println!("listening on {}", running.local_addr("main").unwrap());
/// running.shutdown().await;
/// # Ok(()) }
/// ```
pub struct Proxy {
    shared: Arc<Shared>,
    listeners: Vec<ListenerPlan>,
    status: Option<SocketAddr>,
    admin: Option<SocketAddr>,
    discovery: Vec<(String, Arc<dyn Discovery>, Duration)>,
    /// Sockets handed over by a previous process, by role.
    inherited: HashMap<String, Vec<std::net::TcpListener>>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy").field("listeners", &self.listeners.len()).finish()
    }
}

/// The socket role of a listener, as named in an upgrade handover.
fn listener_role(name: &str) -> String {
    format!("listener:{name}")
}

impl Proxy {
    /// Validates `config` and builds the proxy.
    pub fn from_config(config: Config) -> Result<Proxy, ConfigError> {
        ProxyBuilder::new(config).build()
    }

    /// Reads, validates and builds the configuration in `path` (remembered for reloads).
    pub fn from_file(path: impl Into<PathBuf>) -> Result<Proxy, ConfigError> {
        let path = path.into();
        let cfg = Config::from_file(&path)?;
        ProxyBuilder::new(cfg).config_path(path).build()
    }

    /// A builder, for plugging in probes, schedulers, discovery and certificates.
    pub fn builder(config: Config) -> ProxyBuilder {
        ProxyBuilder::new(config)
    }

    /// A handle to the pools (usable before and after [`Proxy::start`]).
    pub fn handle(&self) -> ProxyHandle {
        ProxyHandle { shared: self.shared.clone() }
    }

    /// The sockets of `role`: inherited ones, or `n` new ones bound to `addr`.
    fn sockets(
        &mut self,
        role: &str,
        addr: SocketAddr,
        n: usize,
    ) -> io::Result<Vec<std::net::TcpListener>> {
        if let Some(socks) = self.inherited.remove(role) {
            if let Some(first) = socks.first() {
                let got = first.local_addr()?;
                if addr.port() == 0 && addr.ip() == got.ip() || addr == got {
                    return Ok(socks);
                }
                tracing::warn!(role, inherited = %got, configured = %addr, "not reusing an inherited socket for a different address");
            }
        }
        let first = bind_std(addr, n > 1)?;
        let actual = first.local_addr()?;
        let mut socks = vec![first];
        for _ in 1..n {
            socks.push(bind_std(actual, true)?);
        }
        Ok(socks)
    }

    /// Binds every listener and starts serving on the current tokio runtime (any flavour); the
    /// upstream keep-alive pool is shared by all of its threads.
    pub async fn start(mut self) -> io::Result<RunningProxy> {
        let rx = self.shared.phase.subscribe();
        let mut tasks = Vec::new();
        let mut addrs = Vec::new();
        let mut exported = ListeningSockets::default();
        for plan in std::mem::take(&mut self.listeners) {
            let role = listener_role(&plan.name);
            let socks = self.sockets(&role, plan.addr, 1).map_err(|e| listen_error(&plan, e))?;
            let plan = Arc::new(plan);
            addrs.push((plan.name.clone(), socks[0].local_addr()?));
            for s in socks {
                exported.push(&role, &s)?;
                let l = TcpListener::from_std(s)?;
                tasks.push(tokio::spawn(accept_loop(
                    l,
                    plan.clone(),
                    self.shared.clone(),
                    rx.clone(),
                )));
            }
        }
        let (status, admin) = self.side_listeners(&mut exported)?;
        let status_addr = status.as_ref().map(|l| l.local_addr()).transpose()?;
        let admin_addr = admin.as_ref().map(|l| l.local_addr()).transpose()?;
        let status = status.map(TcpListener::from_std).transpose()?;
        let admin = admin.map(TcpListener::from_std).transpose()?;
        let handle = ProxyHandle { shared: self.shared.clone() };
        *self.shared.background.lock() = Some((tokio::runtime::Handle::current(), rx.clone()));
        tasks.extend(spawn_background(&handle, self.discovery, status, admin, &rx));
        Ok(RunningProxy::new(Serving::new(handle, addrs, status_addr, admin_addr, exported), tasks))
    }

    /// The status and admin sockets (inherited or new).
    #[allow(clippy::type_complexity)] // a pair of optional sockets
    fn side_listeners(
        &mut self,
        exported: &mut ListeningSockets,
    ) -> io::Result<(Option<std::net::TcpListener>, Option<std::net::TcpListener>)> {
        let (status_addr, admin_addr) = (self.status, self.admin);
        let mut one = |role: &str, addr: Option<SocketAddr>| -> io::Result<_> {
            let Some(a) = addr else { return Ok(None) };
            let s = self.sockets(role, a, 1)?.swap_remove(0);
            exported.push(role, &s)?;
            Ok(Some(s))
        };
        let status = one("status", status_addr)?;
        let admin = one("admin", admin_addr)?;
        Ok((status, admin))
    }

    /// Starts `workers` threads, each with its own current-thread tokio runtime and its own
    /// SO_REUSEPORT socket per listener (the kernel spreads connections over them), like nginx
    /// worker processes. Routing, pools, health and counters are shared; each backend's idle
    /// keep-alive connections are kept per worker, so that a socket stays on the reactor that
    /// registered it. Health checks, discovery, the status endpoint and the admin API run on
    /// worker 0. Inherited sockets are spread over the workers (a worker left without one
    /// accepts on a duplicate of another's).
    pub fn start_workers(mut self, workers: usize) -> io::Result<Workers> {
        let workers = workers.max(1);
        let rx = self.shared.phase.subscribe();
        let mut per_worker: Vec<Vec<(Arc<ListenerPlan>, std::net::TcpListener)>> =
            (0..workers).map(|_| Vec::new()).collect();
        let mut addrs = Vec::new();
        let mut exported = ListeningSockets::default();
        for plan in std::mem::take(&mut self.listeners) {
            let role = listener_role(&plan.name);
            let socks =
                self.sockets(&role, plan.addr, workers).map_err(|e| listen_error(&plan, e))?;
            let plan = Arc::new(plan);
            addrs.push((plan.name.clone(), socks[0].local_addr()?));
            let n = socks.len();
            for s in &socks {
                exported.push(&role, s)?;
            }
            for i in n..workers {
                let dup = socks[i % n].try_clone()?;
                per_worker[i].push((plan.clone(), dup));
            }
            for (j, s) in socks.into_iter().enumerate() {
                per_worker[j % workers].push((plan.clone(), s));
            }
        }
        let (status, admin) = self.side_listeners(&mut exported)?;
        let status_addr = status.as_ref().map(|l| l.local_addr()).transpose()?;
        let admin_addr = admin.as_ref().map(|l| l.local_addr()).transpose()?;
        let handle = ProxyHandle { shared: self.shared.clone() };
        let mut background = Some((std::mem::take(&mut self.discovery), status, admin));
        let mut threads = Vec::new();
        for (i, listeners) in per_worker.into_iter().enumerate() {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            if i == 0 {
                *self.shared.background.lock() = Some((rt.handle().clone(), rx.clone()));
            }
            let (shared, handle, mut rx) = (self.shared.clone(), handle.clone(), rx.clone());
            let background = if i == 0 { background.take() } else { None };
            let t = std::thread::Builder::new().name(format!("slb-l7-w{i}")).spawn(move || {
                crate::upstream::set_worker(i);
                rt.block_on(async move {
                    for (plan, l) in listeners {
                        match TcpListener::from_std(l) {
                            Ok(l) => {
                                drop(tokio::spawn(accept_loop(l, plan, shared.clone(), rx.clone())))
                            }
                            Err(e) => tracing::error!(worker = i, error = %e, "listener"),
                        }
                    }
                    if let Some((discovery, status, admin)) = background {
                        let status = status.and_then(|l| TcpListener::from_std(l).ok());
                        let admin = admin.and_then(|l| TcpListener::from_std(l).ok());
                        drop(spawn_background(&handle, discovery, status, admin, &rx));
                    }
                    let _ = rx.wait_for(|p| *p == Phase::Stopped).await;
                });
            })?;
            threads.push(t);
        }
        Ok(Workers::new(Serving::new(handle, addrs, status_addr, admin_addr, exported), threads))
    }
}

fn listen_error(plan: &ListenerPlan, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("listener {} ({}): {e}", plan.name, plan.addr))
}

/// Health checks and maintenance of every pool, discovery, the status endpoint and the admin API.
fn spawn_background(
    handle: &ProxyHandle,
    discovery: Vec<(String, Arc<dyn Discovery>, Duration)>,
    status: Option<TcpListener>,
    admin: Option<TcpListener>,
    rx: &watch::Receiver<Phase>,
) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    for pool in handle.pools() {
        tasks.extend(spawn_pool_tasks(pool, rx));
    }
    for (name, d, interval) in discovery {
        tasks.push(tokio::spawn(crate::health::run_discovery(
            handle.clone(),
            name,
            d,
            interval,
            rx.clone(),
        )));
    }
    if let Some(l) = status {
        tasks.push(tokio::spawn(crate::status::serve(l, handle.clone(), rx.clone())));
    }
    if let Some(l) = admin {
        tasks.push(tokio::spawn(crate::admin::serve(l, handle.clone(), rx.clone())));
    }
    tasks
}

/// A pool's health checks and maintenance (they end when the proxy stops or the pool is
/// replaced by a reload).
pub(crate) fn spawn_pool_tasks(
    pool: Arc<Pool>,
    rx: &watch::Receiver<Phase>,
) -> Vec<JoinHandle<()>> {
    vec![
        tokio::spawn(crate::health::run_checks(pool.clone(), rx.clone())),
        tokio::spawn(crate::health::run_maintenance(pool, rx.clone())),
    ]
}
