//! Handles on a built or running proxy: [`ProxyHandle`] (pools, runtime changes, reload, status),
//! [`RunningProxy`] (on the caller's runtime) and [`Workers`] (on its own threads), with
//! graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant as StdInstant};

use slb_core::backend::BackendState;
use tokio::task::JoinHandle;

use super::{Phase, Shared};
use crate::admin::AdminError;
use crate::pool::{BackendSpec, Pool};
use crate::upgrade::ListeningSockets;

/// Counters of one listener (PROXY protocol outcomes).
#[derive(Debug)]
pub struct ListenerStats {
    name: String,
    pub(crate) proxy_v1: AtomicU64,
    pub(crate) proxy_v2: AtomicU64,
    pub(crate) proxy_malformed: AtomicU64,
    pub(crate) proxy_untrusted: AtomicU64,
    pub(crate) proxy_missing: AtomicU64,
}

impl ListenerStats {
    pub(crate) fn new(name: &str) -> Self {
        ListenerStats {
            name: name.into(),
            proxy_v1: AtomicU64::new(0),
            proxy_v2: AtomicU64::new(0),
            proxy_malformed: AtomicU64::new(0),
            proxy_untrusted: AtomicU64::new(0),
            proxy_missing: AtomicU64::new(0),
        }
    }

    /// The listener's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Connections that came with a valid PROXY header, (v1, v2).
    pub fn proxy_accepted(&self) -> (u64, u64) {
        (self.proxy_v1.load(Ordering::Relaxed), self.proxy_v2.load(Ordering::Relaxed))
    }

    /// Connections closed for a malformed PROXY header.
    pub fn proxy_malformed(&self) -> u64 {
        self.proxy_malformed.load(Ordering::Relaxed)
    }

    /// Connections closed for a PROXY header from a peer outside `trusted_proxies`.
    pub fn proxy_untrusted(&self) -> u64 {
        self.proxy_untrusted.load(Ordering::Relaxed)
    }

    /// Connections closed because a trusted peer sent no PROXY header.
    pub fn proxy_missing(&self) -> u64 {
        self.proxy_missing.load(Ordering::Relaxed)
    }
}

/// Access to a proxy's pools, for status, runtime changes and reloads.
#[derive(Clone)]
pub struct ProxyHandle {
    pub(crate) shared: Arc<Shared>,
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

    fn pool_or_err(&self, name: &str) -> Result<Arc<Pool>, AdminError> {
        self.pool(name).ok_or_else(|| AdminError::NoSuchPool(name.into()))
    }

    /// Adds a backend to `pool`.
    pub fn add_backend(&self, pool: &str, spec: BackendSpec) -> Result<(), AdminError> {
        self.pool_or_err(pool)?.add_backend(spec)
    }

    /// Removes the backend `addr` from `pool`.
    pub fn remove_backend(&self, pool: &str, addr: SocketAddr) -> Result<(), AdminError> {
        self.pool_or_err(pool)?.remove_backend(addr)
    }

    /// Drains the backend `addr` of `pool`: no new requests (sticky clients move on), requests
    /// in flight finish.
    pub fn drain_backend(&self, pool: &str, addr: SocketAddr) -> Result<(), AdminError> {
        self.pool_or_err(pool)?.set_backend_state(addr, BackendState::Draining)
    }

    /// Enables (or disables) the backend `addr` of `pool`.
    pub fn enable_backend(
        &self,
        pool: &str,
        addr: SocketAddr,
        enabled: bool,
    ) -> Result<(), AdminError> {
        let state = if enabled { BackendState::Up } else { BackendState::Disabled };
        self.pool_or_err(pool)?.set_backend_state(addr, state)
    }

    /// Sets the weight of the backend `addr` of `pool`.
    pub fn set_weight(&self, pool: &str, addr: SocketAddr, weight: u32) -> Result<(), AdminError> {
        self.pool_or_err(pool)?.set_backend_weight(addr, weight)
    }

    /// The status page (JSON).
    pub fn status_json(&self) -> String {
        crate::status::status_json(&self.pools())
    }

