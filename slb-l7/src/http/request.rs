//! Parsing a client's request head (HTTP/1.0 and 1.1), strictly.
//!
//! [`parse_request`] is the whole request-head path of the HTTP/1 listener: it decides the status of
//! every malformed, oversized or smuggling-shaped head before anything is sent upstream. Rules:
//! - a head larger than [`RequestLimits::max_head`] or with more than
//!   [`RequestLimits::max_headers`] fields: 431; a request line longer than
//!   [`RequestLimits::max_uri`]: 414;
//! - Content-Length together with Transfer-Encoding, repeated or non-numeric Content-Length,
//!   Transfer-Encoding in an HTTP/1.0 request, missing or repeated Host in HTTP/1.1, an invalid
//!   Host, or anything the tokenizer rejects (obs-fold, spaces before the colon, control bytes): 400;
//! - a transfer coding other than exactly `chunked`, or CONNECT: 501;
//! - a Content-Length above [`RequestLimits::max_body`]: 413.

use std::mem::MaybeUninit;
use std::ops::Range;

use super::{Framing, HeadError, HeaderSpan, has_token, parse_content_length};

/// Size limits for request heads and bodies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestLimits {
    /// Largest request head (request line and fields), bytes.
    pub max_head: usize,
    /// Most header fields.
    pub max_headers: usize,
    /// Longest request line, bytes.
    pub max_uri: usize,
    /// Largest request body, bytes.
    pub max_body: u64,
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits {
            max_head: 16 * 1024,
            max_headers: 100,
            max_uri: 8 * 1024,
            max_body: 1 << 20,
        }
    }
}

/// Hard cap on header fields the tokenizer is given room for.
pub const MAX_HEADERS_CAP: usize = 256;

/// The HTTP/2 connection preface (RFC 9113 section 3.4).
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A parsed request head; ranges index the parsed buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestHead {
    /// Length of the head including the empty line; the body (if any) starts here.
    pub head_len: usize,
    /// The method.
    pub method: Range<usize>,
    /// The request target as sent (origin-form path and query, `*`, or absolute-form).
    pub target: Range<usize>,
    /// The path and query to send upstream (origin-form; within `target`).
    pub path: Range<usize>,
    /// The host (from the Host field, or the authority of an absolute-form target).
    pub host: Option<Range<usize>>,
    /// HTTP minor version (0 or 1).
    pub minor: u8,
    /// How the body is delimited.
    pub framing: Framing,
    /// Whether the client wants the connection kept open after this exchange.
    pub keep_alive: bool,
    /// The Upgrade field's value when the client asks for a protocol upgrade.
    pub upgrade: Option<Range<usize>>,
    /// `Expect: 100-continue` was sent.
    pub expect_continue: bool,
    /// The method is idempotent (RFC 9110 section 9.2.2): safe to retry after it was sent.
    pub idempotent: bool,
    /// The method is HEAD (responses have no body).
    pub is_head: bool,
}

impl RequestHead {
    /// The method, from the parsed buffer.
    pub fn method<'b>(&self, buf: &'b [u8]) -> &'b [u8] {
        &buf[self.method.clone()]
    }

    /// The origin-form path and query, from the parsed buffer.
    pub fn path<'b>(&self, buf: &'b [u8]) -> &'b [u8] {
        &buf[self.path.clone()]
    }

    /// The host (port included if sent), from the parsed buffer.
    pub fn host<'b>(&self, buf: &'b [u8]) -> Option<&'b [u8]> {
        self.host.clone().map(|r| &buf[r])
    }
}

/// True for RFC 9110's idempotent methods.
pub fn is_idempotent(method: &[u8]) -> bool {
    matches!(method, b"GET" | b"HEAD" | b"PUT" | b"DELETE" | b"OPTIONS" | b"TRACE")
}

/// A Host value we accept: host or `[v6]`, optional port, no user info, no path, visible ASCII.
pub fn valid_host(h: &[u8]) -> bool {
    !h.is_empty()
        && h.len() <= 255
        && h.iter().all(|&b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']' | b'_')
        })
}

