//! Active health checks (HTTP and TCP), the status endpoint and metrics, and embedding: a custom
//! probe, scheduler and discovery, and backends changed at runtime.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use parking_lot::Mutex;
use slb_core::backend::BackendSet;
use slb_core::health::{HealthProbe, HealthStatus, ProbeFuture, ProbeResult};
use slb_core::sched::{PickContext, PickError, Picked, Scheduler};
use slb_l7::Proxy;
use slb_l7::config::Config;
use slb_l7::health::{Discovery, DiscoveryFuture};
use slb_l7::pool::{BackendSpec, SchedulerFactory};

fn health(pool: &slb_l7::pool::Pool, addr: std::net::SocketAddr) -> (HealthStatus, bool) {
    let b = pool.backends().into_iter().find(|b| b.addr == addr).unwrap();
    (b.health, b.usable)
}

#[tokio::test]
async fn http_checks_take_backends_down_and_up_and_match_bodies() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let toml = r#"
default_pool = "app"
[[listeners]]
address = "127.0.0.1:0"
[status]
address = "127.0.0.1:0"
[pools.app]
backends = ["{b0}", "{b1}"]
health = { type = "http", path = "/healthz", interval = "100ms", fast_interval = "50ms", down_interval = "100ms", rise = 2, fall = 2, expect_status = ["200"] }
"#;
    let p = proxy(toml, &[&a, &b]).await;
    let pool = p.handle().pool("app").unwrap();
    assert_eq!(health(&pool, a.addr), (HealthStatus::Down, false), "backends start down");
    eventually("both up", || health(&pool, a.addr).1 && health(&pool, b.addr).1).await;
    let probe = a.seen.lock()[0].clone();
    assert_eq!((probe.method.as_str(), probe.path.as_str()), ("GET", "/healthz"));
    b.set(Behavior::Status(500));
    eventually("b down", || health(&pool, b.addr) == (HealthStatus::Down, false)).await;
    let addr = p.local_addr("main").unwrap();
    for _ in 0..6 {
        assert_eq!(get(addr, "/").await.header("x-backend"), Some("a"));
    }
    // Status page and metrics over the status listener.
    let s = p.status_addr().unwrap();
    let status = get(s, "/status").await;
    assert_eq!(status.header("content-type"), Some("application/json"));
    let text = status.text();
    assert!(text.contains(&format!("\"name\": \"{}\", \"status\": \"down\"", b.addr)), "{text}");
    assert!(text.contains(&format!("\"name\": \"{}\", \"status\": \"up\"", a.addr)), "{text}");
    assert!(text.contains("\"type\": \"http\""), "{text}");
    let metrics = get(s, "/metrics").await.text();
    assert!(
        metrics.contains(&format!("slb_l7_backend_up{{pool=\"app\",backend=\"{}\"}} 0", b.addr)),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "slb_l7_backend_requests_total{{pool=\"app\",backend=\"{}\"}} 6",
            a.addr
        )),
        "{metrics}"
    );
    assert!(metrics.contains("slb_l7_backend_latency_seconds_bucket"), "{metrics}");
    b.set(Behavior::Ok);
    eventually("b back up", || health(&pool, b.addr) == (HealthStatus::Up, true)).await;
    p.shutdown().await;

    let body_match = toml.replace("expect_status = [\"200\"]", "expect_body = \"ok a\"");
    let p = proxy(&body_match, &[&a, &b]).await;
    let pool = p.handle().pool("app").unwrap();
    eventually("a up", || health(&pool, a.addr).1).await;
    let checks_of_b = || pool.backends().into_iter().find(|x| x.addr == b.addr).unwrap().checks;
    eventually("b probed three times", || checks_of_b().0 >= 3).await;
    assert_eq!(
        checks_of_b().0,
        checks_of_b().1,
        "every probe of b failed: its body does not match"
    );
    assert!(!health(&pool, b.addr).1);
    p.shutdown().await;
}

#[tokio::test]
async fn tcp_checks_notice_a_dead_backend() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let toml = r#"
default_pool = "app"
[[listeners]]
address = "127.0.0.1:0"
[pools.app]
backends = ["{b0}", "{b1}"]
health = { type = "tcp", interval = "100ms", fast_interval = "50ms", down_interval = "100ms", rise = 1, fall = 2, start = "up" }
"#;
    let p = proxy(toml, &[&a, &b]).await;
    let pool = p.handle().pool("app").unwrap();
    assert!(health(&pool, b.addr).1, "start = up");
    b.kill();
    eventually("b down", || !health(&pool, b.addr).1).await;
    assert!(health(&pool, a.addr).1);
    assert_eq!(b.count(), 0, "TCP checks send no requests");
    p.shutdown().await;
}

