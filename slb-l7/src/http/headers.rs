//! Header rewriting between client and upstream: hop-by-hop removal (RFC 9110 section 7.6.1),
//! X-Forwarded-* and X-Real-IP, and configured add/remove rules.

use std::io::Write as _;

use super::request::RequestHead;
use super::response::ResponseHead;
use super::{Framing, HeaderSpan, has_token};
use crate::sticky::cookie::{CookieEdit, CookieRewrite, edit_cookie_header};

/// Header add/remove rules for one direction (request or response).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderRules {
    /// Lower-case names of fields to drop.
    pub remove: Vec<Box<[u8]>>,
    /// Fields to append, `(name, value)`.
    pub add: Vec<(Box<str>, Box<str>)>,
}

impl HeaderRules {
    /// True when there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.add.is_empty()
    }

    /// True when `name` is to be dropped.
    pub fn removes(&self, name: &[u8]) -> bool {
        self.remove.iter().any(|r| r.eq_ignore_ascii_case(name))
    }

    /// Rules applying `self` and then `other`.
    pub fn merged(&self, other: &HeaderRules) -> HeaderRules {
        let mut r = self.clone();
        r.remove.extend(other.remove.iter().cloned());
        r.add.extend(other.add.iter().cloned());
        r
    }

    fn write_added(&self, out: &mut Vec<u8>) {
        for (n, v) in &self.add {
            put(out, n.as_bytes(), v.as_bytes());
        }
    }
}

/// What to do with a client's X-Forwarded-For.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ForwardedFor {
    /// Append the client address to the list received (nginx `$proxy_add_x_forwarded_for`).
    #[default]
    Append,
    /// Replace whatever the client sent with its address (for edge proxies facing the internet).
    Replace,
}

/// Per-request facts the request rewriter needs.
#[derive(Clone, Copy, Debug)]
pub struct ForwardInfo<'a> {
    /// The client's address, formatted.
    pub client_ip: &'a str,
    /// `http` or `https`.
    pub proto: &'a str,
    /// X-Forwarded-For handling.
    pub forwarded_for: ForwardedFor,
    /// Host to send instead of the client's.
    pub host_override: Option<&'a str>,
    /// Host to send when the client sent none (HTTP/1.0).
    pub default_host: &'a str,
    /// Request rules.
    pub rules: &'a HeaderRules,
    /// Sticky cookie to hide from (or un-prefix for) the backend.
    pub cookie_edit: Option<CookieEdit<'a>>,
}

/// The hop-by-hop fields of RFC 9110 section 7.6.1 (and Proxy-Connection), lower case.
pub fn is_hop_by_hop(name: &[u8]) -> bool {
    const HOP: [&[u8]; 6] = [
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"transfer-encoding",
        b"upgrade",
    ];
    HOP.iter().any(|h| h.eq_ignore_ascii_case(name))
}

/// Fields the request rewriter always writes itself.
fn is_rewritten_request_field(name: &[u8]) -> bool {
    const OWN: [&[u8]; 7] = [
        b"host",
        b"content-length",
        b"expect",
        b"x-forwarded-for",
        b"x-real-ip",
        b"x-forwarded-proto",
        b"x-forwarded-host",
    ];
    OWN.iter().any(|h| h.eq_ignore_ascii_case(name))
}

