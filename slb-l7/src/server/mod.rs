//! Building a proxy from a [`Config`] (plus an application's own probes, schedulers, discovery
//! and certificates) and running it on the caller's tokio runtime.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::pki_types::ServerName;
use slb_core::backend::{BackendState, SetOptions};
use slb_core::flow::HashKey;
use slb_core::health::{HealthConfig, HealthProbe, HealthStatus, OutlierConfig};
use slb_core::sched::{SchedulerConfig, SchedulerKind};
use slb_core::time::Clock;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{Config, ConfigError, HeaderRulesConfig, PoolConfig};
use crate::health::{Discovery, HttpProbe, TcpProbe};
use crate::http::headers::{ForwardedFor, HeaderRules};
use crate::http::request::RequestLimits;
use crate::listener::{ListenerPlan, accept_loop, bind, bind_std};
use crate::pool::{
    ActiveHealth, BackendSpec, HashSource, Pool, PoolSettings, RetryPolicy, SchedulerFactory,
};
use crate::proxy::{Active, Settings};
use crate::route::{Route, Router, Vhost};
use crate::tls::ServerCert;
use crate::upstream::{Connector, KeepAlive, client_tls};

/// State shared by every connection of a proxy.
pub(crate) struct Shared {
    pub(crate) active: ArcSwap<Active>,
    pub(crate) pools: Arc<ArcSwap<Vec<Arc<Pool>>>>,
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

    /// Validates and builds the proxy (no socket is opened yet).
    pub fn build(self) -> Result<Proxy, ConfigError> {
        let mut cfg = self.config;
        // A listener whose certificates all come from the builder is still a TLS listener.
        for l in &mut cfg.listeners {
            if self.certificates.contains_key(&l.name) && l.tls.is_none() {
                l.tls = Some(Default::default());
            }
        }
        let mut check = cfg.clone();
        for l in &mut check.listeners {
            if self.certificates.contains_key(&l.name) {
                if let Some(t) = &mut l.tls {
                    t.certificates.push(Default::default());
                }
            }
        }
        check.validate()?;
        let clock = Clock::with_origin(std::time::Instant::now());
        let hash_key = self.hash_key.unwrap_or_default();
        // One idle-connection shard per possible worker runtime (see `start_workers`).
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let shards = cfg.server.workers.max(cpus);
        let mut pools = HashMap::new();
        for (name, pc) in &cfg.pools {
            let pool =
                build_pool(name, pc, &self.probes, &self.schedulers, hash_key, clock, shards)?;
            pools.insert(name.clone(), pool);
        }
        let router = build_router(&cfg, &pools);
        let settings = settings_of(&cfg);
        let mut listeners = Vec::new();
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
            listeners.push(ListenerPlan {
                name: l.name.clone(),
                addr,
                tls,
                http2: l.http2,
                max_connections: l.max_connections,
            });
        }
        let status = match &cfg.status.address {
            Some(a) => Some(
                a.parse()
                    .map_err(|_| ConfigError::one("status.address", "invalid address".into()))?,
            ),
            None => None,
        };
        for (p, _, _) in &self.discovery {
            if !pools.contains_key(p) {
                return Err(ConfigError::one("discovery", format!("no pool named {p:?}")));
            }
        }
        let pool_list: Vec<Arc<Pool>> =
            cfg.pools.keys().filter_map(|n| pools.get(n).cloned()).collect();
        Ok(Proxy {
            shared: Arc::new(Shared {
                active: ArcSwap::from_pointee(Active { router, settings }),
                pools: Arc::new(ArcSwap::from_pointee(pool_list)),
            }),
            listeners,
            status,
            discovery: self.discovery,
        })
    }
}

fn rules(c: &HeaderRulesConfig) -> HeaderRules {
    HeaderRules {
        remove: c
            .remove
            .iter()
            .map(|n| n.to_ascii_lowercase().into_bytes().into_boxed_slice())
            .collect(),
        add: c.add.iter().map(|(n, v)| (n.as_str().into(), v.as_str().into())).collect(),
    }
}

fn settings_of(cfg: &Config) -> Settings {
    Settings {
        limits: RequestLimits {
            max_head: cfg.limits.max_header_bytes.0 as usize,
            max_headers: cfg.limits.max_headers,
            max_uri: cfg.limits.max_uri_bytes.0 as usize,
            max_body: cfg.limits.max_body_bytes.0,
        },
        header_timeout: cfg.timeouts.client_header.0,
        body_timeout: cfg.timeouts.client_body.0,
        keepalive_timeout: cfg.timeouts.keepalive.0,
        send_timeout: cfg.timeouts.send.0,
        forwarded_for: if cfg.forwarded.x_forwarded_for == "replace" {
            ForwardedFor::Replace
        } else {
            ForwardedFor::Append
        },
    }
}

