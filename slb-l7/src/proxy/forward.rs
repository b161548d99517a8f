//! Sending one request upstream, with nginx `proxy_next_upstream` retry rules and the retry
//! budget. Shared by the HTTP/1 and HTTP/2 front ends.
//!
//! A try may go to the next backend only while nothing has reached the client (the response
//! head is read completely before anything is written back), within [`RetryPolicy::tries`] and
//! [`RetryPolicy::timeout`], and while the budget allows. Connect errors are always safe to retry
//! (nothing was sent); once a request was sent, only idempotent ones are retried unless the pool
//! says `non_idempotent = true`.
//!
//! [`RetryPolicy::tries`]: crate::pool::RetryPolicy::tries
//! [`RetryPolicy::timeout`]: crate::pool::RetryPolicy::timeout

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant as StdInstant;

use slb_core::backend::{BackendId, BackendRuntime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::http::HeaderSpan;
use crate::http::response::{ResponseHead, parse_response};
use crate::metrics::TryOutcome;
use crate::pool::{BackendSlot, Passive, Pool};
use crate::upstream::{ConnectError, UpConn};

/// Largest response head accepted from a backend.
pub(crate) const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// Hard cap on tries per request.
const MAX_TRIES: usize = 16;

/// A request ready to go: head and buffered body, back to back.
pub(crate) struct Outgoing<'a> {
    pub(crate) bytes: &'a [u8],
    pub(crate) idempotent: bool,
    pub(crate) head_request: bool,
    pub(crate) hash: Option<u64>,
    /// The sticky backend to try first.
    pub(crate) prefer: Option<BackendId>,
    /// The client and the address it connected to (for a PROXY header to the backend).
    pub(crate) client: (SocketAddr, SocketAddr),
}

/// Decrements the backend's in-flight count when the exchange ends.
#[derive(Debug)]
pub(crate) struct ActiveGuard(Arc<BackendRuntime>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.dec_active();
    }
}

/// A response head from a backend, with the connection to read the body from.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) conn: UpConn,
    pub(crate) head: ResponseHead,
    pub(crate) slot: Arc<BackendSlot>,
    pub(crate) _active: ActiveGuard,
}

/// Why no response could be obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ForwardError {
    NoBackend,
    ConnectFailed,
    ConnectTimeout,
    HeaderTimeout,
    Broken,
}

impl ForwardError {
    pub(crate) fn status(self) -> u16 {
        match self {
            ForwardError::NoBackend => 503,
            ForwardError::ConnectFailed | ForwardError::Broken => 502,
            ForwardError::ConnectTimeout | ForwardError::HeaderTimeout => 504,
        }
    }

    pub(crate) fn message(self) -> &'static str {
        match self {
            ForwardError::NoBackend => "no healthy upstream",
            ForwardError::ConnectFailed => "upstream connection failed",
            ForwardError::ConnectTimeout => "upstream connect timed out",
            ForwardError::HeaderTimeout => "upstream did not answer in time",
            ForwardError::Broken => "upstream closed the connection or sent an invalid response",
        }
    }
}

