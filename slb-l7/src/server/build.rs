//! Turning a [`Config`] into the running pieces: pools, the routing table, client settings.
//! Used when a proxy is built and again by every reload.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::Arc;

use rustls::pki_types::ServerName;
use slb_core::backend::{BackendState, SetOptions};
use slb_core::flow::HashKey;
use slb_core::health::{HealthConfig, HealthProbe, HealthStatus, OutlierConfig};
use slb_core::sched::{SchedulerConfig, SchedulerKind};
use slb_core::time::Clock;

use crate::config::{Config, ConfigError, HeaderRulesConfig, PoolConfig};
use crate::health::{HttpProbe, TcpProbe};
use crate::http::headers::{ForwardedFor, HeaderRules};
use crate::http::request::RequestLimits;
use crate::pool::{
    ActiveHealth, BackendSpec, HashSource, Pool, PoolSettings, RetryPolicy, SchedulerFactory,
};
use crate::proxy::Settings;
use crate::route::{Route, Router, Vhost};
use crate::sticky::{Sticky, StickyKey, StickyMode};
use crate::upstream::{Connector, KeepAlive, client_tls};

/// What pools are built with besides their configuration; kept for reloads.
pub(crate) struct BuildContext {
    pub(crate) probes: HashMap<String, Arc<dyn HealthProbe>>,
    pub(crate) schedulers: HashMap<String, Arc<dyn SchedulerFactory>>,
    pub(crate) hash_key: HashKey,
    pub(crate) clock: Clock,
    /// Idle-connection shards per backend (one per possible worker runtime).
    pub(crate) shards: usize,
    /// Signs sticky cookies.
    pub(crate) key: StickyKey,
    /// Listeners whose certificates come from the builder (TLS without configured files).
    pub(crate) builder_tls: HashSet<String>,
    /// Pools whose backends come from discovery (a reload keeps their current backends).
    pub(crate) discovered: HashSet<String>,
}

fn rules(c: &HeaderRulesConfig) -> HeaderRules {
    HeaderRules {
        remove: c
            .remove
            .iter()
            .map(|n| n.to_ascii_lowercase().into_bytes().into_boxed_slice())
            .collect(),
        add: c.add.iter().map(|(n, v)| (n.as_str().into(), v.as_str().into())).collect(),
    }
}

pub(crate) fn settings_of(cfg: &Config) -> Settings {
    Settings {
        limits: RequestLimits {
            max_head: cfg.limits.max_header_bytes.0 as usize,
            max_headers: cfg.limits.max_headers,
            max_uri: cfg.limits.max_uri_bytes.0 as usize,
            max_body: cfg.limits.max_body_bytes.0,
        },
        header_timeout: cfg.timeouts.client_header.0,
        body_timeout: cfg.timeouts.client_body.0,
        keepalive_timeout: cfg.timeouts.keepalive.0,
        send_timeout: cfg.timeouts.send.0,
        drain_idle: cfg.timeouts.drain_idle.0,
        forwarded_for: if cfg.forwarded.x_forwarded_for == "replace" {
            ForwardedFor::Replace
        } else {
            ForwardedFor::Append
        },
    }
}

pub(crate) fn build_router(cfg: &Config, pools: &HashMap<String, Arc<Pool>>) -> Router {
    let route = |pool: &str, req: HeaderRules, resp: HeaderRules| {
        pools
            .get(pool)
            .map(|p| Arc::new(Route { pool: p.clone(), request_rules: req, response_rules: resp }))
    };
    let mut r = Router::default();
    for (v, vc) in cfg.vhosts.iter().enumerate() {
        let vreq = rules(&vc.request_headers);
        let vresp = rules(&vc.response_headers);
        let mut vh = Vhost::default();
        for l in &vc.locations {
            let Some(rt) = route(
                &l.pool,
                vreq.merged(&rules(&l.request_headers)),
                vresp.merged(&rules(&l.response_headers)),
            ) else {
                continue;
            };
            if let Some(e) = &l.exact {
                vh.exact.insert(e.as_bytes().to_vec(), rt);
            } else if let Some(p) = &l.prefix {
                vh.prefix.push((p.as_bytes().to_vec(), rt));
            } else if let Some(re) = &l.regex {
                if let Ok(re) = regex::bytes::Regex::new(re) {
                    vh.regex.push((re, rt));
                }
            }
        }
        vh.prefix.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        vh.fallback = vc.pool.as_deref().and_then(|p| route(p, vreq.clone(), vresp.clone()));
        for h in &vc.hosts {
            let h = h.to_ascii_lowercase();
            if h == "*" {
                r.default_vhost.get_or_insert(v);
            } else if let Some(suffix) = h.strip_prefix('*') {
                r.wildcard_hosts.push((suffix.as_bytes().to_vec(), v));
            } else {
                r.exact_hosts.entry(h.into_bytes()).or_insert(v);
            }
        }
        r.vhosts.push(vh);
    }
    r.wildcard_hosts.sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
    r.default_route = cfg
        .default_pool
        .as_deref()
        .and_then(|p| route(p, HeaderRules::default(), HeaderRules::default()));
    r
}

pub(crate) fn backend_specs(pc: &PoolConfig) -> Vec<BackendSpec> {
    pc.backends
        .iter()
        .filter_map(|b| {
            let t = b.table();
            let addr = t.address.parse().ok()?;
            let state = match t.state.as_str() {
                "draining" => BackendState::Draining,
                "disabled" => BackendState::Disabled,
                _ => BackendState::Up,
            };
            Some(BackendSpec { addr, weight: t.weight, state })
        })
        .collect()
}

