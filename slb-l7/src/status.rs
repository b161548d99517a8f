//! The status endpoint: `GET /status` (JSON, in the spirit of Tengine's check_status) and
//! `GET /metrics` (Prometheus text format), on their own listener.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use slb_core::backend::BackendState;
use slb_core::health::HealthStatus;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::pool::Pool;
use crate::server::{Phase, ProxyHandle};

pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

pub(crate) fn state_name(s: BackendState) -> &'static str {
    match s {
        BackendState::Up => "up",
        BackendState::Down => "down",
        BackendState::Draining => "draining",
        BackendState::Disabled => "disabled",
    }
}

/// The status document of `pools`.
pub(crate) fn status_json(pools: &[Arc<Pool>]) -> String {
    let mut rows = String::new();
    let mut index = 0;
    for p in pools {
        for b in p.backends() {
            if index > 0 {
                rows.push(',');
            }
            let status = if b.usable { "up" } else { "down" };
            let _ = write!(
                rows,
                "\n    {{\"index\": {index}, \"upstream\": \"{}\", \"name\": \"{}\", \"status\": \"{status}\", \
                 \"rise\": {}, \"fall\": {}, \"type\": \"{}\", \"port\": 0, \"weight\": {}, \"admin\": \"{}\", \
                 \"health\": \"{}\", \"ejected\": {}, \"active\": {}, \"requests\": {}, \"failures\": {}, \
                 \"responses_5xx\": {}, \"checks\": {}, \"check_failures\": {}}}",
                escape(p.name()),
                b.address,
                b.rise_fall_streak.0,
                b.rise_fall_streak.1,
                p.check_kind(),
                b.weight,
                state_name(b.admin),
                if b.health == HealthStatus::Up { "up" } else { "down" },
                b.ejected,
                b.active,
                b.stats.requests(),
                b.stats.failures(),
                b.stats.status_5xx(),
                b.checks.0,
                b.checks.1,
            );
            index += 1;
        }
    }
    format!("{{\"servers\": {{\"total\": {index}, \"generation\": 1, \"server\": [{rows}\n]}}}}\n")
}

async fn answer(
    req: Request<Incoming>,
    handle: ProxyHandle,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, ctype, body) = match (req.method(), req.uri().path()) {
        (&http::Method::GET, "/status") => {
            (StatusCode::OK, "application/json", handle.status_json())
        }
        (&http::Method::GET, "/metrics") => (
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            handle.metrics_text(),
        ),
        _ => (StatusCode::NOT_FOUND, "text/plain", "try /status or /metrics\n".to_owned()),
    };
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(ctype));
    Ok(r)
}

/// Serves the status endpoint until the proxy stops accepting.
pub(crate) async fn serve(
    listener: TcpListener,
    handle: ProxyHandle,
    mut shutdown: watch::Receiver<Phase>,
) {
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r { Ok(x) => x, Err(_) => continue },
            _ = shutdown.wait_for(|p| *p != Phase::Running) => return,
        };
        let handle = handle.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| answer(req, handle.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
