//! One HTTP/1.x client connection: read a head, route, buffer the body, forward, relay the
//! response; repeat while keep-alive holds.
//!
//! Buffers are per connection and reused for every request (no per-request allocation once they
//! have grown). Every wait has a deadline: the whole head within the header timeout (408), the
//! body within the body timeout (408), the next request within the keep-alive timeout (silent
//! close), every response write within the send timeout; so a slow client costs a task and its
//! buffers, never a worker thread.
//!
//! Draining (graceful shutdown, upgrade): a connection idle between requests closes at once; a
//! request in progress is answered with `Connection: close`; the first request of a connection
//! accepted before the drain is still served. The drain signal is checked with one atomic load
//! per request, and watched only while idle between requests.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::{Instant, timeout, timeout_at};

use super::forward::{Answer, Outgoing, forward};
use super::{ConnInfo, Settings, hash_h1, reason};
use crate::http::chunked::ChunkedDecoder;
use crate::http::headers::{
    ForwardInfo, HeaderRules, ResponseFraming, write_request_head, write_response_head,
    write_response_head_with_cookie,
};
use crate::http::request::parse_request;
use crate::http::{Framing, HeadError, HeaderSpan};
use crate::server::{Phase, Shared};
use crate::sticky::CookieRewrite;

/// How an HTTP/1 connection ended.
pub(crate) enum Exit<S> {
    Done,
    /// The client sent the HTTP/2 preface (h2c prior knowledge): continue as HTTP/2 with these
    /// bytes already read.
    H2c(S, Vec<u8>),
}

fn reserve(buf: &mut Vec<u8>) {
    if buf.capacity() - buf.len() < 2048 {
        buf.reserve(8192);
    }
}

/// True once the proxy stopped accepting (its connections then finish what they are doing).
fn is_draining(phase: &watch::Receiver<Phase>) -> bool {
    *phase.borrow() != Phase::Running
}