/// Builds the pool `name`. `keep_sticky` carries a predecessor's stickiness state (source
/// templates) when a reload leaves the sticky settings unchanged; `prev`, the pool it replaces
/// (scheduler runtime state carries over). The pool starts with no
/// backends: the caller adds them ([`Pool::set_backends`], or [`Pool::inherit`] on reload).
pub(crate) fn build_pool(
    name: &str,
    pc: &PoolConfig,
    ctx: &BuildContext,
    prev: Option<&Pool>,
    keep_sticky: Option<Arc<Sticky>>,
) -> Result<Arc<Pool>, ConfigError> {
    let (probes, schedulers, hash_key, shards) =
        (&ctx.probes, &ctx.schedulers, ctx.hash_key, ctx.shards);
    let key = &ctx.key;
    let f = format!("pools.{name}");
    let kind = SchedulerKind::from_str(&pc.scheduler)
        .map_err(|e| ConfigError::one(&format!("{f}.scheduler"), e.to_string()))?;
    let (scheduler, needs_hash): (Arc<dyn SchedulerFactory>, bool) = match schedulers.get(name) {
        Some(s) => (s.clone(), true),
        None => (Arc::new(SchedulerConfig { kind, seed: pc.seed, hash_key }), kind.needs_key()),
    };
    let tls = if pc.tls.enabled {
        let cfg = client_tls(pc.tls.ca_file.as_deref(), pc.tls.verify)
            .map_err(|e| ConfigError::one(&format!("{f}.tls"), e))?;
        let name =
            match &pc.tls.server_name {
                Some(n) => Some(ServerName::try_from(n.clone()).map_err(|e| {
                    ConfigError::one(&format!("{f}.tls.server_name"), e.to_string())
                })?),
                None => None,
            };
        Some((tokio_rustls::TlsConnector::from(cfg), name))
    } else {
        None
    };
    let send_proxy = match pc.proxy_protocol.as_str() {
        "v1" => 1,
        "v2" => 2,
        _ => 0,
    };
    let connector = Connector { connect_timeout: pc.timeouts.connect.0, tls, send_proxy };
    let h = &pc.health;
    let health_config = HealthConfig {
        interval: h.interval.0,
        fast_interval: h.fast_interval.0,
        down_interval: h.down_interval.0,
        timeout: h.timeout.0,
        rise: h.rise,
        fall: h.fall,
        initial: if h.start == "up" { HealthStatus::Up } else { HealthStatus::Down },
        jitter: h.jitter,
    };
    let active = match (probes.get(name), h.kind.as_str()) {
        (Some(p), _) => {
            Some(ActiveHealth { config: health_config, probe: p.clone(), kind: "custom" })
        }
        (None, "tcp") => Some(ActiveHealth {
            config: health_config,
            probe: Arc::new(TcpProbe { timeout: h.timeout.0 }),
            kind: "tcp",
        }),
        (None, "http") => {
            let probe = HttpProbe {
                timeout: h.timeout.0,
                method: h.method.clone(),
                path: h.path.clone(),
                host: h.host.clone(),
                expect_status: h
                    .expect_status
                    .iter()
                    .filter_map(|s| crate::config::parse_status(s))
                    .collect(),
                expect_body: h.expect_body.clone(),
                connector: Some(Connector { connect_timeout: h.timeout.0, ..connector.clone() }),
            };
            Some(ActiveHealth { config: health_config, probe: Arc::new(probe), kind: "http" })
        }
        _ => None,
    };
    let settings = PoolSettings {
        scheduler,
        needs_hash,
        hash: HashSource::parse(&pc.hash).unwrap_or(HashSource::ClientIp),
        hash_key,
        set_options: SetOptions {
            panic_threshold: (pc.panic_threshold > 0.0).then_some(pc.panic_threshold),
            slow_start: (!pc.slow_start.0.is_zero()).then_some(pc.slow_start.0),
        },
        host: pc.host.clone(),
        retry: RetryPolicy::from(&pc.retry),
        passive: pc.passive.enabled.then_some(OutlierConfig {
            consecutive_failures: pc.passive.consecutive_failures,
            base_ejection: pc.passive.base_ejection.0,
            max_ejection: pc.passive.max_ejection.0,
            max_ejection_percent: pc.passive.max_ejection_percent,
        }),
        count_5xx: pc.passive.count_5xx,
        connector,
        keepalive: KeepAlive {
            shards,
            // A PROXY header describes one client connection: such upstream connections are
            // never reused for another.
            max_idle: if send_proxy != 0 { 0 } else { pc.keepalive.max_idle_per_backend },
            idle_timeout: pc.keepalive.idle_timeout.0,
            max_requests: pc.keepalive.max_requests,
        },
        response_header_timeout: pc.timeouts.response_header.0,
        read_timeout: pc.timeouts.read.0,
        active,
        sticky: keep_sticky.or_else(|| {
            StickyMode::from_config(&pc.sticky).map(|m| Arc::new(Sticky::new(m, key.clone())))
        }),
    };
    Ok(Pool::with_predecessor(name.to_owned(), settings, Vec::new(), ctx.clock, prev))
}