/// Parses the request head at the start of `buf`.
///
/// Returns `Ok(None)` when the head is not complete yet (read more, unless `buf` has reached
/// [`RequestLimits::max_head`], which this function then reports as 431/414 itself). Header field
/// positions are written to `spans` (cleared first).
pub fn parse_request(
    buf: &[u8],
    limits: &RequestLimits,
    spans: &mut Vec<HeaderSpan>,
) -> Result<Option<RequestHead>, HeadError> {
    spans.clear();
    if buf.starts_with(b"PRI * HTTP/2.0") {
        return Err(HeadError::H2Preface);
    }
    if H2_PREFACE.starts_with(buf) {
        return Ok(None);
    }
    let mut storage = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS_CAP];
    let room = limits.max_headers.clamp(1, MAX_HEADERS_CAP);
    let mut req = httparse::Request::new(&mut []);
    let status = req.parse_with_uninit_headers(buf, &mut storage[..room]);
    let head_len = match status {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            let line_end = buf.iter().position(|&b| b == b'\n');
            if line_end.map_or(buf.len(), |e| e) > limits.max_uri {
                return Err(HeadError::UriTooLong);
            }
            if buf.len() >= limits.max_head {
                return Err(HeadError::HeadersTooLarge);
            }
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::HeadersTooLarge),
        Err(httparse::Error::Version) => {
            return Err(HeadError::BadRequest("unsupported HTTP version"));
        }
        Err(_) => return Err(HeadError::BadRequest("malformed request head")),
    };
    if head_len > limits.max_head {
        return Err(HeadError::HeadersTooLarge);
    }
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(HeadError::BadRequest("incomplete request line"));
    };
    let line_len = buf.iter().position(|&b| b == b'\n').unwrap_or(head_len);
    if line_len > limits.max_uri {
        return Err(HeadError::UriTooLong);
    }
    let method_r = range_of(buf, method.as_bytes());
    let target_r = range_of(buf, target.as_bytes());
    let mb = method.as_bytes();
    if mb == b"CONNECT" {
        return Err(HeadError::NotImplemented);
    }
    let tb = target.as_bytes();
    let (path_r, target_host) = if tb.first() == Some(&b'/') {
        (target_r.clone(), None)
    } else if tb == b"*" {
        if mb != b"OPTIONS" {
            return Err(HeadError::BadRequest("asterisk-form target outside OPTIONS"));
        }
        (target_r.clone(), None)
    } else {
        split_absolute(tb, target_r.start)
            .ok_or(HeadError::BadRequest("request target is not origin-form or absolute-form"))?
    };

    let mut host = None;
    let mut hosts = 0;
    let mut content_length: Option<u64> = None;
    let mut cl_count = 0;
    let mut te_count = 0;
    let mut te_chunked = false;
    let mut conn_close = false;
    let mut conn_keep_alive = false;
    let mut conn_upgrade = false;
    let mut upgrade = None;
    let mut expect_continue = false;
    for h in req.headers.iter() {
        let span = HeaderSpan::of(buf, h.name.as_bytes(), h.value);
        let value = span.value(buf);
        let name = h.name.as_bytes();
        match name.len() {
            4 if name.eq_ignore_ascii_case(b"host") => {
                hosts += 1;
                host = Some(span.value_range());
            }
            14 if name.eq_ignore_ascii_case(b"content-length") => {
                cl_count += 1;
                content_length = Some(
                    parse_content_length(value)
                        .ok_or(HeadError::BadRequest("invalid Content-Length"))?,
                );
            }
            17 if name.eq_ignore_ascii_case(b"transfer-encoding") => {
                te_count += 1;
                te_chunked = value.eq_ignore_ascii_case(b"chunked");
            }
            10 if name.eq_ignore_ascii_case(b"connection") => {
                conn_close |= has_token(value, b"close");
                conn_keep_alive |= has_token(value, b"keep-alive");
                conn_upgrade |= has_token(value, b"upgrade");
            }
            7 if name.eq_ignore_ascii_case(b"upgrade") => upgrade = Some(span.value_range()),
            6 if name.eq_ignore_ascii_case(b"expect") => {
                expect_continue = value.eq_ignore_ascii_case(b"100-continue");
            }
            _ => {}
        }
        spans.push(span);
    }

    let framing = if te_count > 0 {
        if cl_count > 0 {
            return Err(HeadError::BadRequest("both Content-Length and Transfer-Encoding"));
        }
        if minor == 0 {
            return Err(HeadError::BadRequest("Transfer-Encoding in an HTTP/1.0 request"));
        }
        if te_count > 1 || !te_chunked {
            return Err(HeadError::NotImplemented);
        }
        Framing::Chunked
    } else if cl_count > 1 {
        return Err(HeadError::BadRequest("repeated Content-Length"));
    } else {
        match content_length {
            Some(n) if n > limits.max_body => return Err(HeadError::BodyTooLarge),
            Some(0) | None => Framing::None,
            Some(n) => Framing::Length(n),
        }
    };

    if hosts > 1 {
        return Err(HeadError::BadRequest("repeated Host"));
    }
    let host = match (target_host, host) {
        (Some(t), _) => Some(t),
        (None, Some(h)) => Some(h),
        (None, None) if minor == 0 => None,
        (None, None) => return Err(HeadError::BadRequest("missing Host")),
    };
    if let Some(h) = &host {
        if !valid_host(&buf[h.clone()]) {
            return Err(HeadError::BadRequest("invalid Host"));
        }
    }
    let keep_alive = if minor == 0 { conn_keep_alive && !conn_close } else { !conn_close };
    Ok(Some(RequestHead {
        head_len,
        method: method_r,
        target: target_r,
        path: path_r,
        host,
        minor,
        framing,
        keep_alive,
        upgrade: if conn_upgrade { upgrade } else { None },
        expect_continue,
        idempotent: is_idempotent(mb),
        is_head: mb == b"HEAD",
    }))
}

fn range_of(base: &[u8], part: &[u8]) -> Range<usize> {
    let start = (part.as_ptr() as usize).saturating_sub(base.as_ptr() as usize);
    start..start + part.len()
}

/// Splits `http://authority/path` into (path range, authority range), offsets from `at`.
fn split_absolute(t: &[u8], at: usize) -> Option<(Range<usize>, Option<Range<usize>>)> {
    let rest_at = if t.len() >= 7 && t[..7].eq_ignore_ascii_case(b"http://") {
        7
    } else if t.len() >= 8 && t[..8].eq_ignore_ascii_case(b"https://") {
        8
    } else {
        return None;
    };
    let rest = &t[rest_at..];
    let auth_len = rest.iter().position(|&b| matches!(b, b'/' | b'?')).unwrap_or(rest.len());
    if auth_len == 0 {
        return None;
    }
    let auth = at + rest_at..at + rest_at + auth_len;
    let path_start = at + rest_at + auth_len;
    // "http://host" or "http://host?q" have no path: the rewriter sends "/" in front.
    Some((path_start..at + t.len(), Some(auth)))
}

#[cfg(test)]
mod tests;
