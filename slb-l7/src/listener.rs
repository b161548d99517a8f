//! Listening sockets: accept, the PROXY protocol header on listeners behind a trusted L4 tier,
//! TLS handshake (SNI, ALPN), then HTTP/1 or HTTP/2.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;

use crate::proxy::{ConnInfo, h1, h2};
use crate::proxy_protocol::{Networks, ProxyAddrs, looks_like_proxy};
use crate::server::{ListenerStats, Phase, Shared};

/// A listener ready to be bound.
#[derive(Clone)]
pub(crate) struct ListenerPlan {
    pub(crate) name: String,
    pub(crate) addr: SocketAddr,
    pub(crate) tls: Option<TlsAcceptor>,
    pub(crate) http2: bool,
    pub(crate) max_connections: usize,
    /// Behind an L4 tier: whose PROXY headers to believe (empty: everyone must send one).
    pub(crate) proxy_protocol: Option<Networks>,
    pub(crate) stats: Arc<ListenerStats>,
}

/// Binds `addr` with SO_REUSEADDR (and SO_REUSEPORT when `reuse_port`, so that several worker
/// runtimes can each accept on their own socket) and a deep backlog.
pub(crate) fn bind_std(addr: SocketAddr, reuse_port: bool) -> io::Result<std::net::TcpListener> {
    let domain = if addr.is_ipv4() { socket2::Domain::IPV4 } else { socket2::Domain::IPV6 };
    let sock = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    sock.set_reuse_address(true)?;
    if reuse_port {
        sock.set_reuse_port(true)?;
    }
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    sock.listen(4096)?;
    Ok(sock.into())
}

/// Counts an open client connection while alive.
struct ConnGuard(Arc<Shared>);

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Accepts connections while the proxy is running (the listener closes when it stops
/// accepting; a socket handed to a new process lives on there).
pub(crate) async fn accept_loop(
    listener: TcpListener,
    plan: Arc<ListenerPlan>,
    shared: Arc<Shared>,
    mut phase: watch::Receiver<Phase>,
) {
    let limit = Arc::new(Semaphore::new(plan.max_connections));
    if *phase.borrow_and_update() != Phase::Running {
        return;
    }
    let mut shutdown = phase.clone();
    loop {
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = shutdown.changed() => return,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(listener = %plan.name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let plan = plan.clone();
        shared.connections.fetch_add(1, Ordering::Relaxed);
        let guard = ConnGuard(shared.clone());
        let phase = phase.clone();
        tokio::spawn(async move {
            handle(stream, peer, &plan, guard.0.clone(), phase).await;
            drop(guard);
            drop(permit);
        });
    }
}

/// Reads the PROXY header of a connection on a listener behind an L4 tier. Returns the client
/// and local addresses it names (or the connection's own) and the bytes read past it; `None`
/// when the connection is to be closed (counted).
async fn read_proxy_header(
    stream: &mut TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    trusted: &Networks,
    plan: &ListenerPlan,
    timeout: Duration,
) -> Option<(SocketAddr, SocketAddr, Vec<u8>)> {
    let stats = &plan.stats;
    let is_trusted = trusted.is_empty() || trusted.contains(peer.ip());
    let mut buf = Vec::with_capacity(256);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if !buf.is_empty() {
            if !is_trusted {
                if looks_like_proxy(&buf) && buf.len() >= 6 {
                    stats.proxy_untrusted.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(listener = %plan.name, %peer, "PROXY header from an untrusted peer: closed");
                    return None;
                }
                if !looks_like_proxy(&buf) {
                    // A direct client: serve it with its own address.
                    return Some((peer, local, buf));
                }
            } else {
                match crate::proxy_protocol::parse(&buf) {
                    Ok(Some(h)) => {
                        let counter =
                            if h.version == 1 { &stats.proxy_v1 } else { &stats.proxy_v2 };
                        counter.fetch_add(1, Ordering::Relaxed);
                        let rest = buf.split_off(h.len);
                        return Some(match h.addrs {
                            ProxyAddrs::Proxied { src, dst } => (src, dst, rest),
                            ProxyAddrs::Unknown => (peer, local, rest),
                        });
                    }
                    Ok(None) => {}
                    Err(crate::proxy_protocol::ProxyError::NotProxy) => {
                        stats.proxy_missing.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(listener = %plan.name, %peer, "no PROXY header from a trusted peer: closed");
                        return None;
                    }
                    Err(e) => {
                        stats.proxy_malformed.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(listener = %plan.name, %peer, error = %e, "closed");
                        return None;
                    }
                }
            }
        }
        if buf.len() >= crate::proxy_protocol::MAX_V2_LEN {
            stats.proxy_malformed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        buf.reserve(512);
        match tokio::time::timeout_at(deadline, stream.read_buf(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => {
                if is_trusted && !buf.is_empty() {
                    stats.proxy_malformed.fetch_add(1, Ordering::Relaxed);
                }
                return None;
            }
        }
    }
}

async fn handle(
    mut stream: TcpStream,
    peer: SocketAddr,
    plan: &ListenerPlan,
    shared: Arc<Shared>,
    phase: watch::Receiver<Phase>,
) {
    let _ = stream.set_nodelay(true);
    let Ok(local) = stream.local_addr() else { return };
    let (peer, local, early) = match &plan.proxy_protocol {
        None => (peer, local, Vec::new()),
        Some(trusted) => {
            let timeout = shared.active.load().settings.header_timeout;
            match read_proxy_header(&mut stream, peer, local, trusted, plan, timeout).await {
                Some(x) => x,
                None => return,
            }
        }
    };
    let info = ConnInfo::new(peer, local, plan.http2);
    match &plan.tls {
        None => {
            if let h1::Exit::H2c(io, buf) =
                h1::serve(stream, info.clone(), shared.clone(), early, phase.clone()).await
            {
                h2::serve(Rewind { prefix: buf, pos: 0, inner: io }, info, shared, phase).await;
            }
        }
        Some(acceptor) if !early.is_empty() => {
            // Bytes of the TLS handshake came with the PROXY header.
            let stream = Rewind { prefix: early, pos: 0, inner: stream };
            serve_tls(acceptor, stream, info, shared, phase).await;
        }
        Some(acceptor) => serve_tls(acceptor, stream, info, shared, phase).await,
    }
}

async fn serve_tls<S>(
    acceptor: &TlsAcceptor,
    stream: S,
    mut info: ConnInfo,
    shared: Arc<Shared>,
    phase: watch::Receiver<Phase>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let handshake_timeout = shared.active.load().settings.header_timeout;
    let tls = match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
        Ok(Ok(t)) => t,
        _ => return,
    };
    let (_, conn) = tls.get_ref();
    let h2 = conn.alpn_protocol() == Some(b"h2");
    info.tls = true;
    info.h2c = false;
    info.sni = conn.server_name().map(Arc::from);
    if h2 {
        h2::serve(tls, info, shared, phase).await;
    } else {
        let _ = h1::serve(tls, info, shared, Vec::new(), phase).await;
    }
}

/// A stream that first yields bytes already read from it.
pub(crate) struct Rewind<S> {
    prefix: Vec<u8>,
    pos: usize,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.pos < this.prefix.len() {
            let n = (this.prefix.len() - this.pos).min(buf.remaining());
            buf.put_slice(&this.prefix[this.pos..this.pos + n]);
            this.pos += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
