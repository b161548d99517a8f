//! The proxy's configuration: TOML, every field optional with a default, validated with errors
//! that name the field and the line.
//!
//! `slb-l7/l7-proxy.example.toml` is a commented example of every section. The smallest useful
//! file is a listener and a pool:
//!
//! ```
//! let cfg = slb_l7::config::Config::from_toml(r#"
//!     default_pool = "app"
//!     [[listeners]]
//!     address = "127.0.0.1:8080"
//!     [pools.app]
//!     backends = ["127.0.0.1:9001", "127.0.0.1:9002"]
//! "#).unwrap();
//! assert_eq!(cfg.pools["app"].scheduler, "rr");
//! assert_eq!(cfg.timeouts.client_header.0.as_secs(), 10);
//! ```

mod units;
mod validate;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use units::{Dur, Size, parse_duration, parse_size};
pub(crate) use validate::parse_status_range as parse_status;
pub use validate::{ConfigError, ConfigIssue};

/// Changes made to every configuration a proxy is built or reloaded with: command-line options
/// that override the file (an admin address, an upgrade socket), so that a reload of the file
/// keeps them. See [`ProxyBuilder::config_overrides`](crate::ProxyBuilder::config_overrides).
#[derive(Clone)]
pub struct ConfigOverrides(std::sync::Arc<dyn Fn(&mut Config) + Send + Sync>);

impl ConfigOverrides {
    /// Overrides made by `f`.
    pub fn new(f: impl Fn(&mut Config) + Send + Sync + 'static) -> Self {
        ConfigOverrides(std::sync::Arc::new(f))
    }

    /// Applies them to `cfg`.
    pub fn apply(&self, cfg: &mut Config) {
        (self.0)(cfg)
    }
}

impl std::fmt::Debug for ConfigOverrides {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConfigOverrides(..)")
    }
}

/// The whole configuration.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Process-wide settings.
    pub server: ServerConfig,
    /// Where clients connect (`[[listeners]]`).
    pub listeners: Vec<ListenerConfig>,
    /// Client-side timeouts.
    pub timeouts: ClientTimeouts,
    /// Request size limits.
    pub limits: LimitsConfig,
    /// X-Forwarded-* handling.
    pub forwarded: ForwardedConfig,
    /// Pool for requests that no virtual host or location matched; none: such requests get 404.
    pub default_pool: Option<String>,
    /// Virtual hosts (`[[vhosts]]`), matched by Host (or SNI when there is no Host).
    pub vhosts: Vec<VhostConfig>,
    /// Upstream pools by name (`[pools.NAME]`).
    pub pools: BTreeMap<String, PoolConfig>,
    /// The status and metrics endpoint.
    pub status: StatusConfig,
    /// The admin API (runtime changes, reload).
    pub admin: AdminConfig,
}

impl Config {
    /// Parses and validates a TOML document.
    pub fn from_toml(src: &str) -> Result<Config, ConfigError> {
        validate::parse_and_validate(src)
    }

    /// Reads, parses and validates a TOML file.
    pub fn from_file(path: impl AsRef<std::path::Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let src = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::io(format!("cannot read {}: {e}", path.display())))?;
        Config::from_toml(&src)
    }

    /// Validates a configuration built in code (line numbers are then unknown).
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate::check(self, None)
    }

    /// A configuration with one plain-HTTP listener on `address` sending everything to the pool
    /// `pool` with `backends` (round robin).
    pub fn simple(address: &str, pool: &str, backends: &[&str]) -> Config {
        let mut cfg = Config {
            listeners: vec![ListenerConfig {
                address: address.into(),
                ..ListenerConfig::default()
            }],
            default_pool: Some(pool.into()),
            ..Config::default()
        };
        cfg.pools.insert(
            pool.into(),
            PoolConfig {
                backends: backends.iter().map(|b| BackendConfig::new(b)).collect(),
                ..PoolConfig::default()
            },
        );
        cfg
    }
}