/// Serves HTTP/1 requests on `io` until the connection ends. `buf` holds bytes already read.
pub(crate) async fn serve<S>(
    mut io: S,
    info: ConnInfo,
    shared: Arc<Shared>,
    mut buf: Vec<u8>,
    mut phase: watch::Receiver<Phase>,
) -> Exit<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let client_ip = info.client_ip.clone();
    let default_host = info.local_str.clone();
    let proto = if info.tls { "https" } else { "http" };
    let mut spans: Vec<HeaderSpan> = Vec::with_capacity(32);
    let mut rspans: Vec<HeaderSpan> = Vec::with_capacity(32);
    let mut out: Vec<u8> = Vec::with_capacity(4096);
    let mut resp: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk_body: Vec<u8> = Vec::new();
    let mut first = true;
    buf.reserve(8192);
    loop {
        let draining = is_draining(&phase);
        let active = shared.active.load_full();
        let s = &active.settings;

        // The head: the keep-alive timeout until the first byte, then the header timeout.
        // Draining, an idle connection gets `drain_idle` for one more request (the client may
        // have sent it as the drain began; it is answered with Connection: close).
        let mut idle_deadline =
            Instant::now() + if first { s.header_timeout } else { s.keepalive_timeout };
        if draining && !first {
            idle_deadline = idle_deadline.min(Instant::now() + s.drain_idle);
        }
        let mut head_deadline = (!buf.is_empty()).then(|| Instant::now() + s.header_timeout);
        let head = loop {
            if !buf.is_empty() {
                match parse_request(&buf, &s.limits, &mut spans) {
                    Ok(Some(h)) => break h,
                    Ok(None) => {}
                    Err(HeadError::H2Preface) if first && info.h2c => return Exit::H2c(io, buf),
                    Err(e) => {
                        let _ = respond_error(&mut io, e.status(), &e.to_string(), false, s).await;
                        return Exit::Done;
                    }
                }
            }
            reserve(&mut buf);
            let read = if head_deadline.is_none() && !first {
                // Idle between requests: also watch for a drain, which shortens the wait.
                loop {
                    tokio::select! {
                        biased;
                        r = timeout_at(idle_deadline, io.read_buf(&mut buf)) => break r,
                        r = phase.changed() => {
                            if r.is_err() || *phase.borrow() == Phase::Stopped {
                                return Exit::Done;
                            }
                            idle_deadline = idle_deadline.min(Instant::now() + s.drain_idle);
                        }
                    }
                }
            } else {
                timeout_at(head_deadline.unwrap_or(idle_deadline), io.read_buf(&mut buf)).await
            };
            match read {
                Err(_) => {
                    if head_deadline.is_some() {
                        let _ = respond_error(
                            &mut io,
                            408,
                            "request head not received in time",
                            false,
                            s,
                        )
                        .await;
                    }
                    return Exit::Done;
                }
                Ok(Ok(0)) | Ok(Err(_)) => return Exit::Done,
                Ok(Ok(_)) => {
                    if head_deadline.is_none() {
                        head_deadline = Some(Instant::now() + s.header_timeout);
                    }
                }
            }
        };
        first = false;
        let keep_alive = head.keep_alive && !draining;

        // Route.
        let host = head.host(&buf).or(info.sni.as_deref().map(str::as_bytes));
        let Some(route) = active.router.route(host, head.path(&buf)) else {
            let can_continue = keep_alive && head.framing == Framing::None;
            let _ = respond_error(&mut io, 404, "no route for this host and path", can_continue, s)
                .await;
            if !can_continue {
                return Exit::Done;
            }
            buf.drain(..head.head_len);
            continue;
        };

        // Body: buffered completely (nginx proxy_request_buffering), so that a slow client never
        // holds an upstream connection and an idempotent request can be retried.
        let body_deadline = Instant::now() + s.body_timeout;
        let (body_range, consumed, chunked) = match head.framing {
            Framing::None | Framing::UntilClose => {
                (head.head_len..head.head_len, head.head_len, false)
            }
            Framing::Length(n) => {
                let need = head.head_len.saturating_add(usize::try_from(n).unwrap_or(usize::MAX));
                if head.expect_continue && buf.len() < need {
                    let _ = io.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await;
                }
                while buf.len() < need {
                    buf.reserve((need - buf.len()).min(1 << 20));
                    match timeout_at(body_deadline, io.read_buf(&mut buf)).await {
                        Err(_) => {
                            let _ = respond_error(
                                &mut io,
                                408,
                                "request body not received in time",
                                false,
                                s,
                            )
                            .await;
                            return Exit::Done;
                        }
                        Ok(Ok(0)) | Ok(Err(_)) => return Exit::Done,
                        Ok(Ok(_)) => {}
                    }
                }
                (head.head_len..need, need, false)
            }
            Framing::Chunked => {
                if head.expect_continue && buf.len() == head.head_len {
                    let _ = io.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await;
                }
                chunk_body.clear();
                let mut dec = ChunkedDecoder::new();
                let mut pos = head.head_len;
                let raw_limit =
                    (s.limits.max_body as usize).saturating_mul(2).saturating_add(64 * 1024);
                loop {
                    let input = &buf[pos..];
                    match dec.feed(input, |r| chunk_body.extend_from_slice(&input[r])) {
                        Ok(n) => pos += n,
                        Err(e) => {
                            let _ = respond_error(&mut io, 400, &e.to_string(), false, s).await;
                            return Exit::Done;
                        }
                    }
                    if chunk_body.len() as u64 > s.limits.max_body
                        || pos - head.head_len > raw_limit
                    {
                        let _ =
                            respond_error(&mut io, 413, "request body too large", false, s).await;
                        return Exit::Done;
                    }
                    if dec.is_done() {
                        break;
                    }
                    reserve(&mut buf);
                    match timeout_at(body_deadline, io.read_buf(&mut buf)).await {
                        Err(_) => {
                            let _ = respond_error(
                                &mut io,
                                408,
                                "request body not received in time",
                                false,
                                s,
                            )
                            .await;
                            return Exit::Done;
                        }
                        Ok(Ok(0)) | Ok(Err(_)) => return Exit::Done,
                        Ok(Ok(_)) => {}
                    }
                }
                (0..0, pos, true)
            }
        };
        let body: &[u8] = if chunked { &chunk_body } else { &buf[body_range] };

        // Upstream request.
        let pool = &route.pool;
        let hash =
            pool.wants_hash().then(|| hash_h1(pool, info.peer, &buf, head.path(&buf), &spans));
        let sticky = pool.settings.sticky.as_deref();
        let sticky_req = match sticky {
            None => Default::default(),
            Some(_) => pool.sticky_request(
                spans
                    .iter()
                    .filter(|sp| sp.name(&buf).eq_ignore_ascii_case(b"cookie"))
                    .map(|sp| sp.value(&buf)),
                info.peer.ip(),
            ),
        };
        let fwd = ForwardInfo {
            client_ip: &client_ip,
            proto,
            forwarded_for: s.forwarded_for,
            host_override: pool.settings.host.as_deref(),
            default_host: &default_host,
            rules: &route.request_rules,
            cookie_edit: sticky.and_then(|st| st.request_edit()),
        };
        write_request_head(&mut out, &buf, &head, &spans, body.len() as u64, &fwd);
        out.extend_from_slice(body);
        let upgrade = head.upgrade.is_some();
        let client_http10 = head.minor == 0;
        let outgoing = Outgoing {
            bytes: &out,
            idempotent: head.idempotent,
            head_request: head.is_head,
            hash,
            prefer: sticky_req.prefer,
            client: (info.peer, info.local),
        };
        let answer = forward(pool, &outgoing, &mut rspans).await;
        buf.drain(..consumed);

        let mut answer = match answer {
            Ok(a) => a,
            Err(e) => {
                if respond_error(&mut io, e.status(), e.message(), keep_alive, s).await.is_err()
                    || !keep_alive
                {
                    return Exit::Done;
                }
                continue;
            }
        };
        if answer.head.status == 101 {
            if upgrade {
                tunnel(io, answer, &rspans, &route.response_rules, buf, &mut resp).await;
            } else {
                let _ =
                    respond_error(&mut io, 502, "upstream switched protocols unasked", false, s)
                        .await;
            }
            return Exit::Done;
        }
        let read_timeout = pool.settings.read_timeout;
        let cookie = match sticky {
            None => CookieRewrite::None,
            Some(_) => pool.sticky_response(&sticky_req, &answer.slot, info.peer.ip()),
        };
        // A drain that began while the request was upstream: this response is the last.
        let keep_alive = keep_alive && !is_draining(&phase);
        let keep = relay(
            &mut io,
            &mut answer,
            &rspans,
            (client_http10, keep_alive),
            (&route.response_rules, &cookie),
            &mut resp,
            s,
            read_timeout,
        )
        .await;
        let Answer { conn, head: rhead, slot, .. } = answer;
        if let Ok(reusable) = keep.upstream_reusable {
            if reusable && rhead.keep_alive {
                slot.idle.checkin(conn, &pool.settings.keepalive);
            }
        }
        if !keep.client {
            return Exit::Done;
        }
    }
}

