//! Validation: every problem is reported with the dotted path of the field and, when the
//! configuration came from TOML, its line.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use slb_core::sched::SchedulerKind;
use toml::de::{DeTable, DeValue};

use super::Config;

/// One problem in a configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigIssue {
    /// Dotted path of the field, e.g. `pools.api.backends[1].weight`.
    pub field: String,
    /// 1-based line in the TOML source, when known.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "line {l}: `{}`: {}", self.field, self.message),
            None => write!(f, "`{}`: {}", self.field, self.message),
        }
    }
}

/// A configuration was rejected; lists every problem found.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The problems, in file order where known.
    pub issues: Vec<ConfigIssue>,
}

impl ConfigError {
    pub(crate) fn io(message: String) -> ConfigError {
        ConfigError { issues: vec![ConfigIssue { field: String::new(), line: None, message }] }
    }

    pub(crate) fn one(field: &str, message: String) -> ConfigError {
        ConfigError { issues: vec![ConfigIssue { field: field.into(), line: None, message }] }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid configuration")?;
        for i in &self.issues {
            write!(f, "\n  {i}")?;
        }
        Ok(())
    }
}

/// Maps field paths to lines of the TOML source.
pub(crate) struct Locator<'s> {
    src: &'s str,
    root: Option<toml::Spanned<DeTable<'s>>>,
}

#[derive(Clone, Debug)]
enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

fn parse_path(path: &str) -> Vec<Seg<'_>> {
    let mut segs = Vec::new();
    for part in path.split('.') {
        let (key, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            segs.push(Seg::Key(key));
        }
        while let Some(end) = rest.find(']') {
            if let Ok(n) = rest[1..end].parse() {
                segs.push(Seg::Index(n));
            }
            rest = &rest[end + 1..];
        }
    }
    segs
}

impl<'s> Locator<'s> {
    pub(crate) fn new(src: &'s str) -> Self {
        Locator { src, root: DeTable::parse(src).ok() }
    }

    fn line_of(&self, offset: usize) -> usize {
        self.src.as_bytes()[..offset.min(self.src.len())].iter().filter(|&&b| b == b'\n').count()
            + 1
    }

    /// The line of the deepest existing prefix of `path` (the field itself, or the table that
    /// lacks it).
    pub(crate) fn line(&self, path: &str) -> Option<usize> {
        let root = self.root.as_ref()?;
        let mut span = None;
        let mut table: Option<&DeTable<'_>> = Some(root.get_ref());
        let mut value: Option<&DeValue<'_>> = None;
        for seg in parse_path(path) {
            let next = match (seg, table, value) {
                (Seg::Key(k), Some(t), _) => t.get(k),
                (Seg::Index(i), _, Some(DeValue::Array(a))) => a.get(i),
                _ => None,
            };
            let Some(next) = next else { break };
            span = Some(next.span());
            value = Some(next.get_ref());
            table = match next.get_ref() {
                DeValue::Table(t) => Some(t),
                _ => None,
            };
        }
        span.map(|s| self.line_of(s.start))
    }

    /// The dotted path of the deepest key whose value (or key) contains `offset`. Tables
    /// opened by a `[header]` do not span their contents, so every branch is searched.
    fn path_at(&self, offset: usize) -> String {
        fn walk(v: &DeValue<'_>, prefix: &str, offset: usize, best: &mut String) {
            match v {
                DeValue::Table(t) => {
                    for (k, val) in t.iter() {
                        let path = if prefix.is_empty() {
                            k.get_ref().to_string()
                        } else {
                            format!("{prefix}.{}", k.get_ref())
                        };
                        if (val.span().contains(&offset) || k.span().contains(&offset))
                            && path.len() > best.len()
                        {
                            *best = path.clone();
                        }
                        walk(val.get_ref(), &path, offset, best);
                    }
                }
                DeValue::Array(a) => {
                    for (i, val) in a.iter().enumerate() {
                        let path = format!("{prefix}[{i}]");
                        if val.span().contains(&offset) && path.len() > best.len() {
                            *best = path.clone();
                        }
                        walk(val.get_ref(), &path, offset, best);
                    }
                }
                _ => {}
            }
        }
        let Some(root) = &self.root else { return String::new() };
        let mut best = String::new();
        for (k, val) in root.get_ref().iter() {
            let path = k.get_ref().to_string();
            if (val.span().contains(&offset) || k.span().contains(&offset))
                && path.len() > best.len()
            {
                best = path.clone();
            }
            walk(val.get_ref(), &path, offset, &mut best);
        }
        best
    }
}

