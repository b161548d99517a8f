//! Runtime changes over real sockets: the admin HTTP API adds, drains, re-weights, disables,
//! enables and removes backends while a steady test load runs, without one failed request; the
//! Rust API does the same and keeps the state of the backends it does not touch; the status
//! endpoint and the metrics show every change.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use slb_core::backend::{BackendId, BackendState};
use slb_core::health::HealthStatus;
use slb_l7::RunningProxy;
use slb_l7::admin::AdminError;
use slb_l7::config::Config;
use slb_l7::pool::BackendSpec;

const CONFIG: &str = r#"
default_pool = "app"
[[listeners]]
address = "127.0.0.1:0"
[status]
address = "127.0.0.1:0"
[admin]
address = "127.0.0.1:0"
[pools.app]
backends = ["{b0}", "{b1}"]
"#;

/// The row of `addr` in pool `app`.
fn row(p: &RunningProxy, addr: SocketAddr) -> Option<slb_l7::pool::BackendStatus> {
    p.handle().pool("app").unwrap().backends().into_iter().find(|b| b.addr == addr)
}

/// Waits until every backend in `busy` served `more` requests beyond what it had.
async fn progress(busy: &[&Backend], more: usize) {
    let start: Vec<usize> = busy.iter().map(|b| b.count()).collect();
    let limit = Duration::from_secs(15);
    let deadline = tokio::time::Instant::now() + limit;
    while busy.iter().zip(&start).any(|(b, s)| b.count() < s + more) {
        assert!(tokio::time::Instant::now() < deadline, "the load did not reach every backend");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// After `addr` stopped taking new requests: waits until its requests in flight are done, then
/// checks that it gets nothing more while the others serve `more` requests each.
async fn gets_nothing_new(p: &RunningProxy, quiet: &Backend, busy: &[&Backend]) {
    progress(busy, 5).await;
    eventually("in-flight requests to the quiet backend finish", || {
        row(p, quiet.addr).is_none_or(|r| r.active == 0)
    })
    .await;
    let before = quiet.count();
    progress(busy, 20).await;
    assert_eq!(quiet.count(), before, "{} got new requests", quiet.name);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_changes_apply_under_load_without_a_failed_request() {
    let (a, b, c) =
        (Backend::start("a").await, Backend::start("b").await, Backend::start("c").await);
    let p = proxy(CONFIG, &[&a, &b]).await;
    let admin_addr = p.admin_addr().unwrap();
    assert!(admin_addr.ip().is_loopback());
    let load = Load::start(
        p.local_addr("main").unwrap(),
        4,
        Duration::from_millis(2),
        20_000,
        Duration::from_secs(60),
    );
    progress(&[&a, &b], 10).await;

    // Add c with weight 2: it takes traffic, and the list shows it.
    let r =
        admin(admin_addr, "POST", &format!("/pools/app/backends?address={}&weight=2", c.addr), "")
            .await;
    assert_eq!(r.status, 201, "{}", r.text());
    progress(&[&a, &b, &c], 10).await;
    let list = admin(admin_addr, "GET", "/pools", "").await;
    assert_eq!(list.status, 200);
    let text = list.text();
    let c_json = format!("\"address\": \"{}\", \"weight\": 2, \"admin\": \"up\"", c.addr);
    assert!(text.contains(&c_json), "{text}");
    assert!(text.contains("\"requests\": "), "{text}");

    // Drain a: no new requests; the status endpoint and the metrics say so.
    let r = admin(admin_addr, "POST", &format!("/pools/app/backends/{}/drain", a.addr), "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    gets_nothing_new(&p, &a, &[&b, &c]).await;
    let status = get(p.status_addr().unwrap(), "/status").await.text();
    assert!(status.contains(&format!("\"name\": \"{}\"", a.addr)), "{status}");
    assert!(status.contains("\"admin\": \"draining\""), "{status}");
    let metrics = get(p.status_addr().unwrap(), "/metrics").await.text();
    let drained = format!("slb_l7_backend_admin_state{{pool=\"app\",backend=\"{}\"}} 1", a.addr);
    assert!(metrics.contains(&drained), "{metrics}");

    // Re-weight b, visible in the metrics.
    let r =
        admin(admin_addr, "POST", &format!("/pools/app/backends/{}/weight?value=5", b.addr), "")
            .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let metrics = admin(admin_addr, "GET", "/metrics", "").await.text();
    let weight = format!("slb_l7_backend_weight{{pool=\"app\",backend=\"{}\"}} 5", b.addr);
    assert!(metrics.contains(&weight), "{metrics}");
    progress(&[&b, &c], 5).await;

    // Disable c; enable a again.
    let r = admin(admin_addr, "POST", &format!("/pools/app/backends/{}/disable", c.addr), "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = admin(admin_addr, "POST", &format!("/pools/app/backends/{}/enable", a.addr), "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    gets_nothing_new(&p, &c, &[&a, &b]).await;

    // Remove b: it leaves the list and gets nothing new.
    let r = admin(admin_addr, "DELETE", &format!("/pools/app/backends/{}", b.addr), "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    gets_nothing_new(&p, &b, &[&a]).await;
    let one = admin(admin_addr, "GET", "/pools/app", "").await.text();
    assert!(!one.contains(&b.addr.to_string()), "{one}");
    assert!(one.contains(&a.addr.to_string()) && one.contains(&c.addr.to_string()), "{one}");

    let rep = load.finish().await;
    assert_eq!((rep.failed, rep.refused, rep.retried_idle), (0, 0, 0), "{rep:?}");
    assert!(rep.ok >= 100, "{rep:?}");
    p.shutdown().await;
}

#[tokio::test]
async fn admin_api_refuses_bad_requests_and_wrong_tokens() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let toml = CONFIG.replace("[admin]\n", "[admin]\ntoken = \"s3cret\"\n");
    let p = proxy(&toml, &[&a, &b]).await;
    let admin_addr = p.admin_addr().unwrap();
    let call = |method: &'static str, path: String, token: &'static str| async move {
        let auth = if token.is_empty() {
            String::new()
        } else {
            format!("Authorization: Bearer {token}\r\n")
        };
        request(
            admin_addr,
            &format!("{method} {path} HTTP/1.1\r\nHost: admin\r\n{auth}Connection: close\r\nContent-Length: 0\r\n\r\n"),
        )
        .await
    };
    assert_eq!(call("GET", "/pools".into(), "").await.status, 401);
    assert_eq!(call("GET", "/pools".into(), "wrong").await.status, 401);
    let add = format!("/pools/app/backends?address={}", a.addr);
    let before = p.handle().pool("app").unwrap().specs();
    assert_eq!(call("POST", add.clone(), "").await.status, 401, "no change without the token");
    assert_eq!(call("GET", "/pools".into(), "s3cret").await.status, 200);
    let dup = call("POST", add, "s3cret").await;
    assert_eq!(dup.status, 409, "{}", dup.text());
    assert_eq!(call("GET", "/pools/nope".into(), "s3cret").await.status, 404);
    let missing = call("POST", "/pools/app/backends/127.0.0.1:1/drain".into(), "s3cret").await;
    assert_eq!(missing.status, 404);
    let bad = call("POST", "/pools/app/backends?address=nowhere".into(), "s3cret").await;
    assert_eq!(bad.status, 400);
    assert!(bad.text().contains("not an address"), "{}", bad.text());
    let bad_weight =
        call("POST", format!("/pools/app/backends/{}/weight?value=-1", a.addr), "s3cret").await;
    assert_eq!(bad_weight.status, 400);
    assert_eq!(
        call("POST", format!("/pools/app/backends/{}/explode", a.addr), "s3cret").await.status,
        400
    );
    assert_eq!(p.handle().pool("app").unwrap().specs(), before, "refused calls changed nothing");
    p.shutdown().await;

    // The admin API binds to loopback unless the operator says otherwise.
    let remote = CONFIG
        .replace("{b0}", "127.0.0.1:9001")
        .replace("{b1}", "127.0.0.1:9002")
        .replace("[admin]\naddress = \"127.0.0.1:0\"", "[admin]\naddress = \"0.0.0.0:0\"");
    let err = Config::from_toml(&remote).unwrap_err().to_string();
    assert!(err.contains("admin.address") && err.contains("loopback"), "{err}");
    let allowed = remote.replace("[admin]\n", "[admin]\nallow_remote = true\n");
    Config::from_toml(&allowed).unwrap();
}

#[tokio::test]
async fn rust_api_changes_keep_the_state_of_untouched_backends() {
    let (a, b, c) =
        (Backend::start("a").await, Backend::start("b").await, Backend::start("c").await);
    let toml = CONFIG.replace(
        "backends = [\"{b0}\", \"{b1}\"]",
        "backends = [\"{b0}\", \"{b1}\"]\nhealth = { type = \"tcp\", interval = \"50ms\", rise = 1, fall = 2 }",
    );
    let p = proxy(&toml, &[&a, &b]).await;
    let addr = p.local_addr("main").unwrap();
    let h = p.handle();
    eventually("both backends are found healthy", || {
        [a.addr, b.addr].iter().all(|x| row(&p, *x).is_some_and(|r| r.health == HealthStatus::Up))
    })
    .await;
    for i in 0..6 {
        assert_eq!(get(addr, &format!("/{i}")).await.status, 200);
    }
    let b_before = row(&p, b.addr).unwrap();
    assert_eq!(b_before.stats.requests(), 3);

    // Add c: one atomic change; b keeps identity, counters and its health verdict, c starts down
    // (health checks must pass first).
    h.add_backend("app", BackendSpec::new(c.addr).with_weight(4)).unwrap();
    let b_after = row(&p, b.addr).unwrap();
    assert_eq!(b_after.id, b_before.id);
    assert_eq!(b_after.stats.requests(), 3);
    assert_eq!(b_after.health, HealthStatus::Up);
    let c_row = row(&p, c.addr).unwrap();
    assert_eq!(c_row.weight, 4);
    assert_eq!(c_row.health, HealthStatus::Down);
    assert_ne!(c_row.id, b_before.id);
    eventually("c is found healthy", || row(&p, c.addr).is_some_and(|r| r.usable)).await;

    // Drain a and b: every request goes to c.
    h.drain_backend("app", a.addr).unwrap();
    h.set_weight("app", b.addr, 0).unwrap();
    assert_eq!(row(&p, a.addr).unwrap().admin, BackendState::Draining);
    let c_seen = c.count();
    for i in 0..4 {
        let r = get(addr, &format!("/c/{i}")).await;
        assert_eq!(r.header("x-backend"), Some("c"));
    }
    assert_eq!(c.count(), c_seen + 4);
    assert_eq!(row(&p, b.addr).unwrap().stats.requests(), 3, "weight 0 takes no new requests");

    // Errors change nothing.
    let specs = h.pool("app").unwrap().specs();
    assert_eq!(
        h.add_backend("app", BackendSpec::new(c.addr)),
        Err(AdminError::BackendExists(c.addr))
    );
    assert_eq!(h.remove_backend("nope", c.addr), Err(AdminError::NoSuchPool("nope".into())));
    let nowhere: SocketAddr = "127.0.0.1:1".parse().unwrap();
    assert_eq!(h.enable_backend("app", nowhere, true), Err(AdminError::NoSuchBackend(nowhere)));
    assert_eq!(h.pool("app").unwrap().specs(), specs);

    // Removing a keeps b's and c's identities.
    let ids: Vec<BackendId> = [b.addr, c.addr].iter().map(|x| row(&p, *x).unwrap().id).collect();
    h.remove_backend("app", a.addr).unwrap();
    assert!(row(&p, a.addr).is_none());
    let after: Vec<BackendId> = [b.addr, c.addr].iter().map(|x| row(&p, *x).unwrap().id).collect();
    assert_eq!(ids, after);
    let status = h.status_json();
    assert!(!status.contains(&format!("\"{}\"", a.addr)), "{status}");
    p.shutdown().await;
}

/// Backends removed and added back many times while clients send requests as fast as they can:
/// a request whose pick raced a change still finds a backend (a pick on the scheduler being
/// replaced must not meet a removed backend's missing connection slot and answer 503).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_churn_under_load_fails_no_request() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let p = proxy(CONFIG, &[&a, &b]).await;
    let pool = p.handle().pool("app").unwrap();
    let load = Load::start(
        p.local_addr("main").unwrap(),
        4,
        Duration::from_micros(100),
        100_000,
        Duration::from_secs(60),
    );
    progress(&[&a, &b], 10).await;
    let mut changes = 0;
    while changes < 40_000 {
        pool.remove_backend(b.addr).unwrap();
        pool.add_backend(BackendSpec::new(b.addr)).unwrap();
        changes += 2;
        if changes % 2_000 == 0 {
            // Let requests run between bursts of changes.
            progress(&[&a], 1).await;
        }
    }
    let rep = load.finish().await;
    assert_eq!((rep.failed, rep.refused), (0, 0), "{rep:?}");
    assert!(rep.ok >= 10, "{rep:?}");
    p.shutdown().await;
}
