//! The sticky cookie's value, and the Cookie / Set-Cookie edits around it: pure functions over
//! byte slices (fuzzed: `fuzz/fuzz_targets/l7_sticky_cookie.rs`).
//!
//! A value names a backend by an 8-byte *token*: a keyed BLAKE3 hash of the pool name and the
//! backend's address under the proxy's secret, so a client can only present tokens the proxy gave
//! it, never aim at a server of its choice. With `maxidle` or `maxlife` the value also carries the
//! session's first and last-seen times (seconds since the Unix epoch), authenticated by a keyed
//! MAC so that a client cannot extend its session:
//!
//! ```text
//! token                      16 hex digits                      (no maxidle / maxlife)
//! token first last mac       16 + 8 + 8 + 16 hex digits, lower case
//! ```
//!
//! Decoding accepts exactly these two shapes (lower-case hex), so a value decodes to at most one
//! [`CookieValue`] and encodes back to the same bytes.

use std::fmt::Write as _;
use std::net::SocketAddr;

/// Length of a backend token.
pub const TOKEN_LEN: usize = 8;
const MAC_LEN: usize = 8;
const SHORT_HEX: usize = TOKEN_LEN * 2;
const LONG_HEX: usize = (TOKEN_LEN + 4 + 4 + MAC_LEN) * 2;

/// The proxy's secret for sticky cookies (32 bytes).
#[derive(Clone, PartialEq, Eq)]
pub struct StickyKey([u8; 32]);

impl std::fmt::Debug for StickyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StickyKey(..)")
    }
}

impl StickyKey {
    /// A key derived from an operator's secret (any length; a passphrase is fine).
    pub fn derive(secret: &[u8]) -> StickyKey {
        StickyKey(blake3::derive_key("slb-l7 sticky cookie key v1", secret))
    }

    /// A key from 32 raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> StickyKey {
        StickyKey(bytes)
    }

    /// The raw bytes (handed to a new process on upgrade).
    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The token naming `addr` in `pool`.
    pub fn server_token(&self, pool: &str, addr: SocketAddr) -> [u8; TOKEN_LEN] {
        let mut h = blake3::Hasher::new_keyed(&self.0);
        h.update(b"server\0");
        h.update(pool.as_bytes());
        h.update(b"\0");
        h.update(addr.to_string().as_bytes());
        let mut t = [0; TOKEN_LEN];
        t.copy_from_slice(&h.finalize().as_bytes()[..TOKEN_LEN]);
        t
    }

    fn mac(&self, token: &[u8; TOKEN_LEN], times: Times) -> [u8; MAC_LEN] {
        let mut h = blake3::Hasher::new_keyed(&self.0);
        h.update(b"times\0");
        h.update(token);
        h.update(&times.first.to_be_bytes());
        h.update(&times.last.to_be_bytes());
        let mut m = [0; MAC_LEN];
        m.copy_from_slice(&h.finalize().as_bytes()[..MAC_LEN]);
        m
    }
}

/// First and last time a session was seen, seconds since the Unix epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Times {
    /// When the session started (for `maxlife`).
    pub first: u32,
    /// When it was last seen (for `maxidle`).
    pub last: u32,
}

/// A decoded cookie value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CookieValue {
    /// The backend's token.
    pub token: [u8; TOKEN_LEN],
    /// Session times, when the pool limits idle time or lifetime.
    pub times: Option<Times>,
}

/// Why a cookie value was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CookieError {
    /// Not one of the two shapes.
    #[error("malformed sticky cookie")]
    Malformed,
    /// The MAC does not match: forged or damaged.
    #[error("sticky cookie signature mismatch")]
    BadSignature,
    /// Idle for longer than `maxidle`, or older than `maxlife`.
    #[error("sticky cookie expired")]
    Expired,
}

fn hex_nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

fn unhex<const N: usize>(s: &[u8]) -> Option<[u8; N]> {
    if s.len() != N * 2 {
        return None;
    }
    let mut out = [0; N];
    for (o, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
        *o = hex_nibble(pair[0])? << 4 | hex_nibble(pair[1])?;
    }
    Some(out)
}

fn put_hex(out: &mut String, bytes: &[u8]) {
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
}

impl CookieValue {
    /// Appends the value's text to `out`.
    pub fn encode(&self, key: &StickyKey, out: &mut String) {
        put_hex(out, &self.token);
        if let Some(t) = self.times {
            put_hex(out, &t.first.to_be_bytes());
            put_hex(out, &t.last.to_be_bytes());
            put_hex(out, &key.mac(&self.token, t));
        }
    }

