//! HTTP/1.1 wire handling without I/O: request and response heads, chunked bodies, and the
//! header rewriting between a client and an upstream.
//!
//! Everything here takes byte slices and returns values or errors; nothing reads a socket or a
//! clock, so it can be fuzzed directly (`fuzz/fuzz_targets/l7_request_head.rs`). Header positions
//! are kept as offsets into the caller's buffer ([`HeaderSpan`]), so parsing allocates nothing
//! once the caller's scratch vector has grown to its working size.

pub mod chunked;
pub mod headers;
pub mod request;
pub mod response;

use std::ops::Range;

/// Where one header lives in the buffer that was parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct HeaderSpan {
    name: (u32, u32),
    value: (u32, u32),
}

impl HeaderSpan {
    /// The header name's byte range.
    pub fn name_range(&self) -> Range<usize> {
        self.name.0 as usize..self.name.1 as usize
    }

    /// The header value's byte range.
    pub fn value_range(&self) -> Range<usize> {
        self.value.0 as usize..self.value.1 as usize
    }

    /// The name, from the buffer that was parsed.
    pub fn name<'b>(&self, buf: &'b [u8]) -> &'b [u8] {
        buf.get(self.name_range()).unwrap_or_default()
    }

    /// The value (without surrounding whitespace), from the buffer that was parsed.
    pub fn value<'b>(&self, buf: &'b [u8]) -> &'b [u8] {
        buf.get(self.value_range()).unwrap_or_default()
    }

    /// The span of `name`/`value`, two sub-slices of `base`.
    pub(crate) fn of(base: &[u8], name: &[u8], value: &[u8]) -> HeaderSpan {
        let value = trim(value);
        HeaderSpan { name: offsets(base, name), value: offsets(base, value) }
    }
}

/// Offsets of `part`, a sub-slice of `base`.
fn offsets(base: &[u8], part: &[u8]) -> (u32, u32) {
    let start = (part.as_ptr() as usize).saturating_sub(base.as_ptr() as usize);
    (start as u32, (start + part.len()) as u32)
}

/// `v` without leading and trailing spaces and tabs.
pub(crate) fn trim(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|b| !matches!(b, b' ' | b'\t')).unwrap_or(v.len());
    let end = v.iter().rposition(|b| !matches!(b, b' ' | b'\t')).map_or(start, |e| e + 1);
    &v[start..end.max(start)]
}

/// True when the comma-separated list `value` contains `token` (ASCII case-insensitive).
pub(crate) fn has_token(value: &[u8], token: &[u8]) -> bool {
    value.split(|&b| b == b',').any(|t| trim(t).eq_ignore_ascii_case(token))
}

/// Parses a Content-Length value strictly: 1 to 19 ASCII digits, nothing else.
pub(crate) fn parse_content_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    v.iter().try_fold(0u64, |acc, &d| acc.checked_mul(10)?.checked_add(u64::from(d - b'0')))
}

/// How a message body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Until the connection closes (responses only).
    UntilClose,
}

/// The HTTP status a bad request head is answered with, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeadError {
    /// Malformed head, missing or repeated Host, bad Content-Length, or Content-Length together
    /// with Transfer-Encoding (a request smuggling shape): 400.
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// The request line is longer than the limit: 414.
    #[error("request target too long")]
    UriTooLong,
    /// The head is larger than the limit, or has too many fields: 431.
    #[error("request header fields too large")]
    HeadersTooLarge,
    /// A transfer coding other than `chunked`: 501.
    #[error("transfer coding not implemented")]
    NotImplemented,
    /// HTTP/2 connection preface seen on an HTTP/1 parse.
    #[error("HTTP/2 preface")]
    H2Preface,
    /// A declared body larger than the limit: 413.
    #[error("request body too large")]
    BodyTooLarge,
}

impl HeadError {
    /// The status code to answer with.
    pub fn status(&self) -> u16 {
        match self {
            HeadError::BadRequest(_) | HeadError::H2Preface => 400,
            HeadError::UriTooLong => 414,
            HeadError::HeadersTooLarge => 431,
            HeadError::NotImplemented => 501,
            HeadError::BodyTooLarge => 413,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_is_strict() {
        assert_eq!(parse_content_length(b"0"), Some(0));
        assert_eq!(parse_content_length(b"1234"), Some(1234));
        for bad in [&b""[..], b"+1", b"-1", b"1 ", b"0x10", b"1,1", b"99999999999999999999"] {
            assert_eq!(parse_content_length(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn tokens_and_trim() {
        assert!(has_token(b"keep-alive, Upgrade", b"upgrade"));
        assert!(!has_token(b"keep-alive, Upgraded", b"upgrade"));
        assert_eq!(trim(b" \t a b \t"), b"a b");
        assert_eq!(trim(b"   "), b"");
    }
}
