//! Session stickiness: cookies (Tengine `session_sticky` / HAProxy `cookie`: insert, rewrite and
//! prefix modes, `indirect`, `maxidle`, `maxlife`) and source-IP persistence (slb-core's
//! [`PersistTable`], IPVS-style templates).
//!
//! Call order per request: `Sticky::request` reads the client's cookie (or looks up its address)
//! and names the backend to prefer; the pool tries that backend first when it is usable (up,
//! healthy, not draining, not ejected, weight above zero) and otherwise falls back to the
//! scheduler; `Sticky::response` then says how to set or refresh the cookie for the backend that
//! answered (or renews the source-IP template). Nothing here does I/O; time comes in as seconds
//! since the Unix epoch (cookies) or as slb-core [`Instant`]s (templates).

pub mod cookie;

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use parking_lot::Mutex;
use slb_core::backend::BackendId;
use slb_core::flow::Protocol;
use slb_core::session::{PersistKey, PersistTable};
use slb_core::time::Instant;

use crate::config::StickyConfig;
pub use cookie::{CookieEdit, CookieRewrite, CookieValue, StickyKey, Times};

/// How a cookie carries stickiness.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CookieMode {
    /// The proxy sets its own cookie.
    Insert,
    /// The backend sets the cookie; the proxy replaces its value with the backend's token.
    Rewrite,
    /// The backend sets the cookie; the proxy prefixes its value with `token~` and strips the
    /// prefix from requests.
    Prefix,
}

/// Cookie stickiness settings.
#[derive(Clone, Debug)]
pub struct CookieSticky {
    /// Cookie name.
    pub name: Box<str>,
    /// Mode.
    pub mode: CookieMode,
    /// Hide the cookie from the backend (insert mode).
    pub indirect: bool,
    /// Longest idle time, seconds (insert mode; 0: none).
    pub maxidle: u32,
    /// Longest session, seconds (insert mode; 0: none).
    pub maxlife: u32,
    /// Attributes appended to an inserted cookie (`; Path=/; HttpOnly`).
    pub attributes: String,
}

/// Source-IP stickiness settings.
#[derive(Clone, Copy, Debug)]
pub struct SourceSticky {
    /// A client sticks this long after its last request.
    pub timeout: Duration,
    /// Prefix length clients are grouped by (IPv4).
    pub v4_prefix: u8,
    /// Prefix length clients are grouped by (IPv6).
    pub v6_prefix: u8,
    /// Most templates kept.
    pub capacity: usize,
}

/// A pool's stickiness.
#[derive(Clone, Debug)]
pub enum StickyMode {
    /// By cookie.
    Cookie(CookieSticky),
    /// By client address.
    Source(SourceSticky),
}

impl StickyMode {
    /// From the configuration (already validated); `None` when stickiness is off.
    pub fn from_config(c: &StickyConfig) -> Option<StickyMode> {
        match c.kind.as_str() {
            "cookie" => {
                let mode = match c.mode.as_str() {
                    "rewrite" => CookieMode::Rewrite,
                    "prefix" => CookieMode::Prefix,
                    _ => CookieMode::Insert,
                };
                let mut attributes = format!("; Path={}", c.path);
                if let Some(d) = &c.domain {
                    attributes.push_str("; Domain=");
                    attributes.push_str(d);
                }
                if !c.maxage.0.is_zero() {
                    attributes.push_str(&format!("; Max-Age={}", c.maxage.0.as_secs()));
                }
                if c.httponly {
                    attributes.push_str("; HttpOnly");
                }
                if c.secure {
                    attributes.push_str("; Secure");
                }
                let secs = |d: Duration| u32::try_from(d.as_secs()).unwrap_or(u32::MAX);
                Some(StickyMode::Cookie(CookieSticky {
                    name: c.cookie.as_str().into(),
                    mode,
                    indirect: c.indirect,
                    maxidle: secs(c.maxidle.0),
                    maxlife: secs(c.maxlife.0),
                    attributes,
                }))
            }
            "source_ip" => Some(StickyMode::Source(SourceSticky {
                timeout: c.timeout.0,
                v4_prefix: c.ipv4_prefix.min(32),
                v6_prefix: c.ipv6_prefix.min(128),
                capacity: c.capacity,
            })),
            _ => None,
        }
    }
}

/// What the request said about stickiness.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct StickyRequest {
    /// The backend to try first.
    pub(crate) prefer: Option<BackendId>,
    /// Times of a valid cookie (for the refresh decision).
    pub(crate) times: Option<Times>,
}