    /// Parses and authenticates a value.
    pub fn decode(key: &StickyKey, value: &[u8]) -> Result<CookieValue, CookieError> {
        match value.len() {
            SHORT_HEX => {
                let token = unhex::<TOKEN_LEN>(value).ok_or(CookieError::Malformed)?;
                Ok(CookieValue { token, times: None })
            }
            LONG_HEX => {
                let token = unhex::<TOKEN_LEN>(&value[..16]).ok_or(CookieError::Malformed)?;
                let first = unhex::<4>(&value[16..24]).ok_or(CookieError::Malformed)?;
                let last = unhex::<4>(&value[24..32]).ok_or(CookieError::Malformed)?;
                let mac = unhex::<MAC_LEN>(&value[32..]).ok_or(CookieError::Malformed)?;
                let times =
                    Times { first: u32::from_be_bytes(first), last: u32::from_be_bytes(last) };
                // Constant-time comparison: the MAC is a secret-derived value.
                let want = key.mac(&token, times);
                let diff = want.iter().zip(&mac).fold(0u8, |acc, (a, b)| acc | (a ^ b));
                if diff != 0 {
                    return Err(CookieError::BadSignature);
                }
                Ok(CookieValue { token, times: Some(times) })
            }
            _ => Err(CookieError::Malformed),
        }
    }

    /// Checks the session times at `now` (seconds since the epoch) against `maxidle` and
    /// `maxlife` (0: no limit). A value without times passes when neither limit is set.
    pub fn check(&self, now: u32, maxidle: u32, maxlife: u32) -> Result<(), CookieError> {
        if maxidle == 0 && maxlife == 0 {
            return Ok(());
        }
        let Some(t) = self.times else { return Err(CookieError::Expired) };
        if maxidle > 0 && now.saturating_sub(t.last) > maxidle {
            return Err(CookieError::Expired);
        }
        if maxlife > 0 && now.saturating_sub(t.first) > maxlife {
            return Err(CookieError::Expired);
        }
        Ok(())
    }
}

/// The cookie `name`'s value in a Cookie header value (`a=1; name=v; b=2`).
pub fn find_cookie<'a>(header: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    header.split(|&b| b == b';').find_map(|kv| {
        let kv = crate::http::trim(kv);
        let eq = kv.iter().position(|&b| b == b'=')?;
        (&kv[..eq] == name).then(|| &kv[eq + 1..])
    })
}

/// What to do with the sticky cookie in a request going upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CookieEdit<'a> {
    /// Remove it (insert mode with `indirect`: the backend never sees it).
    Remove(&'a [u8]),
    /// Remove the `token~` prefix from its value (prefix mode: the backend sees its own value).
    StripPrefix(&'a [u8]),
}

/// Writes the Cookie header value `header` with `edit` applied into `out` (appends); returns
/// false when nothing is left (the field is then to be dropped).
pub fn edit_cookie_header(header: &[u8], edit: CookieEdit<'_>, out: &mut Vec<u8>) -> bool {
    let start = out.len();
    for kv in header.split(|&b| b == b';') {
        let kv = crate::http::trim(kv);
        if kv.is_empty() {
            continue;
        }
        let eq = kv.iter().position(|&b| b == b'=');
        let name = eq.map_or(kv, |e| &kv[..e]);
        let piece: &[u8] = match edit {
            CookieEdit::Remove(n) if name == n => continue,
            CookieEdit::StripPrefix(n) if name == n => {
                let value = eq.map_or(&b""[..], |e| &kv[e + 1..]);
                match value.iter().position(|&b| b == b'~') {
                    Some(t) => {
                        if out.len() > start {
                            out.extend_from_slice(b"; ");
                        }
                        out.extend_from_slice(name);
                        out.push(b'=');
                        out.extend_from_slice(&value[t + 1..]);
                        continue;
                    }
                    None => kv,
                }
            }
            _ => kv,
        };
        if out.len() > start {
            out.extend_from_slice(b"; ");
        }
        out.extend_from_slice(piece);
    }
    out.len() > start
}

/// The cookie name a Set-Cookie value sets.
pub fn set_cookie_name(value: &[u8]) -> Option<&[u8]> {
    let eq = value.iter().position(|&b| b == b'=')?;
    let name = crate::http::trim(&value[..eq]);
    (!name.is_empty()).then_some(name)
}

/// What to do with the response on its way to the client.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum CookieRewrite {
    /// Nothing.
    #[default]
    None,
    /// Add this Set-Cookie field value (insert mode).
    Insert(String),
    /// Replace the value of a Set-Cookie for `name` the backend sent (rewrite mode).
    Rewrite {
        /// The cookie name.
        name: Box<str>,
        /// The new value.
        value: String,
    },
    /// Prefix the value of a Set-Cookie for `name` the backend sent with `prefix~` (prefix mode).
    Prefix {
        /// The cookie name.
        name: Box<str>,
        /// The prefix (without the `~`).
        prefix: String,
    },
}

