//! Runtime changes: the errors of the Rust API ([`Pool::add_backend`] and friends,
//! [`ProxyHandle::reload`]) and the admin HTTP API that exposes the same operations on its own
//! listener (`[admin] address`, loopback unless `allow_remote`; `Authorization: Bearer TOKEN`
//! when a token is set). Every change is atomic (one scheduler swap) and keeps the runtime state
//! of the backends it does not touch.
//!
//! | request | does |
//! |---|---|
//! | `GET /pools` | pools and backends: weight, admin state, health, counters (JSON) |
//! | `GET /pools/NAME` | one pool |
//! | `POST /pools/NAME/backends?address=A[&weight=W][&state=up\|draining\|disabled]` | add |
//! | `DELETE /pools/NAME/backends/ADDR` | remove (requests in flight finish) |
//! | `POST /pools/NAME/backends/ADDR/drain` | drain: no new requests, sticky clients move |
//! | `POST /pools/NAME/backends/ADDR/enable`, `.../disable` | enable, disable |
//! | `POST /pools/NAME/backends/ADDR/weight?value=W` | re-weight |
//! | `POST /reload` | re-read the configuration file (a TOML body: apply that instead) |
//! | `GET /status`, `GET /metrics` | as on the status endpoint |
//!
//! Answers are JSON: `{"ok": true, ...}`, or `{"error": "..."}` with 400 (bad request), 401 (no
//! or wrong token), 404 (no such pool or backend), 409 (backend exists) or 422 (configuration
//! rejected; the running one stays).
//!
//! [`Pool::add_backend`]: crate::pool::Pool::add_backend
//! [`ProxyHandle::reload`]: crate::ProxyHandle::reload

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use slb_core::backend::BackendState;
use slb_core::health::HealthStatus;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::{Config, ConfigError};
use crate::pool::{BackendSpec, Pool};
use crate::server::{Phase, ProxyHandle};
use crate::status::{escape, state_name};

/// Why a runtime change was refused. Nothing changed when one is returned.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// No pool by that name.
    #[error("no pool named {0:?}")]
    NoSuchPool(String),
    /// No backend at that address in the pool.
    #[error("no backend {0} in the pool")]
    NoSuchBackend(SocketAddr),
    /// The address is in the pool already.
    #[error("backend {0} is in the pool already")]
    BackendExists(SocketAddr),
    /// A request that makes no sense (bad address, weight, state).
    #[error("{0}")]
    Invalid(String),
    /// The new configuration was rejected; the running one stays.
    #[error("{0}")]
    Config(#[from] ConfigError),
}

impl AdminError {
    fn status(&self) -> StatusCode {
        match self {
            AdminError::NoSuchPool(_) | AdminError::NoSuchBackend(_) => StatusCode::NOT_FOUND,
            AdminError::BackendExists(_) => StatusCode::CONFLICT,
            AdminError::Invalid(_) => StatusCode::BAD_REQUEST,
            AdminError::Config(_) => StatusCode::UNPROCESSABLE_ENTITY,
        }
    }
}

/// `%XX` escapes decoded (invalid ones kept as they are).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (b[i], b.get(i + 1).copied().and_then(hex), b.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b'+', _, _) => {
                out.push(b' ');
                i += 1;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (percent_decode(k) == name).then(|| percent_decode(v))
    })
}

fn parse_addr(s: &str) -> Result<SocketAddr, AdminError> {
    s.parse()
        .map_err(|_| AdminError::Invalid(format!("{s:?} is not an address such as 127.0.0.1:9001")))
}

fn parse_state(s: &str) -> Result<BackendState, AdminError> {
    match s {
        "up" | "enabled" => Ok(BackendState::Up),
        "draining" => Ok(BackendState::Draining),
        "disabled" => Ok(BackendState::Disabled),
        _ => Err(AdminError::Invalid(format!("state {s:?}: use up, draining or disabled"))),
    }
}

