//! The request path: HTTP/1 connections ([`h1`]), HTTP/2 connections ([`h2`]), and the upstream
//! exchange with retries both share ([`forward`]).

pub(crate) mod forward;
pub(crate) mod h1;
pub(crate) mod h2;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use slb_core::flow::HashKey;

use crate::http::HeaderSpan;
use crate::http::headers::ForwardedFor;
use crate::http::request::RequestLimits;
use crate::pool::{HashSource, Pool, cookie_value};
use crate::route::Router;

/// Client-facing settings in force.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) limits: RequestLimits,
    pub(crate) header_timeout: Duration,
    pub(crate) body_timeout: Duration,
    pub(crate) keepalive_timeout: Duration,
    pub(crate) send_timeout: Duration,
    pub(crate) drain_idle: Duration,
    pub(crate) forwarded_for: ForwardedFor,
}

/// Routing table and settings, swapped as a whole.
#[derive(Debug)]
pub(crate) struct Active {
    pub(crate) router: Router,
    pub(crate) settings: Settings,
}

/// Facts about one client connection.
#[derive(Clone, Debug)]
pub(crate) struct ConnInfo {
    /// The client (from a PROXY header when the listener is behind an L4 tier).
    pub(crate) peer: SocketAddr,
    /// The address the client connected to (likewise).
    pub(crate) local: SocketAddr,
    pub(crate) tls: bool,
    pub(crate) sni: Option<Arc<str>>,
    /// Accept HTTP/2 with prior knowledge on this plain-text connection.
    pub(crate) h2c: bool,
    /// `peer`'s address as text (X-Forwarded-For, X-Real-IP).
    pub(crate) client_ip: Arc<str>,
    /// `local` as text (Host for HTTP/1.0 requests without one).
    pub(crate) local_str: Arc<str>,
}

impl ConnInfo {
    pub(crate) fn new(peer: SocketAddr, local: SocketAddr, h2c: bool) -> Self {
        ConnInfo {
            peer,
            local,
            tls: false,
            sni: None,
            h2c,
            client_ip: peer.ip().to_string().into(),
            local_str: local.to_string().into(),
        }
    }
}

/// The scheduler hash of a request, from its head (HTTP/1 spans).
pub(crate) fn hash_h1(
    pool: &Pool,
    peer: SocketAddr,
    buf: &[u8],
    path: &[u8],
    spans: &[HeaderSpan],
) -> u64 {
    let key: &HashKey = &pool.settings.hash_key;
    let by_value =
        |v: Option<&[u8]>| v.map(|v| key.hash_bytes(v)).unwrap_or_else(|| key.hash_ip(peer.ip()));
    match &pool.settings.hash {
        HashSource::ClientIp => key.hash_ip(peer.ip()),
        HashSource::Uri => key.hash_bytes(path),
        HashSource::Header(n) => by_value(
            spans
                .iter()
                .find(|s| s.name(buf).eq_ignore_ascii_case(n.as_bytes()))
                .map(|s| s.value(buf)),
        ),
        HashSource::Cookie(n) => by_value(
            spans
                .iter()
                .filter(|s| s.name(buf).eq_ignore_ascii_case(b"cookie"))
                .find_map(|s| cookie_value(s.value(buf), n)),
        ),
    }
}

/// The scheduler hash of a request that arrived as [`http::request::Parts`].
pub(crate) fn hash_parts(pool: &Pool, peer: SocketAddr, parts: &http::request::Parts) -> u64 {
    let key = &pool.settings.hash_key;
    let by_value =
        |v: Option<&[u8]>| v.map(|v| key.hash_bytes(v)).unwrap_or_else(|| key.hash_ip(peer.ip()));
    match &pool.settings.hash {
        HashSource::ClientIp => key.hash_ip(peer.ip()),
        HashSource::Uri => {
            key.hash_bytes(parts.uri.path_and_query().map_or("/", |p| p.as_str()).as_bytes())
        }
        HashSource::Header(n) => by_value(parts.headers.get(n.as_str()).map(|v| v.as_bytes())),
        HashSource::Cookie(n) => by_value(
            parts
                .headers
                .get_all(http::header::COOKIE)
                .iter()
                .find_map(|c| cookie_value(c.as_bytes(), n)),
        ),
    }
}

/// Reason phrases for the statuses the proxy writes itself.
pub(crate) fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        408 => "Request Timeout",
        413 => "Content Too Large",
        414 => "URI Too Long",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}
