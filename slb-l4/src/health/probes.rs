//! The I/O half of health checking (feature `io`): TCP-connect and HTTP probes on tokio, and a
//! thread that runs a [`Monitor`]'s probes and reports flips.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::time::Duration;

use slb_core::health::{HealthProbe, ProbeFuture, ProbeResult};
use slb_core::time::Clock;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{HealthEvent, Monitor};

/// Healthy when a TCP connection to the server opens within the timeout.
#[derive(Clone, Copy, Debug)]
pub struct TcpConnectProbe {
    /// Connect timeout.
    pub timeout: Duration,
}

impl HealthProbe for TcpConnectProbe {
    fn probe(&self, target: SocketAddr) -> ProbeFuture<'_> {
        let t = self.timeout;
        Box::pin(async move {
            match tokio::time::timeout(t, TcpStream::connect(target)).await {
                Ok(Ok(_)) => ProbeResult::Healthy,
                Ok(Err(e)) => ProbeResult::Unhealthy(format!("connect: {e}")),
                Err(_) => ProbeResult::Unhealthy("connect timeout".into()),
            }
        })
    }
}

/// Healthy when `GET path` answers with a status in `expect` within the timeout.
#[derive(Clone, Debug)]
pub struct HttpProbe {
    /// Request path.
    pub path: String,
    /// Host header (default: the target address).
    pub host: Option<String>,
    /// Accepted status codes (default 200-399).
    pub expect: std::ops::RangeInclusive<u16>,
    /// Timeout for the whole exchange.
    pub timeout: Duration,
}

impl HttpProbe {
    /// `GET path`, expecting 2xx or 3xx.
    pub fn new(path: &str, timeout: Duration) -> Self {
        HttpProbe { path: path.into(), host: None, expect: 200..=399, timeout }
    }
}

/// The status code of an HTTP/1.x status line at the start of `head`.
fn status_code(head: &[u8]) -> Option<u16> {
    let line = head.split(|&b| b == b'\n').next()?;
    let mut parts = line.split(|&b| b == b' ');
    let version = parts.next()?;
    if !version.starts_with(b"HTTP/1.") {
        return None;
    }
    let code = parts.next()?;
    std::str::from_utf8(code).ok()?.trim().parse().ok()
}

impl HealthProbe for HttpProbe {
    fn probe(&self, target: SocketAddr) -> ProbeFuture<'_> {
        Box::pin(async move {
            let exchange = async {
                let mut s = TcpStream::connect(target).await?;
                let host = self.host.clone().unwrap_or_else(|| target.to_string());
                let req = format!(
                    "GET {} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: slb-health\r\nConnection: close\r\n\r\n",
                    self.path
                );
                s.write_all(req.as_bytes()).await?;
                let mut head = Vec::with_capacity(256);
                let mut buf = [0u8; 256];
                while !head.contains(&b'\n') && head.len() < 4096 {
                    let n = s.read(&mut buf).await?;
                    if n == 0 {
                        break;
                    }
                    head.extend_from_slice(&buf[..n]);
                }
                Ok::<_, std::io::Error>(head)
            };
            match tokio::time::timeout(self.timeout, exchange).await {
                Ok(Ok(head)) => match status_code(&head) {
                    Some(c) if self.expect.contains(&c) => ProbeResult::Healthy,
                    Some(c) => ProbeResult::Unhealthy(format!("status {c}")),
                    None => ProbeResult::Unhealthy("no HTTP status line".into()),
                },
                Ok(Err(e)) => ProbeResult::Unhealthy(format!("http: {e}")),
                Err(_) => ProbeResult::Unhealthy("http timeout".into()),
            }
        })
    }
}

/// Runs `monitor`'s probes with `probe` on a thread of its own (a single-threaded tokio runtime)
/// until `stop` is set, sending every status flip to `events`. The thread is created in the
/// caller's network namespace, so probes leave from there.
pub fn spawn_prober(
    mut monitor: Monitor,
    probe: Arc<dyn HealthProbe>,
    clock: Clock,
    events: Sender<HealthEvent>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    std::thread::Builder::new().name("slb-health".into()).spawn(move || {
        rt.block_on(async move {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, bool)>();
            // The driver's clock: this thread reads time, the monitor does not.
            #[allow(clippy::disallowed_methods)]
            let now = || clock.at(std::time::Instant::now());
            while !stop.load(Ordering::Relaxed) {
                for (i, target) in monitor.due(now()) {
                    let (p, tx) = (Arc::clone(&probe), tx.clone());
                    tokio::spawn(async move {
                        let ok = p.probe(target).await.is_healthy();
                        let _ = tx.send((i, ok));
                    });
                }
                let wait = monitor
                    .poll_timeout()
                    .map_or(Duration::from_millis(100), |t| t.saturating_duration_since(now()))
                    .min(Duration::from_millis(100));
                if let Ok(Some((i, ok))) = tokio::time::timeout(wait, rx.recv()).await
                    && let Some(ev) = monitor.handle_result(now(), i, ok)
                    && events.send(ev).is_err()
                {
                    return;
                }
            }
        });
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_parse() {
        assert_eq!(status_code(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(status_code(b"HTTP/1.0 503 Service Unavailable\r\n"), Some(503));
        assert_eq!(status_code(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(status_code(b""), None);
    }

    #[tokio::test]
    async fn probes_against_real_local_sockets() {
        use tokio::net::TcpListener;
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = l.accept().await else { return };
                let mut buf = [0u8; 512];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let code = if buf[..n].starts_with(b"GET /ok ") { "200 OK" } else { "500 Oops" };
                let _ = s.write_all(format!("HTTP/1.0 {code}\r\n\r\n").as_bytes()).await;
            }
        });
        let t = Duration::from_secs(2);
        assert!(TcpConnectProbe { timeout: t }.probe(addr).await.is_healthy());
        assert!(HttpProbe::new("/ok", t).probe(addr).await.is_healthy());
        assert_eq!(
            HttpProbe::new("/bad", t).probe(addr).await,
            ProbeResult::Unhealthy("status 500".into())
        );
        // A port nobody listens on (bound and dropped).
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        assert!(!TcpConnectProbe { timeout: t }.probe(closed).await.is_healthy());
    }
}