fn build_router(cfg: &Config, pools: &HashMap<String, Arc<Pool>>) -> Router {
    let route = |pool: &str, req: HeaderRules, resp: HeaderRules| {
        pools
            .get(pool)
            .map(|p| Arc::new(Route { pool: p.clone(), request_rules: req, response_rules: resp }))
    };
    let mut r = Router::default();
    for (v, vc) in cfg.vhosts.iter().enumerate() {
        let vreq = rules(&vc.request_headers);
        let vresp = rules(&vc.response_headers);
        let mut vh = Vhost::default();
        for l in &vc.locations {
            let Some(rt) = route(
                &l.pool,
                vreq.merged(&rules(&l.request_headers)),
                vresp.merged(&rules(&l.response_headers)),
            ) else {
                continue;
            };
            if let Some(e) = &l.exact {
                vh.exact.insert(e.as_bytes().to_vec(), rt);
            } else if let Some(p) = &l.prefix {
                vh.prefix.push((p.as_bytes().to_vec(), rt));
            } else if let Some(re) = &l.regex {
                if let Ok(re) = regex::bytes::Regex::new(re) {
                    vh.regex.push((re, rt));
                }
            }
        }
        vh.prefix.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        vh.fallback = vc.pool.as_deref().and_then(|p| route(p, vreq.clone(), vresp.clone()));
        for h in &vc.hosts {
            let h = h.to_ascii_lowercase();
            if h == "*" {
                r.default_vhost.get_or_insert(v);
            } else if let Some(suffix) = h.strip_prefix('*') {
                r.wildcard_hosts.push((suffix.as_bytes().to_vec(), v));
            } else {
                r.exact_hosts.entry(h.into_bytes()).or_insert(v);
            }
        }
        r.vhosts.push(vh);
    }
    r.wildcard_hosts.sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
    r.default_route = cfg
        .default_pool
        .as_deref()
        .and_then(|p| route(p, HeaderRules::default(), HeaderRules::default()));
    r
}

fn backend_specs(pc: &PoolConfig) -> Vec<BackendSpec> {
    pc.backends
        .iter()
        .filter_map(|b| {
            let t = b.table();
            let addr = t.address.parse().ok()?;
            let state = match t.state.as_str() {
                "draining" => BackendState::Draining,
                "disabled" => BackendState::Disabled,
                _ => BackendState::Up,
            };
            Some(BackendSpec { addr, weight: t.weight, state })
        })
        .collect()
}

fn build_pool(
    name: &str,
    pc: &PoolConfig,
    probes: &HashMap<String, Arc<dyn HealthProbe>>,
    schedulers: &HashMap<String, Arc<dyn SchedulerFactory>>,
    hash_key: HashKey,
    clock: Clock,
    shards: usize,
) -> Result<Arc<Pool>, ConfigError> {
    let f = format!("pools.{name}");
    let kind = SchedulerKind::from_str(&pc.scheduler)
        .map_err(|e| ConfigError::one(&format!("{f}.scheduler"), e.to_string()))?;
    let (scheduler, needs_hash): (Arc<dyn SchedulerFactory>, bool) = match schedulers.get(name) {
        Some(s) => (s.clone(), true),
        None => (Arc::new(SchedulerConfig { kind, seed: pc.seed, hash_key }), kind.needs_key()),
    };
    let tls = if pc.tls.enabled {
        let cfg = client_tls(pc.tls.ca_file.as_deref(), pc.tls.verify)
            .map_err(|e| ConfigError::one(&format!("{f}.tls"), e))?;
        let name =
            match &pc.tls.server_name {
                Some(n) => Some(ServerName::try_from(n.clone()).map_err(|e| {
                    ConfigError::one(&format!("{f}.tls.server_name"), e.to_string())
                })?),
                None => None,
            };
        Some((tokio_rustls::TlsConnector::from(cfg), name))
    } else {
        None
    };
    let connector = Connector { connect_timeout: pc.timeouts.connect.0, tls };
    let h = &pc.health;
    let health_config = HealthConfig {
        interval: h.interval.0,
        fast_interval: h.fast_interval.0,
        down_interval: h.down_interval.0,
        timeout: h.timeout.0,
        rise: h.rise,
        fall: h.fall,
        initial: if h.start == "up" { HealthStatus::Up } else { HealthStatus::Down },
        jitter: h.jitter,
    };
    let active = match (probes.get(name), h.kind.as_str()) {
        (Some(p), _) => {
            Some(ActiveHealth { config: health_config, probe: p.clone(), kind: "custom" })
        }
        (None, "tcp") => Some(ActiveHealth {
            config: health_config,
            probe: Arc::new(TcpProbe { timeout: h.timeout.0 }),
            kind: "tcp",
        }),
        (None, "http") => {
            let probe = HttpProbe {
                timeout: h.timeout.0,
                method: h.method.clone(),
                path: h.path.clone(),
                host: h.host.clone(),
                expect_status: h
                    .expect_status
                    .iter()
                    .filter_map(|s| crate::config::parse_status(s))
                    .collect(),
                expect_body: h.expect_body.clone(),
                connector: Some(Connector { connect_timeout: h.timeout.0, ..connector.clone() }),
            };
            Some(ActiveHealth { config: health_config, probe: Arc::new(probe), kind: "http" })
        }
        _ => None,
    };
    let settings = PoolSettings {
        scheduler,
        needs_hash,
        hash: HashSource::parse(&pc.hash).unwrap_or(HashSource::ClientIp),
        hash_key,
        set_options: SetOptions {
            panic_threshold: (pc.panic_threshold > 0.0).then_some(pc.panic_threshold),
            slow_start: (!pc.slow_start.0.is_zero()).then_some(pc.slow_start.0),
        },
        host: pc.host.clone(),
        retry: RetryPolicy::from(&pc.retry),
        passive: pc.passive.enabled.then_some(OutlierConfig {
            consecutive_failures: pc.passive.consecutive_failures,
            base_ejection: pc.passive.base_ejection.0,
            max_ejection: pc.passive.max_ejection.0,
            max_ejection_percent: pc.passive.max_ejection_percent,
        }),
        count_5xx: pc.passive.count_5xx,
        connector,
        keepalive: KeepAlive {
            shards,
            max_idle: pc.keepalive.max_idle_per_backend,
            idle_timeout: pc.keepalive.idle_timeout.0,
            max_requests: pc.keepalive.max_requests,
        },
        response_header_timeout: pc.timeouts.response_header.0,
        read_timeout: pc.timeouts.read.0,
        active,
    };
    Ok(Pool::new(name.to_owned(), settings, backend_specs(pc), clock))
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
    discovery: Vec<(String, Arc<dyn Discovery>, Duration)>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy").field("listeners", &self.listeners.len()).finish()
    }
}