/// A pool's stickiness at run time: settings, key, token map and source templates.
#[derive(Debug)]
pub(crate) struct Sticky {
    pub(crate) mode: StickyMode,
    pub(crate) key: StickyKey,
    /// Source-IP templates (source mode).
    pub(crate) table: Mutex<PersistTable>,
}

/// The client address grouped by the configured prefix.
fn masked(ip: IpAddr, s: &SourceSticky) -> IpAddr {
    match ip {
        IpAddr::V4(v) => {
            let bits = u32::from(v);
            let mask = if s.v4_prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(s.v4_prefix)) };
            IpAddr::from((bits & mask).to_be_bytes())
        }
        IpAddr::V6(v) => {
            let bits = u128::from(v);
            let mask =
                if s.v6_prefix == 0 { 0 } else { u128::MAX << (128 - u32::from(s.v6_prefix)) };
            IpAddr::from((bits & mask).to_be_bytes())
        }
    }
}

fn template_key(ip: IpAddr, s: &SourceSticky) -> PersistKey {
    PersistKey {
        proto: Protocol::Tcp,
        client: masked(ip, s),
        vip: IpAddr::from([0, 0, 0, 0]),
        vport: 0,
    }
}

impl Sticky {
    pub(crate) fn new(mode: StickyMode, key: StickyKey) -> Self {
        let capacity = match &mode {
            StickyMode::Source(s) => s.capacity,
            StickyMode::Cookie(_) => 0,
        };
        Sticky { mode, key, table: Mutex::new(PersistTable::new(capacity)) }
    }

    /// The cookie settings, in cookie mode.
    pub(crate) fn cookie(&self) -> Option<&CookieSticky> {
        match &self.mode {
            StickyMode::Cookie(c) => Some(c),
            StickyMode::Source(_) => None,
        }
    }