pub(crate) fn parse_and_validate(src: &str) -> Result<Config, ConfigError> {
    let loc = Locator::new(src);
    let cfg: Config = match toml::from_str(src) {
        Ok(c) => c,
        Err(e) => {
            let (line, field) = match e.span() {
                Some(s) => (Some(loc.line_of(s.start)), loc.path_at(s.start)),
                None => (None, String::new()),
            };
            return Err(ConfigError {
                issues: vec![ConfigIssue { field, line, message: e.message().trim().to_owned() }],
            });
        }
    };
    check(&cfg, Some(&loc))?;
    Ok(cfg)
}

struct Issues<'a, 's> {
    loc: Option<&'a Locator<'s>>,
    list: Vec<ConfigIssue>,
}

impl Issues<'_, '_> {
    fn add(&mut self, field: String, message: impl Into<String>) {
        let line = self.loc.and_then(|l| l.line(&field));
        self.list.push(ConfigIssue { field, line, message: message.into() });
    }
}

fn check_addr(issues: &mut Issues<'_, '_>, field: String, addr: &str) {
    if addr.parse::<SocketAddr>().is_err() {
        issues.add(field, format!("{addr:?} is not an address such as \"127.0.0.1:8080\""));
    }
}

/// Parses a status range item: `"200"` or `"200-399"`.
pub(crate) fn parse_status_range(s: &str) -> Option<(u16, u16)> {
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let (a, b): (u16, u16) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    ((100..=599).contains(&a) && (100..=599).contains(&b) && a <= b).then_some((a, b))
}