/// Process-wide settings.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Worker threads when the proxy makes its own runtime; 0 = one per CPU.
    pub workers: usize,
    /// Secret that signs sticky cookies (any text). None: a random key per process, handed on to
    /// the new process by a binary upgrade. Set it when several proxies must accept each
    /// other's cookies.
    pub secret: Option<String>,
    /// Graceful shutdown and upgrade: requests in flight get this long to finish.
    pub drain_timeout: Dur,
    /// Unix socket on which a running proxy hands its listening sockets to a new process
    /// (binary upgrade); none: upgrades are off.
    pub upgrade_socket: Option<PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            workers: 0,
            secret: None,
            drain_timeout: Dur::secs(30),
            upgrade_socket: None,
        }
    }
}

/// One listening socket.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ListenerConfig {
    /// Name, for logs and the status page.
    pub name: String,
    /// Address to listen on (`"0.0.0.0:80"`, `"[::]:443"`).
    pub address: String,
    /// Terminate TLS here; absent: plain HTTP.
    pub tls: Option<ListenerTls>,
    /// Offer HTTP/2: by ALPN on TLS listeners, by prior knowledge (h2c) on plain ones.
    pub http2: bool,
    /// Most client connections at once; further connections wait in the kernel's backlog.
    pub max_connections: usize,
    /// Behind a trusted L4 tier: connections from `trusted_proxies` must start with a PROXY
    /// protocol header (v1 or v2), whose client address then stands for the peer's
    /// (X-Forwarded-For, X-Real-IP, logs, client-IP hashing and stickiness).
    pub proxy_protocol: bool,
    /// Networks (`"10.0.0.0/8"`, `"127.0.0.1"`) whose PROXY headers are believed. Empty: every
    /// peer must send one. Peers outside a non-empty list are served as direct clients, and a
    /// PROXY header from them is rejected.
    pub trusted_proxies: Vec<String>,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        ListenerConfig {
            name: "main".into(),
            address: "127.0.0.1:8080".into(),
            tls: None,
            http2: true,
            max_connections: 16384,
            proxy_protocol: false,
            trusted_proxies: Vec::new(),
        }
    }
}

/// TLS termination on a listener.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ListenerTls {
    /// Certificates, chosen by SNI among the names each certificate is valid for; the first one
    /// also answers clients that send no SNI or an unknown name.
    pub certificates: Vec<CertConfig>,
}

/// A certificate chain and its private key (PEM files).
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct CertConfig {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// Extra SNI names to serve this certificate for (the DNS names in its subjectAltName are
    /// used anyway).
    pub names: Vec<String>,
}

/// Client-side timeouts.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientTimeouts {
    /// Whole request head (and TLS handshake) must arrive within this: else 408.
    pub client_header: Dur,
    /// Whole request body must arrive within this: else 408.
    pub client_body: Dur,
    /// An idle keep-alive connection is closed after this.
    pub keepalive: Dur,
    /// A response write to the client may not stall longer than this: else the connection closes.
    pub send: Dur,
    /// Draining (shutdown, upgrade): an idle keep-alive connection waits this long for one more
    /// request, answered with `Connection: close`, before it closes; so that a request a client
    /// sent just as the drain began is served rather than cut off. 0: close idle connections at
    /// once.
    pub drain_idle: Dur,
}

impl Default for ClientTimeouts {
    fn default() -> Self {
        ClientTimeouts {
            client_header: Dur::secs(10),
            client_body: Dur::secs(30),
            keepalive: Dur::secs(75),
            send: Dur::secs(30),
            drain_idle: Dur::secs(1),
        }
    }
}

/// Request size limits.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest request head: 431 beyond.
    pub max_header_bytes: Size,
    /// Most request header fields: 431 beyond.
    pub max_headers: usize,
    /// Longest request line: 414 beyond.
    pub max_uri_bytes: Size,
    /// Largest request body (bodies are buffered before they go upstream): 413 beyond.
    pub max_body_bytes: Size,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_header_bytes: Size(16 * 1024),
            max_headers: 100,
            max_uri_bytes: Size(8 * 1024),
            max_body_bytes: Size(1 << 20),
        }
    }
}

/// X-Forwarded-* handling.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ForwardedConfig {
    /// `"append"`: add the client address to the X-Forwarded-For received; `"replace"`: send
    /// only the client address (for a proxy facing untrusted clients).
    pub x_forwarded_for: String,
}

impl Default for ForwardedConfig {
    fn default() -> Self {
        ForwardedConfig { x_forwarded_for: "append".into() }
    }
}