impl Proxy {
    /// Validates `config` and builds the proxy.
    pub fn from_config(config: Config) -> Result<Proxy, ConfigError> {
        ProxyBuilder::new(config).build()
    }

    /// A builder, for plugging in probes, schedulers, discovery and certificates.
    pub fn builder(config: Config) -> ProxyBuilder {
        ProxyBuilder::new(config)
    }

    /// A handle to the pools (usable before and after [`Proxy::start`]).
    pub fn handle(&self) -> ProxyHandle {
        ProxyHandle { shared: self.shared.clone() }
    }

    /// Binds every listener and starts serving on the current tokio runtime (any flavour); the
    /// upstream keep-alive pool is shared by all of its threads.
    pub async fn start(self) -> io::Result<RunningProxy> {
        let (tx, rx) = watch::channel(false);
        let mut tasks = Vec::new();
        let mut addrs = Vec::new();
        for plan in self.listeners {
            let l = bind(plan.addr).map_err(|e| listen_error(&plan, e))?;
            addrs.push((plan.name.clone(), l.local_addr()?));
            tasks.push(tokio::spawn(accept_loop(
                l,
                Arc::new(plan),
                self.shared.clone(),
                rx.clone(),
            )));
        }
        let status = match self.status {
            Some(a) => Some(bind(a)?),
            None => None,
        };
        let status_addr = status.as_ref().map(|l| l.local_addr()).transpose()?;
        let handle = ProxyHandle { shared: self.shared.clone() };
        tasks.extend(spawn_background(&handle, self.discovery, status, &rx));
        Ok(RunningProxy { handle, addrs, status_addr, shutdown: tx, tasks })
    }

