//! Listening sockets: accept, TLS handshake (SNI, ALPN), then HTTP/1 or HTTP/2.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;

use crate::proxy::{ConnInfo, h1, h2};
use crate::server::Shared;

/// A listener ready to be bound.
#[derive(Clone)]
pub(crate) struct ListenerPlan {
    pub(crate) name: String,
    pub(crate) addr: SocketAddr,
    pub(crate) tls: Option<TlsAcceptor>,
    pub(crate) http2: bool,
    pub(crate) max_connections: usize,
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

/// [`bind_std`] without SO_REUSEPORT, registered with the current runtime.
pub(crate) fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::from_std(bind_std(addr, false)?)
}

/// Accepts connections until `shutdown` turns true.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    plan: Arc<ListenerPlan>,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let limit = Arc::new(Semaphore::new(plan.max_connections));
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
        let shared = shared.clone();
        tokio::spawn(async move {
            handle(stream, peer, &plan, shared).await;
            drop(permit);
        });
    }
}

async fn handle(stream: TcpStream, peer: SocketAddr, plan: &ListenerPlan, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    let Ok(local) = stream.local_addr() else { return };
    let mut info = ConnInfo::new(peer, local, plan.http2);
    match &plan.tls {
        None => {
            if let h1::Exit::H2c(io, buf) =
                h1::serve(stream, info.clone(), shared.clone(), Vec::new()).await
            {
                h2::serve(Rewind { prefix: buf, pos: 0, inner: io }, info, shared).await;
            }
        }
        Some(acceptor) => {
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
                h2::serve(tls, info, shared).await;
            } else {
                let _ = h1::serve(tls, info, shared, Vec::new()).await;
            }
        }
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