/// A virtual host.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct VhostConfig {
    /// Host names: exact (`"example.com"`), wildcard (`"*.example.com"`), or `"*"` for the
    /// default virtual host. Ports in the Host field are ignored when matching.
    pub hosts: Vec<String>,
    /// Locations, matched as nginx does: exact, then regex in order, then the longest prefix.
    pub locations: Vec<LocationConfig>,
    /// Pool for paths no location matched; none: 404.
    pub pool: Option<String>,
    /// Request header rules for every location of this host (applied before the location's).
    pub request_headers: HeaderRulesConfig,
    /// Response header rules for every location of this host.
    pub response_headers: HeaderRulesConfig,
}

/// A location: one of `exact`, `prefix`, `regex`, and the pool it goes to.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LocationConfig {
    /// Matches this path exactly (query excluded).
    pub exact: Option<String>,
    /// Matches paths starting with this.
    pub prefix: Option<String>,
    /// Matches paths the regular expression finds a match in (`regex` crate syntax).
    pub regex: Option<String>,
    /// The pool.
    pub pool: String,
    /// Request header rules.
    pub request_headers: HeaderRulesConfig,
    /// Response header rules.
    pub response_headers: HeaderRulesConfig,
}

/// Header rules.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HeaderRulesConfig {
    /// Fields to add, name to value.
    pub add: BTreeMap<String, String>,
    /// Field names to remove.
    pub remove: Vec<String>,
}

/// An upstream pool.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PoolConfig {
    /// Scheduler name as slb-core knows it: `rr` (default), `swrr`, `mh`, and the others slb-core
    /// provides (`wlc`, `p2c`, `ketama`, ...).
    pub scheduler: String,
    /// Hash key for the hashing schedulers: `"client_ip"` (default), `"uri"`, `"header:NAME"`,
    /// `"cookie:NAME"`.
    pub hash: String,
    /// Seed for randomized schedulers.
    pub seed: u64,
    /// The backends: `"host:port"` strings or tables `{ address, weight, state }`.
    pub backends: Vec<BackendConfig>,
    /// Host field sent upstream instead of the client's.
    pub host: Option<String>,
    /// When fewer than this share of backends are healthy, use unhealthy ones too (Envoy's
    /// panic mode); 0 disables.
    pub panic_threshold: f64,
    /// Ramp a recovered backend's weight up over this (weighted schedulers); 0 disables.
    pub slow_start: Dur,
    /// TLS to the backends.
    pub tls: UpstreamTls,
    /// Upstream timeouts.
    pub timeouts: UpstreamTimeouts,
    /// Upstream keep-alive.
    pub keepalive: KeepaliveConfig,
    /// Active health checks.
    pub health: HealthCheckConfig,
    /// Passive health (outlier ejection).
    pub passive: PassiveConfig,
    /// Retries.
    pub retry: RetryConfig,
    /// Session stickiness.
    pub sticky: StickyConfig,
    /// Send a PROXY protocol header to the backends: `"off"` (default), `"v1"` or `"v2"`.
    /// Upstream connections are then not reused across requests.
    pub proxy_protocol: String,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            scheduler: "rr".into(),
            hash: "client_ip".into(),
            seed: 0,
            backends: Vec::new(),
            host: None,
            panic_threshold: 0.0,
            slow_start: Dur::secs(0),
            tls: UpstreamTls::default(),
            timeouts: UpstreamTimeouts::default(),
            keepalive: KeepaliveConfig::default(),
            health: HealthCheckConfig::default(),
            passive: PassiveConfig::default(),
            retry: RetryConfig::default(),
            sticky: StickyConfig::default(),
            proxy_protocol: "off".into(),
        }
    }
}

/// One backend.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum BackendConfig {
    /// Just an address.
    Address(String),
    /// Address and options.
    Full(BackendTable),
}

impl BackendConfig {
    /// A backend at `address` with weight 1.
    pub fn new(address: &str) -> Self {
        BackendConfig::Address(address.into())
    }

    /// The address string.
    pub fn address(&self) -> &str {
        match self {
            BackendConfig::Address(a) => a,
            BackendConfig::Full(t) => &t.address,
        }
    }

    /// The options (defaults for a bare address).
    pub fn table(&self) -> BackendTable {
        match self {
            BackendConfig::Address(a) => {
                BackendTable { address: a.clone(), ..BackendTable::default() }
            }
            BackendConfig::Full(t) => t.clone(),
        }
    }
}

