//! The commented example configuration parses, and its comments about defaults are true.

use slb_l7::config::{
    Config, HealthCheckConfig, KeepaliveConfig, LimitsConfig, PassiveConfig, PoolConfig,
    RetryConfig,
};

const EXAMPLE: &str = include_str!("../l7-proxy.example.toml");

#[test]
fn example_configuration_is_valid_and_states_the_defaults() {
    let cfg = Config::from_toml(EXAMPLE).unwrap_or_else(|e| panic!("{e}"));
    let d = Config::default();
    assert_eq!(cfg.server, d.server);
    assert_eq!(cfg.timeouts, d.timeouts);
    assert_eq!(cfg.limits, LimitsConfig::default());
    assert_eq!(cfg.forwarded, d.forwarded);
    let app = &cfg.pools["app"];
    assert_eq!(app.timeouts, Default::default());
    assert_eq!(app.keepalive, KeepaliveConfig::default());
    assert_eq!(app.passive, PassiveConfig::default());
    assert_eq!(app.retry, RetryConfig::default());
    assert_eq!(app.tls, Default::default());
    assert_eq!(app.sticky, Default::default());
    assert_eq!(app.proxy_protocol, PoolConfig::default().proxy_protocol);
    assert!(!cfg.listeners[0].proxy_protocol && cfg.listeners[0].trusted_proxies.is_empty());
    assert_eq!(cfg.admin.address.as_deref(), Some("127.0.0.1:9902"));
    assert!(!cfg.admin.allow_remote && cfg.admin.token.is_none());
    assert_eq!(
        app.health,
        HealthCheckConfig { kind: "http".into(), ..HealthCheckConfig::default() }
    );
    assert_eq!(cfg.vhosts[0].locations.len(), 3);
    assert_eq!(cfg.listeners.len(), 1);
}

#[test]
fn a_mistake_in_the_example_is_reported_with_its_line() {
    let broken = EXAMPLE.replace("scheduler = \"mh\"", "scheduler = \"fastest\"");
    let line = broken.lines().position(|l| l.contains("\"fastest\"")).unwrap() + 1;
    let err = Config::from_toml(&broken).unwrap_err().to_string();
    assert!(
        err.contains(&format!("line {line}: `pools.api.scheduler`: unknown scheduler \"fastest\"")),
        "{err}"
    );
    let broken = EXAMPLE.replace("rise = 2", "rise = \"two\"");
    let line = broken.lines().position(|l| l.contains("\"two\"")).unwrap() + 1;
    let err = Config::from_toml(&broken).unwrap_err().to_string();
    assert!(err.contains(&format!("line {line}: `pools.app.health.rise`")), "{err}");
}