/// A probe an application controls.
struct Switch(Arc<AtomicBool>);
impl HealthProbe for Switch {
    fn probe(&self, _target: std::net::SocketAddr) -> ProbeFuture<'_> {
        let up = self.0.load(Ordering::SeqCst);
        Box::pin(async move {
            if up { ProbeResult::Healthy } else { ProbeResult::Unhealthy("switched off".into()) }
        })
    }
}

/// Always the last usable backend.
#[derive(Debug)]
struct Last;
#[derive(Debug)]
struct LastSched(BackendSet);
impl Scheduler for LastSched {
    fn name(&self) -> &'static str {
        "last"
    }
    fn backends(&self) -> &BackendSet {
        &self.0
    }
    fn pick(&self, _ctx: &PickContext<'_>) -> Result<Picked<'_>, PickError> {
        let i = *self.0.usable().last().ok_or(PickError::NoBackend)? as usize;
        Ok(Picked { index: i, backend: &self.0.backends()[i] })
    }
}
impl SchedulerFactory for Last {
    fn build(&self, set: BackendSet) -> Box<dyn Scheduler> {
        Box::new(LastSched(set))
    }
}

/// Backends from a list the test edits.
struct Listed(Arc<Mutex<Vec<BackendSpec>>>);
impl Discovery for Listed {
    fn discover(&self) -> DiscoveryFuture<'_> {
        let list = self.0.lock().clone();
        Box::pin(async move { Ok(list) })
    }
}

#[tokio::test]
async fn embedding_custom_probe_scheduler_discovery_and_runtime_changes() {
    let (a, b, c) =
        (Backend::start("a").await, Backend::start("b").await, Backend::start("c").await);
    let mut cfg = Config::simple("127.0.0.1:0", "app", &[&a.addr.to_string(), &b.addr.to_string()]);
    let pool_cfg = cfg.pools.get_mut("app").unwrap();
    pool_cfg.health.interval = slb_l7::config::Dur::millis(50);
    pool_cfg.health.fast_interval = slb_l7::config::Dur::millis(50);
    pool_cfg.health.down_interval = slb_l7::config::Dur::millis(50);
    pool_cfg.health.rise = 1;
    pool_cfg.health.fall = 1;
    cfg.pools.insert("found".into(), Default::default());
    cfg.vhosts.push(slb_l7::config::VhostConfig {
        hosts: vec!["found.test".into()],
        pool: Some("found".into()),
        ..Default::default()
    });
    let switch = Arc::new(AtomicBool::new(true));
    let listed = Arc::new(Mutex::new(vec![BackendSpec::new(c.addr)]));
    let proxy = Proxy::builder(cfg)
        .health_probe("app", Arc::new(Switch(switch.clone())))
        .scheduler("app", Arc::new(Last))
        .discovery("found", Arc::new(Listed(listed.clone())), Duration::from_millis(50))
        .build()
        .unwrap();
    let handle = proxy.handle();
    let running = proxy.start().await.unwrap();
    let addr = running.local_addr("main").unwrap();
    let pool = handle.pool("app").unwrap();
    eventually("custom probe brings both up", || pool.backends().iter().all(|b| b.usable)).await;
    for _ in 0..3 {
        assert_eq!(
            get(addr, "/").await.header("x-backend"),
            Some("b"),
            "the custom scheduler picks the last"
        );
    }
    switch.store(false, Ordering::SeqCst);
    eventually("custom probe takes both down", || pool.backends().iter().all(|b| !b.usable)).await;
    assert_eq!(get(addr, "/").await.status, 503);
    switch.store(true, Ordering::SeqCst);
    eventually("up again", || pool.backends().iter().all(|b| b.usable)).await;

    // Runtime change: b leaves, c joins (it starts down until the probe says otherwise); a keeps
    // its identity and counters.
    let a_before = pool.backends().into_iter().find(|x| x.addr == a.addr).unwrap();
    pool.set_backends(vec![BackendSpec::new(a.addr), BackendSpec::new(c.addr)]);
    let a_after = pool.backends().into_iter().find(|x| x.addr == a.addr).unwrap();
    assert_eq!(a_after.id, a_before.id);
    assert!(Arc::ptr_eq(&a_after.stats, &a_before.stats), "counters survive the change");
    assert!(a_after.usable, "health state survives the change");
    eventually("c up", || pool.backends().iter().all(|b| b.usable)).await;
    assert_eq!(get(addr, "/").await.header("x-backend"), Some("c"));

    // Discovery fills the other pool and follows its changes.
    let found =
        |addr| async move { request(addr, "GET / HTTP/1.1\r\nHost: found.test\r\n\r\n").await };
    eventually("discovered", || handle.pool("found").unwrap().backends().len() == 1).await;
    assert_eq!(found(addr).await.header("x-backend"), Some("c"));
    *listed.lock() = vec![BackendSpec::new(a.addr)];
    eventually("rediscovered", || handle.pool("found").unwrap().backends()[0].addr == a.addr).await;
    assert_eq!(found(addr).await.header("x-backend"), Some("a"));
    running.shutdown().await;
}
