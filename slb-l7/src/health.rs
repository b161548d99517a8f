//! Active health probes (TCP connect; HTTP request with status and body checks) implementing
//! slb-core's [`HealthProbe`], and the tasks that drive a pool's trackers, ejections and
//! discovery.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use slb_core::health::{HealthProbe, ProbeFuture, ProbeResult};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::http::response::parse_response;
use crate::http::{Framing, chunked::ChunkedDecoder};
use crate::pool::{BackendSpec, Pool};
use crate::server::{Phase, ProxyHandle};
use crate::upstream::Connector;

/// Healthy when a TCP connection opens within the timeout.
#[derive(Clone, Debug)]
pub struct TcpProbe {
    /// Connect timeout.
    pub timeout: Duration,
}

impl HealthProbe for TcpProbe {
    fn probe(&self, target: SocketAddr) -> ProbeFuture<'_> {
        Box::pin(async move {
            match tokio::time::timeout(self.timeout, TcpStream::connect(target)).await {
                Ok(Ok(_)) => ProbeResult::Healthy,
                Ok(Err(e)) => ProbeResult::Unhealthy(format!("connect: {e}")),
                Err(_) => ProbeResult::Unhealthy("connect timed out".into()),
            }
        })
    }
}

/// Healthy when an HTTP request gets an expected status (and body) within the timeout.
#[derive(Clone, Debug)]
pub struct HttpProbe {
    /// Whole-probe timeout.
    pub timeout: Duration,
    /// Method.
    pub method: String,
    /// Path.
    pub path: String,
    /// Host field; default: the backend address.
    pub host: Option<String>,
    /// Accepted status ranges (inclusive).
    pub expect_status: Vec<(u16, u16)>,
    /// The body must contain this.
    pub expect_body: Option<String>,
    pub(crate) connector: Option<Connector>,
}

impl HttpProbe {
    /// A probe for `GET path` expecting 200-399.
    pub fn get(path: &str, timeout: Duration) -> Self {
        HttpProbe {
            timeout,
            method: "GET".into(),
            path: path.into(),
            host: None,
            expect_status: vec![(200, 399)],
            expect_body: None,
            connector: None,
        }
    }

    async fn check(&self, target: SocketAddr) -> Result<(), String> {
        let connector = self.connector.clone().unwrap_or(Connector {
            connect_timeout: self.timeout,
            tls: None,
            send_proxy: 0,
        });
        let mut conn =
            connector.connect(target, None).await.map_err(|e| format!("connect: {e}"))?;
        let host = self.host.clone().unwrap_or_else(|| target.to_string());
        let req = format!(
            "{} {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: slb-health\r\nConnection: close\r\n\r\n",
            self.method, self.path
        );
        conn.io.write_all(req.as_bytes()).await.map_err(|e| format!("send: {e}"))?;
        let mut spans = Vec::new();
        let head_request = self.method.eq_ignore_ascii_case("HEAD");
        let head = loop {
            if let Some(h) = parse_response(&conn.rbuf, head_request, 64 * 1024, &mut spans)
                .map_err(|e| e.to_string())?
            {
                break h;
            }
            if conn.io.read_buf(&mut conn.rbuf).await.map_err(|e| format!("receive: {e}"))? == 0 {
                return Err("connection closed before a response".into());
            }
        };
        if !self.expect_status.iter().any(|&(a, b)| (a..=b).contains(&head.status)) {
            return Err(format!("status {}", head.status));
        }
        let Some(want) = &self.expect_body else { return Ok(()) };
        let _ = conn.rbuf.split_to(head.head_len);
        let mut body = Vec::new();
        let mut dec = ChunkedDecoder::new();
        loop {
            match head.framing {
                Framing::Chunked => {
                    let input = &conn.rbuf[..];
                    let n = dec
                        .feed(input, |r| body.extend_from_slice(&input[r]))
                        .map_err(|e| e.to_string())?;
                    let _ = conn.rbuf.split_to(n);
                    if dec.is_done() {
                        break;
                    }
                }
                _ => {
                    body.extend_from_slice(&conn.rbuf);
                    conn.rbuf.clear();
                }
            }
            if let Framing::Length(n) = head.framing {
                if body.len() as u64 >= n {
                    break;
                }
            }
            if head.framing == Framing::None || body.len() > 1 << 20 {
                break;
            }
            if conn.io.read_buf(&mut conn.rbuf).await.map_err(|e| format!("receive: {e}"))? == 0 {
                break;
            }
        }
        if contains(&body, want.as_bytes()) { Ok(()) } else { Err("body did not match".into()) }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

impl HealthProbe for HttpProbe {
    fn probe(&self, target: SocketAddr) -> ProbeFuture<'_> {
        Box::pin(async move {
            match tokio::time::timeout(self.timeout, self.check(target)).await {
                Ok(Ok(())) => ProbeResult::Healthy,
                Ok(Err(e)) => ProbeResult::Unhealthy(e),
                Err(_) => ProbeResult::Unhealthy("timed out".into()),
            }
        })
    }
}

/// Resolves when the proxy stops.
async fn stopped(rx: &mut watch::Receiver<Phase>) {
    let _ = rx.wait_for(|p| *p == Phase::Stopped).await;
}

/// Drives active health checks of `pool` until the proxy stops or a reload replaces the pool.
pub(crate) async fn run_checks(pool: Arc<Pool>, mut shutdown: watch::Receiver<Phase>) {
    let Some(active) = pool.settings.active.clone() else { return };
    while !pool.is_retired() {
        let now = pool.now();
        let (due, next) = pool.due_probes(now);
        if !due.is_empty() {
            let mut set = tokio::task::JoinSet::new();
            for (id, addr) in due {
                let probe = active.probe.clone();
                set.spawn(async move { (id, probe.probe(addr).await) });
            }
            while let Some(r) = set.join_next().await {
                if let Ok((id, result)) = r {
                    let reason = match &result {
                        ProbeResult::Healthy => "",
                        ProbeResult::Unhealthy(r) => r.as_str(),
                    };
                    pool.handle_probe(id, pool.now(), result.is_healthy(), reason);
                }
            }
            continue;
        }
        let wait = next.map_or(Duration::from_secs(1), |n| n - now).min(Duration::from_secs(1));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = pool.health_wake.notified() => {}
            _ = stopped(&mut shutdown) => return,
        }
    }
}