/// A backend with options.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackendTable {
    /// `host:port`.
    pub address: String,
    /// Relative share; 0 = no new requests.
    pub weight: u32,
    /// `"up"`, `"draining"` or `"disabled"`.
    pub state: String,
}

impl Default for BackendTable {
    fn default() -> Self {
        BackendTable { address: String::new(), weight: 1, state: "up".into() }
    }
}

/// TLS to upstreams.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamTls {
    /// Speak TLS to the backends.
    pub enabled: bool,
    /// PEM file of CA certificates to verify the backends with (required unless `verify = false`).
    pub ca_file: Option<PathBuf>,
    /// Name to send as SNI and verify; default: the backend's IP address.
    pub server_name: Option<String>,
    /// Verify the backends' certificates.
    pub verify: bool,
}

impl Default for UpstreamTls {
    fn default() -> Self {
        UpstreamTls { enabled: false, ca_file: None, server_name: None, verify: true }
    }
}

/// Upstream timeouts.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamTimeouts {
    /// TCP (and TLS) connect: the try fails as a connect error (502, or 504 if it was a timeout).
    pub connect: Dur,
    /// From the request sent to the response head received: 504.
    pub response_header: Dur,
    /// Longest pause while reading a response body.
    pub read: Dur,
}

impl Default for UpstreamTimeouts {
    fn default() -> Self {
        UpstreamTimeouts {
            connect: Dur::secs(5),
            response_header: Dur::secs(60),
            read: Dur::secs(60),
        }
    }
}

/// Upstream keep-alive.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct KeepaliveConfig {
    /// Idle connections kept per backend (shared by all workers); 0 disables reuse.
    pub max_idle_per_backend: usize,
    /// An idle connection is closed after this.
    pub idle_timeout: Dur,
    /// A connection is closed after this many requests; 0 = no limit.
    pub max_requests: u64,
}

impl Default for KeepaliveConfig {
    fn default() -> Self {
        KeepaliveConfig { max_idle_per_backend: 1024, idle_timeout: Dur::secs(60), max_requests: 0 }
    }
}

/// Active health checks.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthCheckConfig {
    /// `"none"` (default), `"tcp"` (connect) or `"http"` (request and check the answer).
    #[serde(rename = "type")]
    pub kind: String,
    /// Interval while stable and up.
    pub interval: Dur,
    /// Interval while the state is changing (HAProxy fastinter).
    pub fast_interval: Dur,
    /// Interval while down (HAProxy downinter).
    pub down_interval: Dur,
    /// Probe timeout.
    pub timeout: Dur,
    /// Successes that bring a backend up.
    pub rise: u32,
    /// Failures that take it down.
    pub fall: u32,
    /// State before the first verdict: `"down"` (Tengine's default_down) or `"up"`.
    pub start: String,
    /// Random spread of intervals, 0.0 to 0.5.
    pub jitter: f64,
    /// HTTP: method.
    pub method: String,
    /// HTTP: path.
    pub path: String,
    /// HTTP: Host field (default: the backend address).
    pub host: Option<String>,
    /// HTTP: accepted status codes, as `"200"` or `"200-399"` items.
    pub expect_status: Vec<String>,
    /// HTTP: the body must contain this.
    pub expect_body: Option<String>,
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        HealthCheckConfig {
            kind: "none".into(),
            interval: Dur::secs(5),
            fast_interval: Dur::secs(1),
            down_interval: Dur::secs(5),
            timeout: Dur::secs(1),
            rise: 2,
            fall: 3,
            start: "down".into(),
            jitter: 0.1,
            method: "GET".into(),
            path: "/".into(),
            host: None,
            expect_status: vec!["200-399".into()],
            expect_body: None,
        }
    }
}

/// Passive health: outlier ejection from live traffic (Envoy's defaults).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PassiveConfig {
    /// Eject backends that fail live traffic.
    pub enabled: bool,
    /// Consecutive failures (connect errors, timeouts, 5xx) that eject.
    pub consecutive_failures: u32,
    /// First ejection; the n-th lasts n times this.
    pub base_ejection: Dur,
    /// Longest ejection.
    pub max_ejection: Dur,
    /// Most of the pool ejected at once, percent (at least one backend may always be ejected).
    pub max_ejection_percent: u32,
    /// Count 5xx responses as failures.
    pub count_5xx: bool,
}

