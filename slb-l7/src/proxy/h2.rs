//! HTTP/2 client connections (ALPN h2 over TLS, or h2c with prior knowledge), served by hyper;
//! each stream is forwarded to an HTTP/1.1 upstream through the same path as HTTP/1 requests.

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tokio::time::Sleep;

use super::forward::{Answer, Outgoing, forward};
use super::{ConnInfo, hash_parts, reason};
use crate::http::chunked::ChunkedDecoder;
use crate::http::headers::{ForwardInfo, HeaderRules, is_hop_by_hop, write_request_head_parts};
use crate::http::{Framing, HeaderSpan};
use crate::pool::Pool;
use crate::server::{Phase, Shared};
use crate::sticky::CookieRewrite;

/// Serves HTTP/2 on `io` until the connection ends; on a drain, sends GOAWAY and lets the
/// streams in progress finish.
pub(crate) async fn serve<S>(
    io: S,
    info: ConnInfo,
    shared: Arc<Shared>,
    mut phase: watch::Receiver<Phase>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let max_head = shared.active.load().settings.limits.max_head;
    let svc = hyper::service::service_fn(move |req| {
        let shared = shared.clone();
        let info = info.clone();
        async move { Ok::<_, Infallible>(handle(req, &info, &shared).await) }
    });
    let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    b.timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .max_header_list_size(u32::try_from(max_head).unwrap_or(u32::MAX))
        .keep_alive_interval(Some(Duration::from_secs(60)))
        .keep_alive_timeout(Duration::from_secs(20));
    let conn = b.serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = phase.wait_for(|p| *p != Phase::Running) => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}

fn error_response(status: u16, message: &str) -> Response<ProxyBody> {
    let body = format!("{status} {}: {message}\n", reason(status));
    let mut r = Response::new(ProxyBody::Full(Some(Bytes::from(body))));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    r.headers_mut()
        .insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

async fn handle(req: Request<Incoming>, info: &ConnInfo, shared: &Shared) -> Response<ProxyBody> {
    let active = shared.active.load_full();
    let s = &active.settings;
    let (parts, body) = req.into_parts();
    let host = parts
        .uri
        .authority()
        .map(|a| a.as_str().as_bytes())
        .or_else(|| parts.headers.get(http::header::HOST).map(|h| h.as_bytes()))
        .or(info.sni.as_deref().map(str::as_bytes));
    if parts.method == http::Method::CONNECT {
        return error_response(501, "CONNECT is not supported");
    }
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let Some(route) = active.router.route(host, path.as_bytes()) else {
        return error_response(404, "no route for this host and path");
    };
    let declared = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| crate::http::parse_content_length(v.as_bytes()));
    if declared.is_some_and(|n| n > s.limits.max_body) {
        return error_response(413, "request body too large");
    }
    let body = if body.is_end_stream() {
        Bytes::new()
    } else {
        let limited = Limited::new(body, usize::try_from(s.limits.max_body).unwrap_or(usize::MAX));
        match tokio::time::timeout(s.body_timeout, limited.collect()).await {
            Ok(Ok(c)) => c.to_bytes(),
            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
                return error_response(413, "request body too large");
            }
            Ok(Err(_)) => return error_response(400, "request body stream failed"),
            Err(_) => return error_response(408, "request body not received in time"),
        }
    };
    let pool = &route.pool;
    let sticky = pool.settings.sticky.as_deref();
    let sticky_req = match sticky {
        None => Default::default(),
        Some(_) => pool.sticky_request(
            parts.headers.get_all(http::header::COOKIE).iter().map(|v| v.as_bytes()),
            info.peer.ip(),
        ),
    };
    let fwd = ForwardInfo {
        client_ip: &info.client_ip,
        proto: if info.tls { "https" } else { "http" },
        forwarded_for: s.forwarded_for,
        host_override: pool.settings.host.as_deref(),
        default_host: &info.local_str,
        rules: &route.request_rules,
        cookie_edit: sticky.and_then(|st| st.request_edit()),
    };
    let mut out = Vec::with_capacity(512 + body.len());
    write_request_head_parts(&mut out, &parts, body.len() as u64, &fwd);
    out.extend_from_slice(&body);
    let hash = pool.wants_hash().then(|| hash_parts(pool, info.peer, &parts));
    let idempotent = crate::http::request::is_idempotent(parts.method.as_str().as_bytes());
    let outgoing = Outgoing {
        bytes: &out,
        idempotent,
        head_request: parts.method == http::Method::HEAD,
        hash,
        prefer: sticky_req.prefer,
        client: (info.peer, info.local),
    };
    let mut spans = Vec::with_capacity(32);
    match forward(pool, &outgoing, &mut spans).await {
        Err(e) => error_response(e.status(), e.message()),
        Ok(a) if a.head.status == 101 => {
            drop(a);
            error_response(502, "upstream switched protocols unasked")
        }
        Ok(a) => {
            let cookie = match sticky {
                None => CookieRewrite::None,
                Some(_) => pool.sticky_response(&sticky_req, &a.slot, info.peer.ip()),
            };
            build_response(a, &spans, (&route.response_rules, &cookie), pool.clone())
        }
    }
}