    /// Reads the sticky cookie among `cookies` (Cookie field values), or the client's template.
    pub(crate) fn request<'a>(
        &self,
        cookies: impl Iterator<Item = &'a [u8]>,
        client: IpAddr,
        epoch_secs: u32,
        now: Instant,
        tokens: &HashMap<[u8; cookie::TOKEN_LEN], BackendId>,
    ) -> StickyRequest {
        match &self.mode {
            StickyMode::Cookie(c) => {
                for header in cookies {
                    let Some(raw) = cookie::find_cookie(header, c.name.as_bytes()) else {
                        continue;
                    };
                    let raw = match c.mode {
                        CookieMode::Prefix => match raw.iter().position(|&b| b == b'~') {
                            Some(t) => &raw[..t],
                            None => continue,
                        },
                        _ => raw,
                    };
                    let Ok(v) = CookieValue::decode(&self.key, raw) else { continue };
                    let (idle, life) = match c.mode {
                        CookieMode::Insert => (c.maxidle, c.maxlife),
                        _ => (0, 0),
                    };
                    if v.check(epoch_secs, idle, life).is_err() {
                        continue;
                    }
                    if let Some(id) = tokens.get(&v.token) {
                        return StickyRequest { prefer: Some(*id), times: v.times };
                    }
                }
                StickyRequest::default()
            }
            StickyMode::Source(s) => {
                let key = template_key(client, s);
                let prefer = self.table.lock().get(&key, now, s.timeout);
                StickyRequest { prefer, times: None }
            }
        }
    }

    /// How to edit the request's Cookie field for the backend.
    pub(crate) fn request_edit(&self) -> Option<CookieEdit<'_>> {
        let c = self.cookie()?;
        match c.mode {
            CookieMode::Insert if c.indirect => Some(CookieEdit::Remove(c.name.as_bytes())),
            CookieMode::Prefix => Some(CookieEdit::StripPrefix(c.name.as_bytes())),
            _ => None,
        }
    }

    /// After backend `id` (token `token`) answered: the cookie to send back, or the template to
    /// renew.
    pub(crate) fn response(
        &self,
        req: &StickyRequest,
        id: BackendId,
        token: &[u8; cookie::TOKEN_LEN],
        client: IpAddr,
        epoch_secs: u32,
        now: Instant,
    ) -> CookieRewrite {
        match &self.mode {
            StickyMode::Source(s) => {
                if req.prefer != Some(id) {
                    self.table.lock().set(template_key(client, s), id, now, s.timeout);
                }
                CookieRewrite::None
            }
            StickyMode::Cookie(c) => {
                let same = req.prefer == Some(id);
                let timed = c.mode == CookieMode::Insert && (c.maxidle > 0 || c.maxlife > 0);
                let times = timed.then_some(Times {
                    first: match req.times {
                        Some(t) if same => t.first,
                        _ => epoch_secs,
                    },
                    last: epoch_secs,
                });
                let value = |times| {
                    let mut s = String::with_capacity(64);
                    CookieValue { token: *token, times }.encode(&self.key, &mut s);
                    s
                };
                match c.mode {
                    CookieMode::Insert => {
                        // Sent when the client has no valid cookie for this backend, or when its
                        // last-seen time is a quarter of maxidle old.
                        let refresh = c.maxidle > 0
                            && req.times.is_some_and(|t| {
                                epoch_secs.saturating_sub(t.last) >= (c.maxidle / 4).max(1)
                            });
                        if same && !refresh {
                            return CookieRewrite::None;
                        }
                        let mut v = format!("{}=", c.name);
                        v.push_str(&value(times));
                        v.push_str(&c.attributes);
                        CookieRewrite::Insert(v)
                    }
                    CookieMode::Rewrite => {
                        CookieRewrite::Rewrite { name: c.name.clone(), value: value(None) }
                    }
                    CookieMode::Prefix => {
                        CookieRewrite::Prefix { name: c.name.clone(), prefix: value(None) }
                    }
                }
            }
        }
    }

    /// Forgets templates of backends that left the pool.
    pub(crate) fn forget(&self, gone: &[BackendId]) {
        if gone.is_empty() || matches!(self.mode, StickyMode::Cookie(_)) {
            return;
        }
        let mut t = self.table.lock();
        for id in gone {
            t.remove_backend(*id);
        }
    }

    /// Source templates held.
    pub(crate) fn templates(&self) -> usize {
        self.table.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_are_grouped_by_prefix() {
        let s = SourceSticky {
            timeout: Duration::from_secs(1),
            v4_prefix: 24,
            v6_prefix: 64,
            capacity: 8,
        };
        assert_eq!(masked("10.1.2.3".parse().unwrap(), &s), "10.1.2.0".parse::<IpAddr>().unwrap());
        assert_eq!(
            masked("2001:db8::1:2:3:4".parse().unwrap(), &s),
            "2001:db8::".parse::<IpAddr>().unwrap()
        );
        let all = SourceSticky { v4_prefix: 0, ..s };
        assert_eq!(masked("10.1.2.3".parse().unwrap(), &all), "0.0.0.0".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn insert_mode_sets_once_and_refreshes_when_idle_grows() {
        let c = CookieSticky {
            name: "route".into(),
            mode: CookieMode::Insert,
            indirect: true,
            maxidle: 40,
            maxlife: 0,
            attributes: "; Path=/".into(),
        };
        let s = Sticky::new(StickyMode::Cookie(c), StickyKey::derive(b"k"));
        let token = [7u8; 8];
        let mut tokens = HashMap::new();
        tokens.insert(token, BackendId(3));
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let none = s.request(std::iter::empty(), ip, 1000, Instant::ZERO, &tokens);
        let CookieRewrite::Insert(set) =
            s.response(&none, BackendId(3), &token, ip, 1000, Instant::ZERO)
        else {
            panic!("a new client gets a cookie")
        };
        let value = set.strip_prefix("route=").unwrap().split(';').next().unwrap();
        let header = format!("a=b; route={value}");
        let again = s.request(std::iter::once(header.as_bytes()), ip, 1005, Instant::ZERO, &tokens);
        assert_eq!(again.prefer, Some(BackendId(3)));
        assert_eq!(
            s.response(&again, BackendId(3), &token, ip, 1005, Instant::ZERO),
            CookieRewrite::None
        );
        let later = s.request(std::iter::once(header.as_bytes()), ip, 1011, Instant::ZERO, &tokens);
        assert!(matches!(
            s.response(&later, BackendId(3), &token, ip, 1011, Instant::ZERO),
            CookieRewrite::Insert(_)
        ));
        let expired =
            s.request(std::iter::once(header.as_bytes()), ip, 1041, Instant::ZERO, &tokens);
        assert_eq!(expired.prefer, None, "idle longer than maxidle");
        assert_eq!(s.request_edit(), Some(CookieEdit::Remove(b"route")));
    }
}