/// One pool as JSON.
pub(crate) fn pool_json(p: &Pool) -> String {
    let mut out = format!(
        "{{\"name\": \"{}\", \"check\": \"{}\", \"sticky_templates\": {}, \"backends\": [",
        escape(p.name()),
        p.check_kind(),
        p.sticky_templates()
    );
    for (i, b) in p.backends().iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(
            out,
            "\n  {{\"id\": {}, \"address\": \"{}\", \"weight\": {}, \"admin\": \"{}\", \"health\": \"{}\", \
             \"ejected\": {}, \"usable\": {}, \"active\": {}, \"idle\": {}, \"requests\": {}, \"failures\": {}, \
             \"connect_errors\": {}, \"timeouts\": {}, \"responses_5xx\": {}, \"checks\": {}, \"check_failures\": {}}}",
            b.id.0,
            b.address,
            b.weight,
            state_name(b.admin),
            if b.health == HealthStatus::Up { "up" } else { "down" },
            b.ejected,
            b.usable,
            b.active,
            b.idle,
            b.stats.requests(),
            b.stats.failures(),
            b.stats.connect_errors(),
            b.stats.timeouts(),
            b.stats.status_5xx(),
            b.checks.0,
            b.checks.1,
        );
    }
    out.push_str("\n]}");
    out
}

/// Compares a presented credential with the expected one in time that depends only on their
/// lengths (not on where they first differ).
fn same_secret(got: &[u8], want: &[u8]) -> bool {
    got.len() == want.len() && got.iter().zip(want).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

fn ok(extra: &str) -> (StatusCode, String) {
    (StatusCode::OK, format!("{{\"ok\": true{extra}}}\n"))
}

fn error(e: &AdminError) -> (StatusCode, String) {
    (e.status(), format!("{{\"error\": \"{}\"}}\n", escape(&e.to_string())))
}

async fn route(req: Request<Incoming>, handle: &ProxyHandle) -> (StatusCode, &'static str, String) {
    const JSON: &str = "application/json";
    if let Some(token) = handle.admin_token() {
        let want = format!("Bearer {token}");
        let got = req.headers().get(http::header::AUTHORIZATION).map_or(&b""[..], |v| v.as_bytes());
        if !same_secret(got, want.as_bytes()) {
            return (
                StatusCode::UNAUTHORIZED,
                JSON,
                "{\"error\": \"missing or wrong token\"}\n".into(),
            );
        }
    }
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    let segs: Vec<String> =
        path.trim_matches('/').split('/').filter(|s| !s.is_empty()).map(percent_decode).collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let result: Result<(StatusCode, String), AdminError> = match (&method, segs.as_slice()) {
        (&Method::GET, ["status"]) => return (StatusCode::OK, JSON, handle.status_json()),
        (&Method::GET, ["metrics"]) => {
            return (
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                handle.metrics_text(),
            );
        }
        (&Method::GET, ["pools"]) => {
            let list: Vec<String> = handle.pools().iter().map(|p| pool_json(p)).collect();
            Ok((StatusCode::OK, format!("{{\"pools\": [\n{}\n]}}\n", list.join(",\n"))))
        }
        (&Method::GET, ["pools", name]) => handle
            .pool(name)
            .map(|p| (StatusCode::OK, format!("{}\n", pool_json(&p))))
            .ok_or_else(|| AdminError::NoSuchPool((*name).into())),
        (&Method::POST, ["pools", name, "backends"]) => (|| {
            let addr = query_param(query.as_deref(), "address")
                .ok_or_else(|| AdminError::Invalid("give ?address=HOST:PORT".into()))?;
            let mut spec = BackendSpec::new(parse_addr(&addr)?);
            if let Some(w) = query_param(query.as_deref(), "weight") {
                spec.weight =
                    w.parse().map_err(|_| AdminError::Invalid(format!("weight {w:?}")))?;
            }
            if let Some(s) = query_param(query.as_deref(), "state") {
                spec.state = parse_state(&s)?;
            }
            handle.add_backend(name, spec)?;
            Ok((StatusCode::CREATED, format!("{{\"ok\": true, \"added\": \"{addr}\"}}\n")))
        })(),
        (&Method::DELETE, ["pools", name, "backends", addr]) => {
            parse_addr(addr).and_then(|a| handle.remove_backend(name, a)).map(|()| ok(""))
        }
        (&Method::POST, ["pools", name, "backends", addr, action]) => (|| {
            let a = parse_addr(addr)?;
            match *action {
                "drain" => handle.drain_backend(name, a)?,
                "enable" => handle.enable_backend(name, a, true)?,
                "disable" => handle.enable_backend(name, a, false)?,
                "weight" => {
                    let w = query_param(query.as_deref(), "value")
                        .ok_or_else(|| AdminError::Invalid("give ?value=WEIGHT".into()))?;
                    let w = w.parse().map_err(|_| AdminError::Invalid(format!("weight {w:?}")))?;
                    handle.set_weight(name, a, w)?
                }
                other => return Err(AdminError::Invalid(format!("unknown action {other:?}"))),
            }
            Ok(ok(""))
        })(),
        (&Method::POST, ["reload"]) => {
            let body = match Limited::new(req.into_body(), 1 << 20).collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => {
                    return (
                        StatusCode::PAYLOAD_TOO_LARGE,
                        JSON,
                        "{\"error\": \"body over 1 MiB\"}\n".into(),
                    );
                }
            };
            let handle = handle.clone();
            let outcome = tokio::task::spawn_blocking(move || {
                if body.is_empty() {
                    handle.reload_from_file()
                } else {
                    let text = std::str::from_utf8(&body)
                        .map_err(|_| AdminError::Invalid("the body is not UTF-8".into()))?;
                    let cfg = Config::from_toml(text).map_err(AdminError::Config)?;
                    handle.reload(cfg)
                }
            })
            .await
            .unwrap_or_else(|e| Err(AdminError::Invalid(format!("reload task failed: {e}"))));
            outcome.map(|s| {
                let list = |v: &[String]| {
                    v.iter().map(|n| format!("\"{}\"", escape(n))).collect::<Vec<_>>().join(", ")
                };
                ok(&format!(
                    ", \"updated\": [{}], \"rebuilt\": [{}], \"added\": [{}], \"removed\": [{}]",
                    list(&s.updated),
                    list(&s.rebuilt),
                    list(&s.added),
                    list(&s.removed)
                ))
            })
        }
        _ => Err(AdminError::Invalid(format!("no such operation: {method} {path}"))),
    };
    let (status, body) = result.unwrap_or_else(|e| {
        if let AdminError::NoSuchPool(_) | AdminError::NoSuchBackend(_) = e {
            error(&e)
        } else {
            let (s, b) = error(&e);
            if let AdminError::Config(ConfigError { .. }) = e {
                tracing::warn!(error = %e, "reload rejected; the running configuration stays");
            }
            (s, b)
        }
    });
    (status, JSON, body)
}