impl CookieRewrite {
    /// The Set-Cookie value `value` (from the backend) as the client gets it; `None` to keep it.
    pub fn rewrite_set_cookie(&self, value: &[u8]) -> Option<Vec<u8>> {
        let (name, new_value, prefix) = match self {
            CookieRewrite::Rewrite { name, value } => (name, value, false),
            CookieRewrite::Prefix { name, prefix } => (name, prefix, true),
            _ => return None,
        };
        if set_cookie_name(value) != Some(name.as_bytes()) {
            return None;
        }
        let eq = value.iter().position(|&b| b == b'=')?;
        let rest = &value[eq + 1..];
        let end = rest.iter().position(|&b| b == b';').unwrap_or(rest.len());
        let mut out = Vec::with_capacity(value.len() + new_value.len() + 1);
        out.extend_from_slice(&value[..=eq]);
        out.extend_from_slice(new_value.as_bytes());
        if prefix {
            out.push(b'~');
            out.extend_from_slice(crate::http::trim(&rest[..end]));
        }
        out.extend_from_slice(&rest[end..]);
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> StickyKey {
        StickyKey::derive(b"test secret")
    }

    #[test]
    fn values_round_trip_and_reject_forgeries() {
        let k = key();
        let token = k.server_token("app", "127.0.0.1:9001".parse().unwrap());
        assert_ne!(token, k.server_token("app", "127.0.0.1:9002".parse().unwrap()));
        assert_ne!(
            token,
            StickyKey::derive(b"other").server_token("app", "127.0.0.1:9001".parse().unwrap())
        );
        for times in [None, Some(Times { first: 1_700_000_000, last: 1_700_000_100 })] {
            let v = CookieValue { token, times };
            let mut s = String::new();
            v.encode(&k, &mut s);
            assert_eq!(CookieValue::decode(&k, s.as_bytes()), Ok(v));
            // Any changed digit is caught: a malformed digit, or a MAC mismatch.
            for i in 16..s.len() {
                let mut b = s.clone().into_bytes();
                b[i] = if b[i] == b'0' { b'1' } else { b'0' };
                assert!(CookieValue::decode(&k, &b).is_err(), "{i}");
            }
        }
        assert_eq!(CookieValue::decode(&k, b"0123456789ABCDEF"), Err(CookieError::Malformed));
        assert_eq!(CookieValue::decode(&k, b"0123"), Err(CookieError::Malformed));
    }

    #[test]
    fn idle_and_life_limits() {
        let v = CookieValue { token: [1; 8], times: Some(Times { first: 100, last: 150 }) };
        assert_eq!(v.check(160, 30, 0), Ok(()));
        assert_eq!(v.check(181, 30, 0), Err(CookieError::Expired));
        assert_eq!(v.check(160, 0, 60), Ok(()));
        assert_eq!(v.check(161, 0, 60), Err(CookieError::Expired));
        let bare = CookieValue { token: [1; 8], times: None };
        assert_eq!(bare.check(1, 0, 0), Ok(()));
        assert_eq!(bare.check(1, 30, 0), Err(CookieError::Expired));
    }

    #[test]
    fn cookie_header_edits() {
        let mut out = Vec::new();
        assert!(edit_cookie_header(b"a=1; route=abc; b=2", CookieEdit::Remove(b"route"), &mut out));
        assert_eq!(out, b"a=1; b=2");
        out.clear();
        assert!(!edit_cookie_header(b"route=abc", CookieEdit::Remove(b"route"), &mut out));
        out.clear();
        assert!(edit_cookie_header(
            b"JSID=tok~orig; x=1",
            CookieEdit::StripPrefix(b"JSID"),
            &mut out
        ));
        assert_eq!(out, b"JSID=orig; x=1");
        assert_eq!(find_cookie(b"a=1; route=xyz", b"route"), Some(&b"xyz"[..]));
        assert_eq!(find_cookie(b"xroute=1", b"route"), None);
    }

    #[test]
    fn set_cookie_rewrites() {
        let r = CookieRewrite::Rewrite { name: "route".into(), value: "abcd".into() };
        assert_eq!(r.rewrite_set_cookie(b"route=app; Path=/").unwrap(), b"route=abcd; Path=/");
        assert_eq!(r.rewrite_set_cookie(b"other=1"), None);
        let p = CookieRewrite::Prefix { name: "JSID".into(), prefix: "tok".into() };
        assert_eq!(p.rewrite_set_cookie(b"JSID=s1; HttpOnly").unwrap(), b"JSID=tok~s1; HttpOnly");
        assert_eq!(p.rewrite_set_cookie(b"JSID=s1").unwrap(), b"JSID=tok~s1");
    }
}