/// Sends `out` to a backend of `pool`, retrying as the pool's policy allows. On success the
/// response head's fields are in `spans` (offsets into `answer.conn.rbuf`).
pub(crate) async fn forward(
    pool: &Pool,
    out: &Outgoing<'_>,
    spans: &mut Vec<HeaderSpan>,
) -> Result<Answer, ForwardError> {
    let policy = &pool.settings.retry;
    pool.budget.start_request();
    let _request = scopeguard(|| pool.budget.end_request());
    let start = StdInstant::now();
    let mut tried = [BackendId(0); MAX_TRIES];
    let max_tries = (policy.tries as usize).min(MAX_TRIES);
    let mut last = ForwardError::NoBackend;
    let may_resend = out.idempotent || policy.non_idempotent;
    for attempt in 0..max_tries {
        let retry_token = if attempt > 0 {
            if start.elapsed() >= policy.timeout || !pool.budget.try_start_retry(policy) {
                break;
            }
            Some(scopeguard(|| pool.budget.end_retry()))
        } else {
            None
        };
        let Ok((slot, runtime)) = pool.pick(out.hash, &tried[..attempt], out.prefer) else { break };
        tried[attempt] = slot.id;
        let result = try_once(pool, &slot, runtime, out, spans).await;
        drop(retry_token);
        match result {
            Ok(answer) => {
                let status = answer.head.status;
                if status >= 500 && pool.settings.count_5xx {
                    pool.report(&slot, Passive::Failure);
                } else {
                    pool.report(&slot, Passive::Success);
                }
                if policy.on_status.contains(&status) && may_resend && attempt + 1 < max_tries {
                    last = ForwardError::Broken;
                    continue;
                }
                return Ok(answer);
            }
            Err((err, reused)) => {
                if !(err == ForwardError::Broken && reused) {
                    // A reused keep-alive connection closed under us is a race, not a sign of
                    // a sick backend.
                    pool.report(&slot, Passive::Failure);
                }
                last = err;
                let retry = match err {
                    ForwardError::ConnectFailed => policy.on_error,
                    ForwardError::ConnectTimeout => policy.on_timeout,
                    ForwardError::HeaderTimeout => policy.on_timeout && may_resend,
                    ForwardError::Broken => policy.on_error && may_resend,
                    ForwardError::NoBackend => false,
                };
                if !retry {
                    break;
                }
            }
        }
    }
    Err(last)
}

async fn try_once(
    pool: &Pool,
    slot: &Arc<BackendSlot>,
    runtime: Arc<BackendRuntime>,
    out: &Outgoing<'_>,
    spans: &mut Vec<HeaderSpan>,
) -> Result<Answer, (ForwardError, bool)> {
    let t0 = StdInstant::now();
    let (mut conn, reused) = match slot.idle.checkout(&pool.settings.keepalive) {
        Some(c) => (c, true),
        None => match pool.settings.connector.connect(slot.addr, Some(out.client)).await {
            Ok(c) => (c, false),
            Err(e) => {
                let (err, outcome) = match e {
                    ConnectError::Timeout => (ForwardError::ConnectTimeout, TryOutcome::Timeout),
                    ConnectError::Io(_) => (ForwardError::ConnectFailed, TryOutcome::ConnectError),
                };
                slot.stats.record(outcome, t0.elapsed());
                return Err((err, false));
            }
        },
    };
    runtime.inc_active();
    let active = ActiveGuard(runtime);
    let exchange = async {
        conn.io.write_all(out.bytes).await.map_err(|_| ForwardError::Broken)?;
        read_head(&mut conn, out.head_request, spans).await
    };
    match tokio::time::timeout(pool.settings.response_header_timeout, exchange).await {
        Ok(Ok(head)) => {
            slot.stats.record(TryOutcome::Response(head.status), t0.elapsed());
            Ok(Answer { conn, head, slot: slot.clone(), _active: active })
        }
        Ok(Err(e)) => {
            slot.stats.record(TryOutcome::Broken, t0.elapsed());
            Err((e, reused))
        }
        Err(_) => {
            slot.stats.record(TryOutcome::Timeout, t0.elapsed());
            Err((ForwardError::HeaderTimeout, reused))
        }
    }
}

/// Reads a final response head (skipping 1xx interim responses other than 101).
async fn read_head(
    conn: &mut UpConn,
    head_request: bool,
    spans: &mut Vec<HeaderSpan>,
) -> Result<ResponseHead, ForwardError> {
    loop {
        if !conn.rbuf.is_empty() {
            match parse_response(&conn.rbuf, head_request, MAX_RESPONSE_HEAD, spans) {
                Ok(Some(h)) if (100..200).contains(&h.status) && h.status != 101 => {
                    let _ = conn.rbuf.split_to(h.head_len);
                    continue;
                }
                Ok(Some(h)) => return Ok(h),
                Ok(None) => {}
                Err(_) => return Err(ForwardError::Broken),
            }
        }
        if conn.rbuf.capacity() - conn.rbuf.len() < 1024 {
            conn.rbuf.reserve(8192);
        }
        match conn.io.read_buf(&mut conn.rbuf).await {
            Ok(0) | Err(_) => return Err(ForwardError::Broken),
            Ok(_) => {}
        }
    }
}

/// Runs `f` when dropped.
pub(crate) fn scopeguard<F: FnOnce()>(f: F) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}
