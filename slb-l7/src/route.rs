//! Routing: virtual hosts by Host (or SNI), then locations by path, to a pool.
//!
//! Hosts: exact names first, then `*.suffix` wildcards (longest suffix first), then the default
//! virtual host (`"*"`). Locations within a host follow nginx: an exact match wins; otherwise the
//! first regex (in configuration order) that matches; otherwise the longest matching prefix;
//! otherwise the host's own pool; otherwise the configuration's `default_pool`.

use std::collections::HashMap;
use std::sync::Arc;

use regex::bytes::Regex;

use crate::http::headers::HeaderRules;
use crate::pool::Pool;

/// Where a request goes.
#[derive(Debug)]
pub struct Route {
    /// The pool.
    pub pool: Arc<Pool>,
    /// Request header rules (virtual host's, then location's).
    pub request_rules: HeaderRules,
    /// Response header rules.
    pub response_rules: HeaderRules,
}

#[derive(Debug, Default)]
pub(crate) struct Vhost {
    pub(crate) exact: HashMap<Vec<u8>, Arc<Route>>,
    pub(crate) regex: Vec<(Regex, Arc<Route>)>,
    /// Longest first.
    pub(crate) prefix: Vec<(Vec<u8>, Arc<Route>)>,
    pub(crate) fallback: Option<Arc<Route>>,
}

impl Vhost {
    fn route(&self, path: &[u8]) -> Option<&Arc<Route>> {
        if let Some(r) = self.exact.get(path) {
            return Some(r);
        }
        if let Some((_, r)) = self.regex.iter().find(|(re, _)| re.is_match(path)) {
            return Some(r);
        }
        if let Some((_, r)) = self.prefix.iter().find(|(p, _)| path.starts_with(p)) {
            return Some(r);
        }
        self.fallback.as_ref()
    }
}

/// The routing table (immutable; replaced as a whole on reconfiguration).
#[derive(Debug, Default)]
pub struct Router {
    pub(crate) vhosts: Vec<Vhost>,
    pub(crate) exact_hosts: HashMap<Vec<u8>, usize>,
    /// (suffix including the dot, vhost), longest first.
    pub(crate) wildcard_hosts: Vec<(Vec<u8>, usize)>,
    pub(crate) default_vhost: Option<usize>,
    pub(crate) default_route: Option<Arc<Route>>,
}

impl Router {
    /// The route for `host` (port ignored, any case) and `path` (query ignored).
    pub fn route(&self, host: Option<&[u8]>, path: &[u8]) -> Option<&Arc<Route>> {
        let path = path.split(|&b| b == b'?').next().unwrap_or(path);
        let vhost = host.and_then(|h| self.vhost_for(h)).or(self.default_vhost);
        vhost
            .and_then(|v| self.vhosts.get(v))
            .and_then(|v| v.route(path))
            .or(self.default_route.as_ref())
    }

    fn vhost_for(&self, host: &[u8]) -> Option<usize> {
        if self.exact_hosts.is_empty() && self.wildcard_hosts.is_empty() {
            return None;
        }
        let host = strip_port(host);
        let mut lower = [0u8; 256];
        let n = host.len().min(lower.len());
        for (d, s) in lower.iter_mut().zip(&host[..n]) {
            *d = s.to_ascii_lowercase();
        }
        let host = &lower[..n];
        if let Some(&v) = self.exact_hosts.get(host) {
            return Some(v);
        }
        self.wildcard_hosts
            .iter()
            .find(|(suffix, _)| host.ends_with(suffix) && host.len() > suffix.len())
            .map(|(_, v)| *v)
    }
}

/// `host` without a `:port` (IPv6 literals keep their brackets).
pub(crate) fn strip_port(host: &[u8]) -> &[u8] {
    if host.first() == Some(&b'[') {
        return match host.iter().position(|&b| b == b']') {
            Some(e) => &host[..=e],
            None => host,
        };
    }
    match host.iter().rposition(|&b| b == b':') {
        Some(i) => &host[..i],
        None => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_stripped() {
        assert_eq!(strip_port(b"example.com:8080"), b"example.com");
        assert_eq!(strip_port(b"example.com"), b"example.com");
        assert_eq!(strip_port(b"[::1]:80"), b"[::1]");
    }
}
