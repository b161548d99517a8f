//! Parsing an upstream's response head.

use std::mem::MaybeUninit;
use std::ops::Range;

use super::{Framing, HeaderSpan, has_token, parse_content_length};

/// Most header fields accepted from an upstream.
pub const MAX_RESPONSE_HEADERS: usize = 128;

/// A parsed response head; ranges index the parsed buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseHead {
    /// Length of the head including the empty line.
    pub head_len: usize,
    /// Status code.
    pub status: u16,
    /// Reason phrase.
    pub reason: Range<usize>,
    /// HTTP minor version (0 or 1).
    pub minor: u8,
    /// How the body is delimited (already accounting for HEAD requests and 1xx/204/304).
    pub framing: Framing,
    /// Whether the upstream keeps the connection open after this response.
    pub keep_alive: bool,
}

/// Why a response head was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid upstream response: {0}")]
pub struct ResponseError(pub &'static str);

/// Parses the response head at the start of `buf` (the answer to a HEAD request when
/// `head_request`). `Ok(None)`: not complete yet. Field positions go to `spans`.
pub fn parse_response(
    buf: &[u8],
    head_request: bool,
    max_head: usize,
    spans: &mut Vec<HeaderSpan>,
) -> Result<Option<ResponseHead>, ResponseError> {
    spans.clear();
    let mut storage =
        [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_RESPONSE_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let head_len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut resp,
        buf,
        &mut storage,
    ) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= max_head => {
            return Err(ResponseError("head too large"));
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(ResponseError("too many fields")),
        Err(_) => return Err(ResponseError("malformed head")),
    };
    if head_len > max_head {
        return Err(ResponseError("head too large"));
    }
    let (Some(status), Some(minor)) = (resp.code, resp.version) else {
        return Err(ResponseError("incomplete status line"));
    };
    if !(100..=599).contains(&status) {
        return Err(ResponseError("status code out of range"));
    }
    let reason = resp.reason.map_or(0..0, |r| {
        let start = (r.as_ptr() as usize).saturating_sub(buf.as_ptr() as usize);
        start..start + r.len()
    });
    let mut content_length = None;
    let mut chunked = false;
    let mut te = false;
    let mut close = false;
    let mut keep_alive = false;
    for h in resp.headers.iter() {
        let span = HeaderSpan::of(buf, h.name.as_bytes(), h.value);
        let name = h.name.as_bytes();
        let value = span.value(buf);
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = parse_content_length(value).ok_or(ResponseError("invalid Content-Length"))?;
            if content_length.is_some_and(|m| m != n) {
                return Err(ResponseError("conflicting Content-Length"));
            }
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            te = true;
            chunked = value
                .rsplit(|&b| b == b',')
                .next()
                .is_some_and(|last| super::trim(last).eq_ignore_ascii_case(b"chunked"));
        } else if name.eq_ignore_ascii_case(b"connection") {
            close |= has_token(value, b"close");
            keep_alive |= has_token(value, b"keep-alive");
        }
        spans.push(span);
    }
    let framing = if head_request || (100..200).contains(&status) || status == 204 || status == 304
    {
        Framing::None
    } else if te {
        if chunked { Framing::Chunked } else { Framing::UntilClose }
    } else {
        match content_length {
            Some(0) => Framing::None,
            Some(n) => Framing::Length(n),
            None => Framing::UntilClose,
        }
    };
    let keep_alive = framing != Framing::UntilClose
        && !close
        && (minor == 1 || keep_alive)
        && !(te && content_length.is_some());
    Ok(Some(ResponseHead { head_len, status, reason, minor, framing, keep_alive }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &[u8], head: bool) -> ResponseHead {
        parse_response(s, head, 8192, &mut Vec::new()).unwrap().unwrap()
    }

    #[test]
    fn framing_rules() {
        let r = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n", false);
        assert_eq!(
            (r.status, r.framing, r.keep_alive, r.head_len),
            (200, Framing::Length(3), true, 38)
        );
        let r = parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", false);
        assert_eq!(r.framing, Framing::Chunked);
        let r = parse(b"HTTP/1.1 200 OK\r\n\r\n", false);
        assert_eq!((r.framing, r.keep_alive), (Framing::UntilClose, false));
        let r = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", true);
        assert_eq!(r.framing, Framing::None, "HEAD");
        let r = parse(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 3\r\n\r\n", false);
        assert_eq!(r.framing, Framing::None);
        let r = parse(b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\n", false);
        assert!(!r.keep_alive, "1.0 without keep-alive");
        let r = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\n", false);
        assert!(!r.keep_alive);
    }

    #[test]
    fn rejects_bad_heads() {
        let mut v = Vec::new();
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", false, 8192, &mut v)
                .is_err()
        );
        assert!(
            parse_response(
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                false,
                8192,
                &mut v
            )
            .is_err()
        );
        assert!(parse_response(b"garbage\r\n\r\n", false, 8192, &mut v).is_err());
        assert!(
            parse_response(b"HTTP/1.1 000 OK\r\n\r\n", false, 8192, &mut v).is_err(),
            "found by fuzzing"
        );
        assert!(parse_response(b"HTTP/1.1 600 X\r\n\r\n", false, 8192, &mut v).is_err());
        assert_eq!(parse_response(b"HTTP/1.1 200 OK\r\n", false, 8192, &mut v), Ok(None));
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nX: y\r\n", false, 10, &mut v).is_err());
    }
}