/// Checks everything that deserialization could not.
pub(crate) fn check(cfg: &Config, loc: Option<&Locator<'_>>) -> Result<(), ConfigError> {
    let mut is = Issues { loc, list: Vec::new() };
    if cfg.listeners.is_empty() {
        is.add("listeners".into(), "at least one [[listeners]] is needed");
    }
    for (i, l) in cfg.listeners.iter().enumerate() {
        check_addr(&mut is, format!("listeners[{i}].address"), &l.address);
        if l.max_connections == 0 {
            is.add(format!("listeners[{i}].max_connections"), "must be at least 1");
        }
        if let Err(e) = crate::proxy_protocol::Networks::parse(&l.trusted_proxies) {
            is.add(format!("listeners[{i}].trusted_proxies"), e);
        }
        if !l.trusted_proxies.is_empty() && !l.proxy_protocol {
            is.add(format!("listeners[{i}].trusted_proxies"), "needs proxy_protocol = true");
        }
        if let Some(tls) = &l.tls {
            if tls.certificates.is_empty() {
                is.add(
                    format!("listeners[{i}].tls.certificates"),
                    "a TLS listener needs a certificate",
                );
            }
        }
    }
    let l = &cfg.limits;
    if l.max_header_bytes.0 < 256 {
        is.add("limits.max_header_bytes".into(), "must be at least 256");
    }
    if l.max_headers == 0 || l.max_headers > crate::http::request::MAX_HEADERS_CAP {
        is.add(
            "limits.max_headers".into(),
            format!("must be 1 to {}", crate::http::request::MAX_HEADERS_CAP),
        );
    }
    if l.max_uri_bytes.0 < 16 || l.max_uri_bytes.0 > l.max_header_bytes.0 {
        is.add("limits.max_uri_bytes".into(), "must be at least 16 and at most max_header_bytes");
    }
    if !matches!(cfg.forwarded.x_forwarded_for.as_str(), "append" | "replace") {
        is.add("forwarded.x_forwarded_for".into(), "must be \"append\" or \"replace\"");
    }
    for (name, t) in [
        ("client_header", cfg.timeouts.client_header),
        ("client_body", cfg.timeouts.client_body),
        ("keepalive", cfg.timeouts.keepalive),
        ("send", cfg.timeouts.send),
    ] {
        if t.0.is_zero() {
            is.add(format!("timeouts.{name}"), "must be greater than zero");
        }
    }
    let pool_known = |p: &str| cfg.pools.contains_key(p);
    if let Some(p) = &cfg.default_pool {
        if !pool_known(p) {
            is.add("default_pool".into(), format!("no pool named {p:?}"));
        }
    }
    for (v, vh) in cfg.vhosts.iter().enumerate() {
        if vh.hosts.is_empty() {
            is.add(format!("vhosts[{v}].hosts"), "list at least one host (\"*\" for any)");
        }
        for (h, host) in vh.hosts.iter().enumerate() {
            let bare = host.strip_prefix("*.").unwrap_or(host);
            if host != "*"
                && (bare.is_empty() || !crate::http::request::valid_host(bare.as_bytes()))
            {
                is.add(format!("vhosts[{v}].hosts[{h}]"), format!("{host:?} is not a host name"));
            }
        }
        if let Some(p) = &vh.pool {
            if !pool_known(p) {
                is.add(format!("vhosts[{v}].pool"), format!("no pool named {p:?}"));
            }
        }
        check_rules(&mut is, &format!("vhosts[{v}].request_headers"), &vh.request_headers);
        check_rules(&mut is, &format!("vhosts[{v}].response_headers"), &vh.response_headers);
        for (i, loc) in vh.locations.iter().enumerate() {
            let f = format!("vhosts[{v}].locations[{i}]");
            let kinds =
                [&loc.exact, &loc.prefix, &loc.regex].iter().filter(|k| k.is_some()).count();
            if kinds != 1 {
                is.add(f.clone(), "set exactly one of exact, prefix, regex");
            }
            if let Some(r) = &loc.regex {
                if let Err(e) = regex::Regex::new(r) {
                    is.add(format!("{f}.regex"), format!("invalid regex: {e}"));
                }
            }
            for (k, p) in [("exact", &loc.exact), ("prefix", &loc.prefix)] {
                if p.as_ref().is_some_and(|p| !p.starts_with('/')) {
                    is.add(format!("{f}.{k}"), "must start with /");
                }
            }
            if !pool_known(&loc.pool) {
                is.add(format!("{f}.pool"), format!("no pool named {:?}", loc.pool));
            }
            check_rules(&mut is, &format!("{f}.request_headers"), &loc.request_headers);
            check_rules(&mut is, &format!("{f}.response_headers"), &loc.response_headers);
        }
    }
    for (name, p) in &cfg.pools {
        let f = format!("pools.{name}");
        if SchedulerKind::from_str(&p.scheduler).is_err() {
            is.add(format!("{f}.scheduler"), format!("unknown scheduler {:?}", p.scheduler));
        }
        if crate::pool::HashSource::parse(&p.hash).is_none() {
            is.add(
                format!("{f}.hash"),
                format!("{:?}: use client_ip, uri, header:NAME or cookie:NAME", p.hash),
            );
        }
        for (i, b) in p.backends.iter().enumerate() {
            let t = b.table();
            let bf = if matches!(b, super::BackendConfig::Full(_)) {
                format!("{f}.backends[{i}].address")
            } else {
                format!("{f}.backends[{i}]")
            };
            check_addr(&mut is, bf, &t.address);
            if !matches!(t.state.as_str(), "up" | "draining" | "disabled") {
                is.add(format!("{f}.backends[{i}].state"), "must be up, draining or disabled");
            }
        }
        if !(0.0..=1.0).contains(&p.panic_threshold) {
            is.add(format!("{f}.panic_threshold"), "must be between 0.0 and 1.0");
        }
        if p.tls.enabled && p.tls.verify && p.tls.ca_file.is_none() {
            is.add(format!("{f}.tls.ca_file"), "needed to verify backends (or set verify = false)");
        }
        if p.timeouts.connect.0.is_zero()
            || p.timeouts.response_header.0.is_zero()
            || p.timeouts.read.0.is_zero()
        {
            is.add(format!("{f}.timeouts"), "timeouts must be greater than zero");
        }
        let h = &p.health;
        if !matches!(h.kind.as_str(), "none" | "tcp" | "http") {
            is.add(format!("{f}.health.type"), "must be none, tcp or http");
        }
        if !matches!(h.start.as_str(), "up" | "down") {
            is.add(format!("{f}.health.start"), "must be up or down");
        }
        if h.interval.0.is_zero()
            || h.fast_interval.0.is_zero()
            || h.down_interval.0.is_zero()
            || h.timeout.0.is_zero()
        {
            is.add(format!("{f}.health"), "intervals and timeout must be greater than zero");
        }
        if h.rise == 0 || h.fall == 0 {
            is.add(format!("{f}.health"), "rise and fall must be at least 1");
        }
        if !(0.0..=0.5).contains(&h.jitter) {
            is.add(format!("{f}.health.jitter"), "must be between 0.0 and 0.5");
        }
        if http::Method::from_bytes(h.method.as_bytes()).is_err() {
            is.add(format!("{f}.health.method"), format!("{:?} is not a method", h.method));
        }
        if !h.path.starts_with('/') || h.path.bytes().any(|b| b <= b' ' || b == 0x7f) {
            is.add(format!("{f}.health.path"), "must start with / and contain no spaces");
        }
        for (i, s) in h.expect_status.iter().enumerate() {
            if parse_status_range(s).is_none() {
                is.add(
                    format!("{f}.health.expect_status[{i}]"),
                    format!("{s:?}: use \"200\" or \"200-399\""),
                );
            }
        }
        if p.passive.consecutive_failures == 0 {
            is.add(format!("{f}.passive.consecutive_failures"), "must be at least 1");
        }
        if p.retry.tries == 0 {
            is.add(format!("{f}.retry.tries"), "must be at least 1");
        }
        for (i, on) in p.retry.on.iter().enumerate() {
            if !matches!(on.as_str(), "error" | "timeout" | "http_502" | "http_503" | "http_504") {
                is.add(
                    format!("{f}.retry.on[{i}]"),
                    format!("{on:?}: use error, timeout, http_502, http_503, http_504"),
                );
            }
        }
        if p.retry.budget_percent > 100 {
            is.add(format!("{f}.retry.budget_percent"), "must be at most 100");
        }
        if !matches!(p.proxy_protocol.as_str(), "off" | "v1" | "v2") {
            is.add(format!("{f}.proxy_protocol"), "must be off, v1 or v2");
        }
        check_sticky(&mut is, &format!("{f}.sticky"), &p.sticky);
    }
    if let Some(a) = &cfg.admin.address {
        match a.parse::<SocketAddr>() {
            Err(_) => check_addr(&mut is, "admin.address".into(), a),
            Ok(sa) if !sa.ip().is_loopback() && !cfg.admin.allow_remote => is.add(
                "admin.address".into(),
                "not a loopback address: the admin API changes everything; set allow_remote = true to mean it",
            ),
            Ok(_) => {}
        }
    }
    if let Some(t) = &cfg.admin.token {
        if t.is_empty() || t.bytes().any(|b| !b.is_ascii_graphic()) {
            is.add("admin.token".into(), "must be printable ASCII without spaces");
        }
    }
    if let Some(a) = &cfg.status.address {
        check_addr(&mut is, "status.address".into(), a);
    }
    if is.list.is_empty() {
        return Ok(());
    }
    is.list.sort_by_key(|i| i.line.unwrap_or(usize::MAX));
    Err(ConfigError { issues: is.list })
}