/// Serves the admin API until the proxy stops accepting.
pub(crate) async fn serve(
    listener: TcpListener,
    handle: ProxyHandle,
    mut phase: watch::Receiver<Phase>,
) {
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r { Ok(x) => x, Err(_) => continue },
            _ = phase.wait_for(|p| *p != Phase::Running) => return,
        };
        let handle = handle.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let handle = handle.clone();
                async move {
                    let (status, ctype, body) = route(req, &handle).await;
                    let mut r = Response::new(Full::new(Bytes::from(body)));
                    *r.status_mut() = status;
                    r.headers_mut()
                        .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(ctype));
                    Ok::<_, Infallible>(r)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_and_paths_decode() {
        assert_eq!(percent_decode("127.0.0.1%3A9001"), "127.0.0.1:9001");
        assert_eq!(percent_decode("%5B%3A%3A1%5D:80"), "[::1]:80");
        assert_eq!(percent_decode("bad%zz"), "bad%zz");
        let q = Some("address=127.0.0.1%3A9001&weight=3");
        assert_eq!(query_param(q, "weight").as_deref(), Some("3"));
        assert_eq!(query_param(q, "address").as_deref(), Some("127.0.0.1:9001"));
        assert_eq!(query_param(q, "state"), None);
        assert_eq!(parse_state("draining"), Ok(BackendState::Draining));
        assert!(parse_state("down").is_err());
        assert!(same_secret(b"Bearer t0k", b"Bearer t0k"));
        assert!(!same_secret(b"Bearer t0K", b"Bearer t0k"));
        assert!(!same_secret(b"Bearer t0k!", b"Bearer t0k"));
        assert!(!same_secret(b"", b"Bearer t0k"));
    }
}