struct Kept {
    client: bool,
    upstream_reusable: Result<bool, ()>,
}

/// Writes the response to the client: head, then the body as the upstream delimits it.
#[allow(clippy::too_many_arguments)] // one call site; a struct would only rename the arguments
async fn relay<S: AsyncWrite + Unpin>(
    io: &mut S,
    a: &mut Answer,
    rspans: &[HeaderSpan],
    (client_http10, client_keep_alive): (bool, bool),
    (rules, cookie): (&HeaderRules, &CookieRewrite),
    resp: &mut Vec<u8>,
    s: &Settings,
    read_timeout: std::time::Duration,
) -> Kept {
    let framing = a.head.framing;
    let chunked_pass = framing == Framing::Chunked && !client_http10;
    let client = client_keep_alive
        && match framing {
            Framing::UntilClose => false,
            Framing::Chunked => !client_http10,
            _ => true,
        };
    resp.clear();
    write_response_head_with_cookie(
        resp,
        &a.conn.rbuf,
        &a.head,
        rspans,
        ResponseFraming { keep_alive: client, chunked_passthrough: chunked_pass, client_http10 },
        rules,
        cookie,
    );
    let head_len = a.head.head_len;
    let broken = Kept { client: false, upstream_reusable: Err(()) };
    let mut reusable = true;
    match framing {
        Framing::None => {
            reusable = a.conn.rbuf.len() == head_len;
            a.conn.rbuf.clear();
            if send(io, resp, s).await.is_err() {
                return Kept { client: false, upstream_reusable: Ok(reusable) };
            }
        }
        Framing::Length(n) => {
            let avail = a.conn.rbuf.len() - head_len;
            let take = avail.min(usize::try_from(n).unwrap_or(usize::MAX));
            resp.extend_from_slice(&a.conn.rbuf[head_len..head_len + take]);
            reusable &= avail == take;
            let mut remaining = n - take as u64;
            a.conn.rbuf.clear();
            if send(io, resp, s).await.is_err() {
                return broken;
            }
            while remaining > 0 {
                if a.conn.rbuf.capacity() < 8192 {
                    a.conn.rbuf.reserve(16 * 1024);
                }
                match timeout(read_timeout, a.conn.io.read_buf(&mut a.conn.rbuf)).await {
                    Ok(Ok(n)) if n > 0 => {}
                    _ => return broken,
                }
                let take = a.conn.rbuf.len().min(usize::try_from(remaining).unwrap_or(usize::MAX));
                reusable &= a.conn.rbuf.len() == take;
                if send(io, &a.conn.rbuf[..take], s).await.is_err() {
                    return broken;
                }
                remaining -= take as u64;
                a.conn.rbuf.clear();
            }
        }
        Framing::Chunked => {
            let mut dec = ChunkedDecoder::new();
            let mut start = head_len;
            loop {
                let input = &a.conn.rbuf[start..];
                let n = match dec.feed(input, |r| {
                    if !chunked_pass {
                        resp.extend_from_slice(&input[r]);
                    }
                }) {
                    Ok(n) => n,
                    Err(_) => return broken,
                };
                if chunked_pass {
                    resp.extend_from_slice(&input[..n]);
                }
                reusable &= n == input.len() || !dec.is_done();
                a.conn.rbuf.clear();
                if !resp.is_empty() && send(io, resp, s).await.is_err() {
                    return broken;
                }
                resp.clear();
                if dec.is_done() {
                    break;
                }
                start = 0;
                if a.conn.rbuf.capacity() < 8192 {
                    a.conn.rbuf.reserve(16 * 1024);
                }
                match timeout(read_timeout, a.conn.io.read_buf(&mut a.conn.rbuf)).await {
                    Ok(Ok(n)) if n > 0 => {}
                    _ => return broken,
                }
            }
        }
        Framing::UntilClose => {
            resp.extend_from_slice(&a.conn.rbuf[head_len..]);
            a.conn.rbuf.clear();
            loop {
                if send(io, resp, s).await.is_err() {
                    return broken;
                }
                resp.clear();
                if a.conn.rbuf.capacity() < 8192 {
                    a.conn.rbuf.reserve(16 * 1024);
                }
                match timeout(read_timeout, a.conn.io.read_buf(&mut a.conn.rbuf)).await {
                    Ok(Ok(0)) => break,
                    Ok(Ok(_)) => {
                        resp.extend_from_slice(&a.conn.rbuf);
                        a.conn.rbuf.clear();
                    }
                    _ => return broken,
                }
            }
            reusable = false;
        }
    }
    Kept { client, upstream_reusable: Ok(reusable) }
}