    /// Starts `workers` threads, each with its own current-thread tokio runtime and its own
    /// SO_REUSEPORT socket per listener (the kernel spreads connections over them), like nginx
    /// worker processes. Routing, pools, health and counters are shared; each backend's idle
    /// keep-alive connections are kept per worker, so that a socket stays on the reactor that
    /// registered it. Health checks, discovery and the status endpoint run on worker 0.
    pub fn start_workers(self, workers: usize) -> io::Result<Workers> {
        let workers = workers.max(1);
        let (tx, rx) = watch::channel(false);
        let mut per_worker: Vec<Vec<(Arc<ListenerPlan>, std::net::TcpListener)>> =
            (0..workers).map(|_| Vec::new()).collect();
        let mut addrs = Vec::new();
        for plan in self.listeners {
            let plan = Arc::new(plan);
            let first = bind_std(plan.addr, true).map_err(|e| listen_error(&plan, e))?;
            let actual = first.local_addr()?;
            addrs.push((plan.name.clone(), actual));
            per_worker[0].push((plan.clone(), first));
            for socks in per_worker.iter_mut().skip(1) {
                socks.push((
                    plan.clone(),
                    bind_std(actual, true).map_err(|e| listen_error(&plan, e))?,
                ));
            }
        }
        let status = self.status.map(|a| bind_std(a, false)).transpose()?;
        let status_addr = status.as_ref().map(|l| l.local_addr()).transpose()?;
        let handle = ProxyHandle { shared: self.shared.clone() };
        let mut background = Some((self.discovery, status));
        let mut threads = Vec::new();
        for (i, listeners) in per_worker.into_iter().enumerate() {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
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
                    if let Some((discovery, status)) = background {
                        let status = status.and_then(|l| TcpListener::from_std(l).ok());
                        drop(spawn_background(&handle, discovery, status, &rx));
                    }
                    let _ = rx.wait_for(|stop| *stop).await;
                });
            })?;
            threads.push(t);
        }
        Ok(Workers { handle, addrs, status_addr, shutdown: tx, threads })
    }
}

fn listen_error(plan: &ListenerPlan, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("listener {} ({}): {e}", plan.name, plan.addr))
}

/// Health checks and maintenance of every pool, discovery, and the status endpoint.
fn spawn_background(
    handle: &ProxyHandle,
    discovery: Vec<(String, Arc<dyn Discovery>, Duration)>,
    status: Option<TcpListener>,
    rx: &watch::Receiver<bool>,
) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    for pool in handle.pools() {
        tasks.push(tokio::spawn(crate::health::run_checks(pool.clone(), rx.clone())));
        tasks.push(tokio::spawn(crate::health::run_maintenance(pool, rx.clone())));
    }
    for (name, d, interval) in discovery {
        if let Some(pool) = handle.pool(&name) {
            tasks.push(tokio::spawn(crate::health::run_discovery(pool, d, interval, rx.clone())));
        }
    }
    if let Some(l) = status {
        tasks.push(tokio::spawn(crate::status::serve(l, handle.clone(), rx.clone())));
    }
    tasks
}

/// A proxy running on its own worker threads ([`Proxy::start_workers`]).
#[derive(Debug)]
pub struct Workers {
    handle: ProxyHandle,
    addrs: Vec<(String, SocketAddr)>,
    status_addr: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Workers {
    /// The bound address of the listener named `name`.
    pub fn local_addr(&self, name: &str) -> Option<SocketAddr> {
        self.addrs.iter().find(|(n, _)| n == name).map(|(_, a)| *a)
    }

    /// Bound addresses of all listeners, in configuration order.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.addrs.iter().map(|(_, a)| *a).collect()
    }

    /// The status endpoint's bound address.
    pub fn status_addr(&self) -> Option<SocketAddr> {
        self.status_addr
    }

    /// A handle to the pools.
    pub fn handle(&self) -> ProxyHandle {
        self.handle.clone()
    }

    /// Stops every worker (their runtimes end, dropping open connections) and waits for them.
    pub fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// A proxy that is serving.
#[derive(Debug)]
pub struct RunningProxy {
    handle: ProxyHandle,
    addrs: Vec<(String, SocketAddr)>,
    status_addr: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningProxy {
    /// The bound address of the listener named `name`.
    pub fn local_addr(&self, name: &str) -> Option<SocketAddr> {
        self.addrs.iter().find(|(n, _)| n == name).map(|(_, a)| *a)
    }

    /// Bound addresses of all listeners, in configuration order.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.addrs.iter().map(|(_, a)| *a).collect()
    }

    /// The status endpoint's bound address.
    pub fn status_addr(&self) -> Option<SocketAddr> {
        self.status_addr
    }

    /// A handle to the pools.
    pub fn handle(&self) -> ProxyHandle {
        self.handle.clone()
    }

    /// Stops accepting and stops background tasks (connections in progress finish on their own).
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Access to a proxy's pools, for status and runtime changes.
#[derive(Clone)]
pub struct ProxyHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ProxyHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyHandle").finish()
    }
}

impl ProxyHandle {
    /// The pool named `name`.
    pub fn pool(&self, name: &str) -> Option<Arc<Pool>> {
        self.shared.pools.load().iter().find(|p| p.name() == name).cloned()
    }

    /// All pools.
    pub fn pools(&self) -> Vec<Arc<Pool>> {
        self.shared.pools.load().to_vec()
    }

    /// The status page (JSON).
    pub fn status_json(&self) -> String {
        crate::status::status_json(&self.pools())
    }

    /// Prometheus metrics (text exposition format).
    pub fn metrics_text(&self) -> String {
        let reg = crate::metrics::registry(self.shared.pools.clone());
        let mut s = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut s, &reg);
        s
    }
}
