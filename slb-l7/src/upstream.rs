//! Upstream connections: TCP or TLS streams to backends, and the idle keep-alive pool each
//! backend keeps (shared by all worker threads; one short mutex hold per checkout/checkin).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant as StdInstant};

use bytes::BytesMut;
use parking_lot::Mutex;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A stream to a backend.
#[derive(Debug)]
pub(crate) enum UpIo {
    Tcp(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl UpIo {
    fn tcp(&self) -> &TcpStream {
        match self {
            UpIo::Tcp(s) => s,
            UpIo::Tls(s) => s.get_ref().0,
        }
    }
}

impl AsyncRead for UpIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpIo::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            UpIo::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpIo::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            UpIo::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpIo::Tcp(s) => Pin::new(s).poll_flush(cx),
            UpIo::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpIo::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            UpIo::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A connection to a backend, with its read buffer.
#[derive(Debug)]
pub(crate) struct UpConn {
    pub(crate) io: UpIo,
    pub(crate) rbuf: BytesMut,
    pub(crate) requests: u64,
    idle_since: StdInstant,
}

impl UpConn {
    fn new(io: UpIo) -> Self {
        UpConn {
            io,
            rbuf: BytesMut::with_capacity(8 * 1024),
            requests: 0,
            idle_since: StdInstant::now(),
        }
    }

    /// True when the socket became readable while idle: the backend closed it (or sent bytes
    /// nobody asked for). Uses the reactor's readiness, no system call.
    fn looks_dead(&self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        matches!(self.io.tcp().poll_read_ready(&mut cx), Poll::Ready(_))
    }
}

/// How to reach backends of a pool.
#[derive(Clone)]
pub(crate) struct Connector {
    pub(crate) connect_timeout: Duration,
    pub(crate) tls: Option<(tokio_rustls::TlsConnector, Option<ServerName<'static>>)>,
    /// PROXY protocol version to send first (0: none).
    pub(crate) send_proxy: u8,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("connect_timeout", &self.connect_timeout)
            .field("tls", &self.tls.is_some())
            .field("send_proxy", &self.send_proxy)
            .finish()
    }
}

/// Why a connection could not be made.
#[derive(Debug)]
pub(crate) enum ConnectError {
    Timeout,
    Io(io::Error),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Timeout => f.write_str("timed out"),
            ConnectError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl Connector {
    /// Opens a new connection to `addr` (TCP, a PROXY header for `client` (from, to) if the pool
    /// sends one, then TLS if configured) within the connect timeout. Without a client (health
    /// probes) the PROXY header says LOCAL (v2) or UNKNOWN (v1).
    pub(crate) async fn connect(
        &self,
        addr: SocketAddr,
        client: Option<(SocketAddr, SocketAddr)>,
    ) -> Result<UpConn, ConnectError> {
        let fut = async {
            let mut tcp = TcpStream::connect(addr).await.map_err(ConnectError::Io)?;
            let _ = tcp.set_nodelay(true);
            if self.send_proxy != 0 {
                let mut header = Vec::with_capacity(64);
                match (client, self.send_proxy) {
                    (Some((from, to)), 1) => crate::proxy_protocol::write_v1(from, to, &mut header),
                    (Some((from, to)), _) => crate::proxy_protocol::write_v2(from, to, &mut header),
                    (None, 1) => header.extend_from_slice(b"PROXY UNKNOWN\r\n"),
                    (None, _) => {
                        header.extend_from_slice(&crate::proxy_protocol::V2_SIGNATURE);
                        header.extend_from_slice(&[0x20, 0x00, 0, 0]);
                    }
                }
                tokio::io::AsyncWriteExt::write_all(&mut tcp, &header)
                    .await
                    .map_err(ConnectError::Io)?;
            }
            match &self.tls {
                None => Ok(UpConn::new(UpIo::Tcp(tcp))),
                Some((connector, name)) => {
                    let name =
                        name.clone().unwrap_or_else(|| ServerName::IpAddress(addr.ip().into()));
                    let tls = connector.connect(name, tcp).await.map_err(ConnectError::Io)?;
                    Ok(UpConn::new(UpIo::Tls(Box::new(tls))))
                }
            }
        };
        match tokio::time::timeout(self.connect_timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(ConnectError::Timeout),
        }
    }
}

thread_local! {
    /// Index of the per-worker runtime this thread runs (0 outside [`crate::Proxy::start_workers`]).
    static WORKER: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Marks the current thread as worker `i` (per-worker runtimes).
pub(crate) fn set_worker(i: usize) {
    WORKER.with(|w| w.set(i));
}

/// Idle keep-alive connections of one backend, shared by every worker thread.
///
/// The pool is split into shards, one per worker runtime: a socket stays with the reactor that
/// registered it (a task on another current-thread runtime could use it, but every readiness event
/// would then cross threads). On a multi-thread runtime all threads are worker 0 and share one
/// shard.
#[derive(Debug)]
pub(crate) struct IdlePool {
    shards: Box<[Mutex<Vec<UpConn>>]>,
}

impl Default for IdlePool {
    fn default() -> Self {
        IdlePool::new(1)
    }
}

/// Keep-alive limits.
#[derive(Clone, Copy, Debug)]
pub(crate) struct KeepAlive {
    /// Shards of each backend's idle pool (one per worker runtime).
    pub(crate) shards: usize,
    pub(crate) max_idle: usize,
    pub(crate) idle_timeout: Duration,
    pub(crate) max_requests: u64,
}

impl IdlePool {
    pub(crate) fn new(shards: usize) -> Self {
        IdlePool { shards: (0..shards.max(1)).map(|_| Mutex::new(Vec::new())).collect() }
    }

    fn shard(&self) -> &Mutex<Vec<UpConn>> {
        &self.shards[WORKER.with(|w| w.get()) % self.shards.len()]
    }

    /// The most recently used live idle connection of this worker, if any.
    pub(crate) fn checkout(&self, ka: &KeepAlive) -> Option<UpConn> {
        loop {
            let conn = self.shard().lock().pop()?;
            if conn.idle_since.elapsed() < ka.idle_timeout && !conn.looks_dead() {
                return Some(conn);
            }
        }
    }

    /// Returns a connection whose last exchange completed cleanly.
    pub(crate) fn checkin(&self, mut conn: UpConn, ka: &KeepAlive) {
        conn.requests += 1;
        if ka.max_idle == 0
            || !conn.rbuf.is_empty()
            || (ka.max_requests > 0 && conn.requests >= ka.max_requests)
        {
            return;
        }
        conn.idle_since = StdInstant::now();
        let per_shard = ka.max_idle.div_ceil(self.shards.len()).max(1);
        let mut idle = self.shard().lock();
        if idle.len() < per_shard {
            idle.push(conn);
        }
    }

    /// Closes idle connections that timed out or died; returns how many remain.
    pub(crate) fn sweep(&self, ka: &KeepAlive) -> usize {
        let mut n = 0;
        for shard in self.shards.iter() {
            let mut idle = shard.lock();
            idle.retain(|c| c.idle_since.elapsed() < ka.idle_timeout && !c.looks_dead());
            n += idle.len();
        }
        n
    }

    /// Number of idle connections.
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }
}

/// A TLS client configuration for upstreams.
pub(crate) fn client_tls(
    ca_file: Option<&std::path::Path>,
    verify: bool,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let mut cfg = if verify {
        let mut roots = rustls::RootCertStore::empty();
        if let Some(path) = ca_file {
            for cert in crate::tls::load_certs(path)? {
                roots.add(cert).map_err(|e| format!("{}: {e}", path.display()))?;
            }
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(crate::tls::NoVerify(provider)))
            .with_no_client_auth()
    };
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}