/// Writes `data` to the client within the send timeout.
async fn send<S: AsyncWrite + Unpin>(io: &mut S, data: &[u8], s: &Settings) -> Result<(), ()> {
    let fut = async {
        io.write_all(data).await?;
        io.flush().await
    };
    match timeout(s.send_timeout, fut).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

/// Answers with a short plain-text error.
pub(crate) async fn respond_error<S: AsyncWrite + Unpin>(
    io: &mut S,
    status: u16,
    message: &str,
    keep_alive: bool,
    s: &Settings,
) -> Result<(), ()> {
    let body = format!("{status} {}: {message}\n", reason(status));
    let head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n{}\r\n",
        reason(status),
        body.len(),
        if keep_alive { "" } else { "Connection: close\r\n" },
    );
    let mut all = head.into_bytes();
    all.extend_from_slice(body.as_bytes());
    send(io, &all, s).await
}

/// After a 101 answer: pass bytes both ways until either side closes.
async fn tunnel<S: AsyncRead + AsyncWrite + Unpin>(
    mut io: S,
    mut a: Answer,
    rspans: &[HeaderSpan],
    rules: &HeaderRules,
    leftover: Vec<u8>,
    resp: &mut Vec<u8>,
) {
    resp.clear();
    write_response_head(
        resp,
        &a.conn.rbuf,
        &a.head,
        rspans,
        ResponseFraming { keep_alive: true, chunked_passthrough: false, client_http10: false },
        rules,
    );
    resp.extend_from_slice(&a.conn.rbuf[a.head.head_len..]);
    a.conn.rbuf.clear();
    if io.write_all(resp).await.is_err() || io.flush().await.is_err() {
        return;
    }
    if !leftover.is_empty() && a.conn.io.write_all(&leftover).await.is_err() {
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut io, &mut a.conn.io).await;
}