impl Default for PassiveConfig {
    fn default() -> Self {
        PassiveConfig {
            enabled: true,
            consecutive_failures: 5,
            base_ejection: Dur::secs(30),
            max_ejection: Dur::secs(300),
            max_ejection_percent: 10,
            count_5xx: true,
        }
    }
}

/// Retries (nginx `proxy_next_upstream`) and the retry budget (Envoy).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Most tries per request, the first included (bounded by the pool's size).
    pub tries: u32,
    /// No new try starts after this long since the first.
    pub timeout: Dur,
    /// When to try the next backend: `"error"` (connect errors, a connection closed before the
    /// response head), `"timeout"` (connect or response-header timeout), `"http_502"`,
    /// `"http_503"`, `"http_504"`.
    pub on: Vec<String>,
    /// Also retry non-idempotent requests (POST, PATCH, ...) after they were sent. Off: such
    /// requests are retried only when the connection failed before anything was sent.
    pub non_idempotent: bool,
    /// Retries in flight may be at most this percentage of requests in flight...
    pub budget_percent: u32,
    /// ...but at least this many.
    pub budget_min: u32,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            tries: 3,
            timeout: Dur::secs(10),
            on: vec!["error".into(), "timeout".into()],
            non_idempotent: false,
            budget_percent: 20,
            budget_min: 3,
        }
    }
}

/// The status and metrics endpoint.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct StatusConfig {
    /// Address for `GET /status` (JSON) and `GET /metrics` (Prometheus); none: disabled.
    pub address: Option<String>,
}

/// Session stickiness (`[pools.NAME.sticky]`).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct StickyConfig {
    /// `"none"` (default), `"cookie"` or `"source_ip"`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Cookie: name (Tengine's default, `route`).
    pub cookie: String,
    /// Cookie: `"insert"` (the proxy sets it), `"rewrite"` (the backend sets it, the proxy
    /// replaces its value) or `"prefix"` (the proxy prefixes the backend's value).
    pub mode: String,
    /// Cookie, insert mode: hide the cookie from the backends.
    pub indirect: bool,
    /// Cookie, insert mode: a session idle longer than this is scheduled afresh; 0: no limit.
    pub maxidle: Dur,
    /// Cookie, insert mode: a session older than this is scheduled afresh; 0: no limit.
    pub maxlife: Dur,
    /// Cookie, insert mode: Max-Age attribute; 0: a session cookie.
    pub maxage: Dur,
    /// Cookie, insert mode: Domain attribute.
    pub domain: Option<String>,
    /// Cookie, insert mode: Path attribute.
    pub path: String,
    /// Cookie, insert mode: HttpOnly attribute.
    pub httponly: bool,
    /// Cookie, insert mode: Secure attribute.
    pub secure: bool,
    /// Source IP: a client sticks this long after its last request.
    pub timeout: Dur,
    /// Source IP: clients in one IPv4 prefix of this length share a backend.
    pub ipv4_prefix: u8,
    /// Source IP: clients in one IPv6 prefix of this length share a backend.
    pub ipv6_prefix: u8,
    /// Source IP: most clients remembered.
    pub capacity: usize,
}

impl Default for StickyConfig {
    fn default() -> Self {
        StickyConfig {
            kind: "none".into(),
            cookie: "route".into(),
            mode: "insert".into(),
            indirect: false,
            maxidle: Dur::secs(0),
            maxlife: Dur::secs(0),
            maxage: Dur::secs(0),
            domain: None,
            path: "/".into(),
            httponly: true,
            secure: false,
            timeout: Dur::secs(300),
            ipv4_prefix: 32,
            ipv6_prefix: 64,
            capacity: 1 << 20,
        }
    }
}

/// The admin API: HTTP on its own listener (`[admin]`).
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Address, e.g. `"127.0.0.1:9902"`; none: no admin API.
    pub address: Option<String>,
    /// Allow an address other than loopback (the API can change and reload everything).
    pub allow_remote: bool,
    /// When set, requests must carry `Authorization: Bearer TOKEN`.
    pub token: Option<String>,
}