/// Ends ejections when due and closes stale idle connections, until the proxy stops or a
/// reload replaces the pool.
pub(crate) async fn run_maintenance(pool: Arc<Pool>, mut shutdown: watch::Receiver<Phase>) {
    while !pool.is_retired() {
        let next = pool.handle_ejection_timeouts();
        pool.sweep_idle();
        let now = pool.now();
        let wait = next.map_or(Duration::from_secs(2), |n| n - now).min(Duration::from_secs(2));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = pool.changed.notified() => {}
            _ = stopped(&mut shutdown) => return,
        }
    }
}

/// The future [`Discovery::discover`] returns.
pub type DiscoveryFuture<'a> =
    std::pin::Pin<Box<dyn Future<Output = Result<Vec<BackendSpec>, String>> + Send + 'a>>;

/// A source of a pool's backends (DNS, a registry, a file, ...), polled at an interval.
///
/// ```
/// use slb_l7::health::{Discovery, DiscoveryFuture};
/// use slb_l7::pool::BackendSpec;
///
/// /// Backends listed in an environment variable.
/// struct FromEnv;
/// impl Discovery for FromEnv {
///     fn discover(&self) -> DiscoveryFuture<'_> {
///         Box::pin(async {
///             let list = std::env::var("MY_BACKENDS").map_err(|e| e.to_string())?;
///             list.split(',')
///                 .map(|a| a.parse().map(BackendSpec::new).map_err(|e| format!("{a}: {e}")))
///                 .collect()
///         })
///     }
/// }
/// ```
pub trait Discovery: Send + Sync {
    /// The current backends.
    fn discover(&self) -> DiscoveryFuture<'_>;
}

/// Polls `discovery` every `interval` and applies changes to the pool named `pool` (whichever
/// pool has that name after reloads), until the proxy stops.
pub(crate) async fn run_discovery(
    handle: ProxyHandle,
    pool: String,
    discovery: Arc<dyn Discovery>,
    interval: Duration,
    mut shutdown: watch::Receiver<Phase>,
) {
    let mut last: Option<(usize, Vec<BackendSpec>)> = None;
    loop {
        match discovery.discover().await {
            Ok(list) => {
                if let Some(p) = handle.pool(&pool) {
                    // Applied again when the list changed or a reload replaced the pool.
                    let id = Arc::as_ptr(&p) as usize;
                    if last.as_ref() != Some(&(id, list.clone())) {
                        p.set_backends(list.clone());
                        last = Some((id, list));
                    }
                }
            }
            Err(e) => {
                tracing::warn!(%pool, error = %e, "discovery failed; keeping the current backends")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stopped(&mut shutdown) => return,
        }
    }
}