fn check_sticky(is: &mut Issues<'_, '_>, f: &str, s: &super::StickyConfig) {
    match s.kind.as_str() {
        "none" | "source_ip" => {}
        "cookie" => {
            if !valid_field_name(&s.cookie) || s.cookie.contains(['=', ';', ',']) {
                is.add(format!("{f}.cookie"), format!("{:?} is not a cookie name", s.cookie));
            }
            if !matches!(s.mode.as_str(), "insert" | "rewrite" | "prefix") {
                is.add(format!("{f}.mode"), "must be insert, rewrite or prefix");
            } else if s.mode != "insert" {
                for (k, set) in [
                    ("indirect", s.indirect),
                    ("maxidle", !s.maxidle.0.is_zero()),
                    ("maxlife", !s.maxlife.0.is_zero()),
                ] {
                    if set {
                        is.add(format!("{f}.{k}"), "applies to mode = \"insert\" only");
                    }
                }
            }
            let bad = |v: &str| v.bytes().any(|b| b < 0x21 || b == 0x7f || b == b';' || b == b',');
            if !s.path.starts_with('/') || bad(&s.path) {
                is.add(format!("{f}.path"), "must start with / and hold no spaces, ';' or ','");
            }
            if s.domain.as_deref().is_some_and(|d| d.is_empty() || bad(d)) {
                is.add(format!("{f}.domain"), "must be a domain name");
            }
        }
        _ => is.add(format!("{f}.type"), "must be none, cookie or source_ip"),
    }
    if s.kind == "source_ip" {
        if s.timeout.0.is_zero() {
            is.add(format!("{f}.timeout"), "must be greater than zero");
        }
        if s.capacity == 0 {
            is.add(format!("{f}.capacity"), "must be at least 1");
        }
        if s.ipv4_prefix > 32 {
            is.add(format!("{f}.ipv4_prefix"), "must be 0 to 32");
        }
        if s.ipv6_prefix > 128 {
            is.add(format!("{f}.ipv6_prefix"), "must be 0 to 128");
        }
    }
}