fn put(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Writes a Cookie field with the sticky cookie edited (nothing when no cookie is left).
fn put_edited_cookie(out: &mut Vec<u8>, name: &[u8], value: &[u8], edit: CookieEdit<'_>) {
    let start = out.len();
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    if edit_cookie_header(value, edit, out) {
        out.extend_from_slice(b"\r\n");
    } else {
        out.truncate(start);
    }
}

/// True when a field named in a Connection header lists `name`.
fn listed_in_connection(buf: &[u8], spans: &[HeaderSpan], name: &[u8]) -> bool {
    spans
        .iter()
        .any(|s| s.name(buf).eq_ignore_ascii_case(b"connection") && has_token(s.value(buf), name))
}

/// Writes the HTTP/1.1 request head for the upstream into `out` (cleared first).
///
/// `body_len` is the length of the (buffered, de-chunked) body that follows; `buf`/`head`/`spans`
/// are the client's parsed head.
pub fn write_request_head(
    out: &mut Vec<u8>,
    buf: &[u8],
    head: &RequestHead,
    spans: &[HeaderSpan],
    body_len: u64,
    fwd: &ForwardInfo<'_>,
) {
    out.clear();
    let has_connection = spans.iter().any(|s| s.name(buf).eq_ignore_ascii_case(b"connection"));
    out.extend_from_slice(head.method(buf));
    out.push(b' ');
    let path = head.path(buf);
    if path.first() != Some(&b'/') && path != b"*" {
        out.push(b'/');
    }
    out.extend_from_slice(path);
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let client_host = head.host(buf);
    let host =
        fwd.host_override.map(str::as_bytes).or(client_host).unwrap_or(fwd.default_host.as_bytes());
    put(out, b"Host", host);
    let mut xff_seen = false;
    for s in spans {
        let name = s.name(buf);
        if name.eq_ignore_ascii_case(b"x-forwarded-for") {
            xff_seen = true;
            continue;
        }
        if is_hop_by_hop(name)
            || is_rewritten_request_field(name)
            || fwd.rules.removes(name)
            || (has_connection && listed_in_connection(buf, spans, name))
        {
            continue;
        }
        if let Some(edit) = fwd.cookie_edit {
            if name.eq_ignore_ascii_case(b"cookie") {
                put_edited_cookie(out, name, s.value(buf), edit);
                continue;
            }
        }
        put(out, name, s.value(buf));
    }
    out.extend_from_slice(b"X-Forwarded-For: ");
    if xff_seen && fwd.forwarded_for == ForwardedFor::Append {
        // Repeated fields are one list (RFC 9110 section 5.3): join them in order.
        for s in spans.iter().filter(|s| s.name(buf).eq_ignore_ascii_case(b"x-forwarded-for")) {
            out.extend_from_slice(s.value(buf));
            out.extend_from_slice(b", ");
        }
    }
    out.extend_from_slice(fwd.client_ip.as_bytes());
    out.extend_from_slice(b"\r\n");
    finish_request_head(
        out,
        client_host,
        head.upgrade.clone().map(|r| &buf[r]),
        head.framing,
        body_len,
        fwd,
    );
}

fn finish_request_head(
    out: &mut Vec<u8>,
    client_host: Option<&[u8]>,
    upgrade: Option<&[u8]>,
    framing: Framing,
    body_len: u64,
    fwd: &ForwardInfo<'_>,
) {
    put(out, b"X-Real-IP", fwd.client_ip.as_bytes());
    put(out, b"X-Forwarded-Proto", fwd.proto.as_bytes());
    if let Some(h) = client_host {
        put(out, b"X-Forwarded-Host", h);
    }
    if body_len > 0 || framing != Framing::None {
        let _ = write!(out, "Content-Length: {body_len}\r\n");
    }
    if let Some(u) = upgrade {
        put(out, b"Connection", b"upgrade");
        put(out, b"Upgrade", u);
    }
    fwd.rules.write_added(out);
    out.extend_from_slice(b"\r\n");
}

/// Writes the upstream request head for a request that arrived over HTTP/2 (or any
/// [`http::request::Parts`]) into `out` (cleared first).
pub fn write_request_head_parts(
    out: &mut Vec<u8>,
    parts: &http::request::Parts,
    body_len: u64,
    fwd: &ForwardInfo<'_>,
) {
    out.clear();
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    if !pq.starts_with('/') && pq != "*" {
        out.push(b'/');
    }
    out.extend_from_slice(pq.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let client_host = parts
        .uri
        .authority()
        .map(|a| a.as_str().as_bytes())
        .or_else(|| parts.headers.get(http::header::HOST).map(|v| v.as_bytes()));
    let host =
        fwd.host_override.map(str::as_bytes).or(client_host).unwrap_or(fwd.default_host.as_bytes());
    put(out, b"Host", host);
    let mut xff: Option<Vec<u8>> = None;
    let conn = parts.headers.get_all(http::header::CONNECTION);
    for (name, value) in &parts.headers {
        let n = name.as_str().as_bytes();
        if n == b"x-forwarded-for" && fwd.forwarded_for == ForwardedFor::Append {
            let v = xff.get_or_insert_with(Vec::new);
            if !v.is_empty() {
                v.extend_from_slice(b", ");
            }
            v.extend_from_slice(value.as_bytes());
            continue;
        }
        if is_hop_by_hop(n)
            || is_rewritten_request_field(n)
            || fwd.rules.removes(n)
            || conn.iter().any(|c| has_token(c.as_bytes(), n))
        {
            continue;
        }
        if let (Some(edit), b"cookie") = (fwd.cookie_edit, n) {
            put_edited_cookie(out, n, value.as_bytes(), edit);
            continue;
        }
        put(out, n, value.as_bytes());
    }
    match xff {
        Some(mut v) => {
            v.extend_from_slice(b", ");
            v.extend_from_slice(fwd.client_ip.as_bytes());
            put(out, b"X-Forwarded-For", &v);
        }
        None => put(out, b"X-Forwarded-For", fwd.client_ip.as_bytes()),
    }
    let has_body = body_len > 0 || !matches!(parts.method, http::Method::GET | http::Method::HEAD);
    finish_request_head(
        out,
        client_host,
        None,
        if has_body { Framing::Length(body_len) } else { Framing::None },
        body_len,
        fwd,
    );
}

/// How the response body is passed to an HTTP/1 client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResponseFraming {
    /// The connection stays open after the response.
    pub keep_alive: bool,
    /// Chunked coding is passed through unchanged (HTTP/1.1 client); otherwise it is removed and
    /// the body ends at connection close.
    pub chunked_passthrough: bool,
    /// The client speaks HTTP/1.0.
    pub client_http10: bool,
}

/// Writes the response head for an HTTP/1 client into `out` (appends).
pub fn write_response_head(
    out: &mut Vec<u8>,
    buf: &[u8],
    head: &ResponseHead,
    spans: &[HeaderSpan],
    framing: ResponseFraming,
    rules: &HeaderRules,
) {
    write_response_head_with_cookie(out, buf, head, spans, framing, rules, &CookieRewrite::None)
}

/// [`write_response_head`], with the sticky cookie inserted or the backend's rewritten.
pub fn write_response_head_with_cookie(
    out: &mut Vec<u8>,
    buf: &[u8],
    head: &ResponseHead,
    spans: &[HeaderSpan],
    framing: ResponseFraming,
    rules: &HeaderRules,
    cookie: &CookieRewrite,
) {
    let rewriting = matches!(cookie, CookieRewrite::Rewrite { .. } | CookieRewrite::Prefix { .. });
    let _ = write!(out, "HTTP/1.1 {} ", head.status);
    out.extend_from_slice(buf.get(head.reason.clone()).unwrap_or_default());
    out.extend_from_slice(b"\r\n");
    let switching = head.status == 101;
    let has_connection = spans.iter().any(|s| s.name(buf).eq_ignore_ascii_case(b"connection"));
    for s in spans {
        let name = s.name(buf);
        let keep_te =
            framing.chunked_passthrough && name.eq_ignore_ascii_case(b"transfer-encoding");
        let keep_upgrade = switching && name.eq_ignore_ascii_case(b"upgrade");
        if (is_hop_by_hop(name) && !keep_te && !keep_upgrade)
            || rules.removes(name)
            || (has_connection && !keep_upgrade && listed_in_connection(buf, spans, name))
        {
            continue;
        }
        if rewriting && name.eq_ignore_ascii_case(b"set-cookie") {
            if let Some(v) = cookie.rewrite_set_cookie(s.value(buf)) {
                put(out, name, &v);
                continue;
            }
        }
        put(out, name, s.value(buf));
    }
    if let CookieRewrite::Insert(v) = cookie {
        put(out, b"Set-Cookie", v.as_bytes());
    }
    if switching {
        put(out, b"Connection", b"upgrade");
    } else if !framing.keep_alive {
        put(out, b"Connection", b"close");
    } else if framing.client_http10 {
        put(out, b"Connection", b"keep-alive");
    }
    rules.write_added(out);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests;