fn build_response(
    a: Answer,
    spans: &[HeaderSpan],
    (rules, cookie): (&HeaderRules, &CookieRewrite),
    pool: Arc<Pool>,
) -> Response<ProxyBody> {
    let mut r = Response::new(ProxyBody::Full(None));
    *r.status_mut() = StatusCode::from_u16(a.head.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let buf = &a.conn.rbuf;
    let connection_listed = |n: &[u8]| {
        spans.iter().any(|s| {
            s.name(buf).eq_ignore_ascii_case(b"connection")
                && crate::http::has_token(s.value(buf), n)
        })
    };
    let h = r.headers_mut();
    for s in spans {
        let name = s.name(buf);
        if is_hop_by_hop(name) || rules.removes(name) || connection_listed(name) {
            continue;
        }
        let rewritten = if name.eq_ignore_ascii_case(b"set-cookie") {
            cookie.rewrite_set_cookie(s.value(buf))
        } else {
            None
        };
        let value = rewritten.as_deref().unwrap_or(s.value(buf));
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            h.append(n, v);
        }
    }
    if let CookieRewrite::Insert(v) = cookie {
        if let Ok(v) = HeaderValue::from_str(v) {
            h.append(http::header::SET_COOKIE, v);
        }
    }
    for (n, v) in &rules.add {
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(n.as_bytes()), HeaderValue::from_str(v)) {
            h.append(n, v);
        }
    }
    let framing = a.head.framing;
    let read_timeout = pool.settings.read_timeout;
    *r.body_mut() =
        ProxyBody::Upstream(Box::new(UpstreamBody::new(a, framing, pool, read_timeout)));
    r
}

/// A response body: a fixed one written by the proxy, or one streamed from a backend.
pub(crate) enum ProxyBody {
    Full(Option<Bytes>),
    Upstream(Box<UpstreamBody>),
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match self.get_mut() {
            ProxyBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ProxyBody::Upstream(u) => Pin::new(u.as_mut()).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Full(b) => b.is_none(),
            ProxyBody::Upstream(u) => u.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            ProxyBody::Upstream(u) => u.size_hint(),
        }
    }
}

/// Streams a response body from a backend connection, de-chunking; the connection goes back to
/// the idle pool when the body ended cleanly.
pub(crate) struct UpstreamBody {
    answer: Option<Answer>,
    framing: Framing,
    remaining: u64,
    decoder: ChunkedDecoder,
    pool: Arc<Pool>,
    read_timeout: Duration,
    sleep: Pin<Box<Sleep>>,
    scratch: Option<Box<[u8]>>,
}