    /// Prometheus metrics (text exposition format).
    pub fn metrics_text(&self) -> String {
        let reg =
            crate::metrics::registry(self.shared.pools.clone(), self.shared.listener_stats.clone());
        let mut s = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut s, &reg);
        s
    }

    /// PROXY protocol counters of every listener.
    pub fn listener_stats(&self) -> Vec<Arc<ListenerStats>> {
        self.shared.listener_stats.clone()
    }

    /// Client connections open.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// The key that signs sticky cookies.
    pub(crate) fn sticky_key(&self) -> &crate::sticky::StickyKey {
        &self.shared.ctx.key
    }

    /// The admin API's bearer token, if one is configured.
    pub(crate) fn admin_token(&self) -> Option<String> {
        self.shared.current.lock().config.admin.token.clone()
    }

    /// Stops accepting: listeners close (or stay with the process they were handed to), idle
    /// connections close, requests in flight finish with `Connection: close`.
    pub(crate) fn stop_accepting(&self) {
        self.shared.phase.send_if_modified(|p| {
            if *p == Phase::Running {
                *p = Phase::Draining;
                true
            } else {
                false
            }
        });
    }

    fn stop(&self) {
        self.shared.phase.send_replace(Phase::Stopped);
    }

    /// Waits (polling every 10 ms) until no client connection is open or `timeout` passed;
    /// returns the connections still open.
    fn wait_drained_blocking(&self, timeout: Duration) -> usize {
        let deadline = StdInstant::now() + timeout;
        loop {
            let n = self.connections();
            if n == 0 || StdInstant::now() >= deadline {
                return n;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    async fn wait_drained(&self, timeout: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let n = self.connections();
            if n == 0 || tokio::time::Instant::now() >= deadline {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// What a started proxy serves on: its listeners' addresses, the status and admin endpoints,
/// the listening sockets (for an upgrade) and the handle to its pools. [`Workers`] and
/// [`RunningProxy`] dereference to it.
#[derive(Debug)]
pub struct Serving {
    handle: ProxyHandle,
    addrs: Vec<(String, SocketAddr)>,
    status_addr: Option<SocketAddr>,
    admin_addr: Option<SocketAddr>,
    sockets: ListeningSockets,
}

impl Serving {
    pub(crate) fn new(
        handle: ProxyHandle,
        addrs: Vec<(String, SocketAddr)>,
        status_addr: Option<SocketAddr>,
        admin_addr: Option<SocketAddr>,
        sockets: ListeningSockets,
    ) -> Self {
        Serving { handle, addrs, status_addr, admin_addr, sockets }
    }

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

    /// The admin API's bound address.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// A handle to the pools.
    pub fn handle(&self) -> ProxyHandle {
        self.handle.clone()
    }

    /// The listening sockets, for handing over to a new process
    /// ([`UpgradeServer`](crate::upgrade::UpgradeServer)).
    pub fn sockets(&self) -> &ListeningSockets {
        &self.sockets
    }

    /// Stops accepting; the connections in progress go on.
    pub fn stop_accepting(&self) {
        self.handle.stop_accepting();
    }

    /// The first step of a graceful shutdown: stops accepting and closes our duplicates of the
    /// listening sockets, so that (unless a new process took them over) new connections are
    /// refused instead of queueing where nobody accepts.
    fn close_listeners(&mut self) {
        self.handle.stop_accepting();
        self.sockets = ListeningSockets::default();
    }
}

/// A proxy running on its own worker threads ([`Proxy::start_workers`](crate::Proxy::start_workers)).
#[derive(Debug)]
pub struct Workers {
    serving: Serving,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl std::ops::Deref for Workers {
    type Target = Serving;
    fn deref(&self) -> &Serving {
        &self.serving
    }
}

impl Workers {
    pub(crate) fn new(serving: Serving, threads: Vec<std::thread::JoinHandle<()>>) -> Self {
        Workers { serving, threads }
    }

    /// Graceful shutdown: stops accepting, lets requests in flight finish for up to `timeout`,
    /// then stops every worker. Returns the connections that were still open.
    pub fn shutdown_graceful(mut self, timeout: Duration) -> usize {
        self.serving.close_listeners();
        let left = self.serving.handle.wait_drained_blocking(timeout);
        self.shutdown();
        left
    }

    /// Stops every worker at once (their runtimes end, dropping open connections) and waits
    /// for them.
    pub fn shutdown(self) {
        self.serving.handle.stop();
        drop(self.serving);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// A proxy that is serving on the caller's runtime ([`Proxy::start`](crate::Proxy::start)).
#[derive(Debug)]
pub struct RunningProxy {
    serving: Serving,
    tasks: Vec<JoinHandle<()>>,
}

impl std::ops::Deref for RunningProxy {
    type Target = Serving;
    fn deref(&self) -> &Serving {
        &self.serving
    }
}

impl RunningProxy {
    pub(crate) fn new(serving: Serving, tasks: Vec<JoinHandle<()>>) -> Self {
        RunningProxy { serving, tasks }
    }

    /// Graceful shutdown: stops accepting, lets requests in flight finish for up to `timeout`,
    /// then stops. Returns the connections that were still open.
    pub async fn shutdown_graceful(mut self, timeout: Duration) -> usize {
        self.serving.close_listeners();
        let left = self.serving.handle.wait_drained(timeout).await;
        self.shutdown().await;
        left
    }

    /// Stops accepting and stops background tasks (connections in progress finish on their own).
    pub async fn shutdown(self) {
        self.serving.handle.stop();
        drop(self.serving);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}