fn valid_field_name(n: &str) -> bool {
    !n.is_empty() && n.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn check_rules(is: &mut Issues<'_, '_>, f: &str, r: &super::HeaderRulesConfig) {
    for (name, value) in &r.add {
        if !valid_field_name(name) {
            is.add(format!("{f}.add.{name}"), "not a valid header name");
        }
        if value.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            is.add(format!("{f}.add.{name}"), "header values may not contain control characters");
        }
    }
    for (i, name) in r.remove.iter().enumerate() {
        if !valid_field_name(name) {
            is.add(format!("{f}.remove[{i}]"), "not a valid header name");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_field_and_line() {
        let src = "default_pool = \"app\"\n[[listeners]]\naddress = \"127.0.0.1:80\"\n\n[pools.app]\nscheduler = \"nope\"\nbackends = [\"127.0.0.1:1\", \"bad\"]\n";
        let e = Config::from_toml(src).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("line 6: `pools.app.scheduler`"), "{text}");
        assert!(text.contains("line 7: `pools.app.backends[1]`"), "{text}");
    }

    #[test]
    fn serde_errors_have_lines_and_paths() {
        let src = "[[listeners]]\naddress = \"127.0.0.1:80\"\n[timeouts]\nclient_header = \"ten seconds\"\n";
        let e = Config::from_toml(src).unwrap_err();
        assert_eq!(e.issues[0].line, Some(4), "{e}");
        assert_eq!(e.issues[0].field, "timeouts.client_header", "{e}");
        let e = Config::from_toml("[[listeners]]\nadress = \"x\"\n").unwrap_err();
        assert_eq!(e.issues[0].line, Some(2), "{e}");
        assert!(e.to_string().contains("adress"), "{e}");
    }

    #[test]
    fn unknown_pool_and_missing_listener() {
        let e = Config::from_toml("default_pool = \"x\"\n").unwrap_err();
        let text = e.to_string();
        assert!(text.contains("`default_pool`: no pool named \"x\""), "{text}");
        assert!(text.contains("`listeners`"), "{text}");
        assert_eq!(parse_status_range("200-399"), Some((200, 399)));
        assert_eq!(parse_status_range("399-200"), None);
    }
}