impl UpstreamBody {
    fn new(mut a: Answer, framing: Framing, pool: Arc<Pool>, read_timeout: Duration) -> Self {
        // Advance rather than split: the buffer stays unshared and keeps its allocation.
        bytes::Buf::advance(&mut a.conn.rbuf, a.head.head_len);
        let remaining = match framing {
            Framing::Length(n) => n,
            _ => 0,
        };
        let mut body = UpstreamBody {
            answer: Some(a),
            framing,
            remaining,
            decoder: ChunkedDecoder::new(),
            pool,
            read_timeout,
            sleep: Box::pin(tokio::time::sleep(read_timeout)),
            scratch: None,
        };
        if framing == Framing::None {
            body.finish();
        }
        body
    }

    /// The body ended cleanly: return the connection if it can be reused.
    fn finish(&mut self) {
        if let Some(a) = self.answer.take() {
            if a.head.keep_alive && a.conn.rbuf.is_empty() && self.framing != Framing::UntilClose {
                let Answer { conn, slot, .. } = a;
                slot.idle.checkin(conn, &self.pool.settings.keepalive);
            }
        }
    }

    /// Takes the next data frame out of the buffer, if any.
    fn take_buffered(&mut self) -> Option<Result<Bytes, io::Error>> {
        let a = self.answer.as_mut()?;
        if a.conn.rbuf.is_empty() {
            return None;
        }
        match self.framing {
            Framing::Length(_) => {
                let take =
                    a.conn.rbuf.len().min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
                let data = Bytes::copy_from_slice(&a.conn.rbuf[..take]);
                bytes::Buf::advance(&mut a.conn.rbuf, take);
                self.remaining -= take as u64;
                if self.remaining == 0 {
                    self.finish();
                }
                Some(Ok(data))
            }
            Framing::Chunked => {
                let mut out = BytesMut::new();
                let input = &a.conn.rbuf[..];
                let n = match self.decoder.feed(input, |r| out.extend_from_slice(&input[r])) {
                    Ok(n) => n,
                    Err(e) => {
                        self.answer = None;
                        return Some(Err(io::Error::new(io::ErrorKind::InvalidData, e)));
                    }
                };
                bytes::Buf::advance(&mut a.conn.rbuf, n);
                if self.decoder.is_done() {
                    self.finish();
                }
                if out.is_empty() { None } else { Some(Ok(out.freeze())) }
            }
            Framing::UntilClose => {
                let data = Bytes::copy_from_slice(&a.conn.rbuf);
                a.conn.rbuf.clear();
                Some(Ok(data))
            }
            Framing::None => None,
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        loop {
            if let Some(r) = this.take_buffered() {
                return Poll::Ready(Some(r.map(Frame::data)));
            }
            let Some(a) = this.answer.as_mut() else { return Poll::Ready(None) };
            let scratch = this.scratch.get_or_insert_with(|| vec![0; 16 * 1024].into_boxed_slice());
            let mut rb = ReadBuf::new(scratch);
            match Pin::new(&mut a.conn.io).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) => {
                    let n = rb.filled().len();
                    if n == 0 {
                        let clean = this.framing == Framing::UntilClose;
                        this.answer = None;
                        if clean {
                            return Poll::Ready(None);
                        }
                        return Poll::Ready(Some(Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "upstream closed mid-body",
                        ))));
                    }
                    a.conn.rbuf.extend_from_slice(rb.filled());
                    let deadline = tokio::time::Instant::now() + this.read_timeout;
                    this.sleep.as_mut().reset(deadline);
                }
                Poll::Ready(Err(e)) => {
                    this.answer = None;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Pending => {
                    ready!(this.sleep.as_mut().poll(cx));
                    this.answer = None;
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "upstream body timed out",
                    ))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.answer.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match (self.framing, &self.answer) {
            (_, None) => SizeHint::with_exact(0),
            (Framing::Length(_), Some(_)) => SizeHint::with_exact(self.remaining),
            _ => SizeHint::default(),
        }
    }
}

use std::future::Future as _;
