//! Reload over real sockets: a good file applied through the admin API under a steady load
//! with zero failed requests, keeping the identity, counters, health and sticky sessions of the
//! backends that remain; bad files (syntax, values, things a reload cannot change) rejected with
//! an error that names the problem while the running configuration keeps serving.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::*;
use slb_core::health::HealthStatus;
use slb_l7::admin::AdminError;
use slb_l7::config::{Config, ConfigOverrides};
use slb_l7::{Proxy, RunningProxy};

/// A configuration with pool `app` over `backends`, sticky cookies and TCP health checks.
fn config(backends: &[SocketAddr], extra: &str) -> String {
    let list: Vec<String> = backends.iter().map(|b| format!("\"{b}\"")).collect();
    format!(
        r#"
default_pool = "app"
[[listeners]]
address = "127.0.0.1:0"
[admin]
address = "127.0.0.1:0"
[pools.app]
backends = [{}]
sticky = {{ type = "cookie" }}
health = {{ type = "tcp", interval = "50ms", rise = 1, fall = 2 }}
{extra}
"#,
        list.join(", ")
    )
}

async fn start(path: &Path) -> RunningProxy {
    Proxy::from_file(path).unwrap().start().await.unwrap()
}

fn row(p: &RunningProxy, addr: SocketAddr) -> Option<slb_l7::pool::BackendStatus> {
    p.handle().pool("app").unwrap().backends().into_iter().find(|b| b.addr == addr)
}

/// Waits until every backend in `busy` served `more` requests beyond what it had.
async fn progress(busy: &[&Backend], more: usize) {
    let start: Vec<usize> = busy.iter().map(|b| b.count()).collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while busy.iter().zip(&start).any(|(b, s)| b.count() < s + more) {
        assert!(tokio::time::Instant::now() < deadline, "the load did not reach every backend");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The backend that answers a request carrying `cookie`.
async fn sticky_owner(addr: SocketAddr, cookie: &str) -> String {
    let r = get_with(addr, "/sticky", &format!("Cookie: {cookie}\r\n")).await;
    assert_eq!(r.status, 200);
    r.header("x-backend").unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_fails_no_request_and_keeps_backend_state() {
    let (a, b, c) =
        (Backend::start("a").await, Backend::start("b").await, Backend::start("c").await);
    let dir = TempDir::new("reload");
    let path = dir.path("l7.toml");
    std::fs::write(&path, config(&[a.addr, b.addr], "")).unwrap();
    let p = start(&path).await;
    let (addr, admin_addr) = (p.local_addr("main").unwrap(), p.admin_addr().unwrap());
    eventually("a and b are found healthy", || {
        [a.addr, b.addr].iter().all(|x| row(&p, *x).is_some_and(|r| r.health == HealthStatus::Up))
    })
    .await;
    let first = get(addr, "/").await;
    let cookie = first.header("set-cookie").unwrap().split(';').next().unwrap().to_owned();
    let owner_name = first.header("x-backend").unwrap().to_owned();
    let (owner, other) = if owner_name == "a" { (&a, &b) } else { (&b, &a) };

    let load = Load::start(addr, 4, Duration::from_millis(2), 20_000, Duration::from_secs(60));
    progress(&[&a, &b], 10).await;

    // Reload 1: c joins; same pool settings, so the pool is updated in place.
    std::fs::write(&path, config(&[a.addr, b.addr, c.addr], "")).unwrap();
    let before = row(&p, owner.addr).unwrap();
    let r = admin(admin_addr, "POST", "/reload", "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("\"updated\": [\"app\"]"), "{}", r.text());
    let after = row(&p, owner.addr).unwrap();
    assert_eq!(after.id, before.id);
    assert!(after.stats.requests() >= before.stats.requests());
    assert_eq!(after.health, HealthStatus::Up, "health verdict kept");
    progress(&[&a, &b, &c], 10).await;
    assert_eq!(sticky_owner(addr, &cookie).await, owner.name);

    // Reload 2: the other one leaves and the scheduler changes, so the pool is rebuilt; the
    // owner keeps its identity, counters, health and its sticky clients.
    std::fs::write(&path, config(&[owner.addr, c.addr], "scheduler = \"swrr\"")).unwrap();
    let before = row(&p, owner.addr).unwrap();
    let r = admin(admin_addr, "POST", "/reload", "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("\"rebuilt\": [\"app\"]"), "{}", r.text());
    let after = row(&p, owner.addr).unwrap();
    assert_eq!(after.id, before.id);
    assert!(after.stats.requests() >= before.stats.requests());
    assert_eq!(after.health, HealthStatus::Up, "health verdict kept");
    assert!(row(&p, other.addr).is_none());
    assert_eq!(sticky_owner(addr, &cookie).await, owner.name);
    progress(&[owner, &c], 10).await;
    let gone = other.count();
    progress(&[owner, &c], 20).await;
    assert_eq!(other.count(), gone, "a removed backend got new requests");

    let rep = load.finish().await;
    assert_eq!((rep.failed, rep.refused, rep.retried_idle), (0, 0, 0), "{rep:?}");
    assert!(rep.ok >= 100, "{rep:?}");
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_file_is_rejected_and_the_running_configuration_keeps_serving() {
    let (a, b, c) =
        (Backend::start("a").await, Backend::start("b").await, Backend::start("c").await);
    let dir = TempDir::new("reload-bad");
    let path = dir.path("l7.toml");
    let good = config(&[a.addr, b.addr], "");
    std::fs::write(&path, &good).unwrap();
    let p = start(&path).await;
    let (addr, admin_addr) = (p.local_addr("main").unwrap(), p.admin_addr().unwrap());
    let specs = p.handle().pool("app").unwrap().specs();
    eventually("a and b are found healthy", || {
        [a.addr, b.addr].iter().all(|x| row(&p, *x).is_some_and(|r| r.usable))
    })
    .await;
    let load = Load::start(addr, 2, Duration::from_millis(2), 20_000, Duration::from_secs(60));
    progress(&[&a, &b], 5).await;

    let bad_files = [
        // Not TOML: the error names the line.
        (good.replace("[pools.app]", "[pools.app"), "line"),
        // A value that does not parse: the error names the field.
        (config(&[a.addr, b.addr], "scheduler = \"fastest\""), "pools.app.scheduler"),
        // A bound socket cannot change on reload.
        (
            good.replace(
                "[[listeners]]\naddress = \"127.0.0.1:0\"",
                "[[listeners]]\naddress = \"127.0.0.1:1\"",
            ),
            "cannot change on reload",
        ),
    ];
    for (text, says) in &bad_files {
        // Each bad file also names c, which must not join.
        std::fs::write(
            &path,
            text.replace(&format!("\"{}\"", b.addr), &format!("\"{}\", \"{}\"", b.addr, c.addr)),
        )
        .unwrap();
        let r = admin(admin_addr, "POST", "/reload", "").await;
        assert_eq!(r.status, 422, "{}", r.text());
        assert!(r.text().contains(says), "expected {says:?} in {}", r.text());
        match p.handle().reload_from_file() {
            Err(AdminError::Config(e)) => assert!(e.to_string().contains(says), "{e}"),
            other => panic!("expected a configuration error, got {other:?}"),
        }
        assert_eq!(p.handle().pool("app").unwrap().specs(), specs, "nothing changed");
        progress(&[&a, &b], 5).await;
    }
    assert_eq!(c.count(), 0, "c never joined");

    // A configuration sent in the body is applied instead of the file.
    let r = admin(admin_addr, "POST", "/reload", &config(&[a.addr, c.addr], "")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    progress(&[&a, &c], 5).await;

    let rep = load.finish().await;
    assert_eq!((rep.failed, rep.refused, rep.retried_idle), (0, 0, 0), "{rep:?}");
    p.shutdown().await;
}

#[tokio::test]
async fn command_line_overrides_survive_a_reload_of_the_file() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let dir = TempDir::new("reload-overrides");
    let path = dir.path("l7.toml");
    // The file has no admin section: the admin address comes from the "command line".
    let without_admin =
        |bs: &[SocketAddr]| config(bs, "").replace("[admin]\naddress = \"127.0.0.1:0\"\n", "");
    std::fs::write(&path, without_admin(&[a.addr])).unwrap();
    let overrides = ConfigOverrides::new(|cfg| cfg.admin.address = Some("127.0.0.1:0".into()));
    let p = Proxy::builder(Config::from_file(&path).unwrap())
        .config_path(&path)
        .config_overrides(overrides)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let admin_addr = p.admin_addr().expect("the override opened the admin API");
    std::fs::write(&path, without_admin(&[a.addr, b.addr])).unwrap();
    let r = admin(admin_addr, "POST", "/reload", "").await;
    assert_eq!(r.status, 200, "the reloaded file keeps the override: {}", r.text());
    assert!(row(&p, b.addr).is_some());
    p.shutdown().await;
}

#[tokio::test]
async fn source_ip_templates_survive_a_reload_that_rebuilds_the_pool() {
    let (a, b, c) =
        (Backend::start("a").await, Backend::start("b").await, Backend::start("c").await);
    let dir = TempDir::new("reload-source");
    let path = dir.path("l7.toml");
    let source = |bs: &[SocketAddr], extra: &str| {
        config(bs, extra)
            .replace("sticky = { type = \"cookie\" }", "sticky = { type = \"source_ip\" }")
            .replace("health = { type = \"tcp\", interval = \"50ms\", rise = 1, fall = 2 }\n", "")
    };
    std::fs::write(&path, source(&[a.addr, b.addr], "")).unwrap();
    let p = start(&path).await;
    let (addr, admin_addr) = (p.local_addr("main").unwrap(), p.admin_addr().unwrap());
    let owner = get(addr, "/").await.header("x-backend").unwrap().to_owned();
    assert_eq!(p.handle().pool("app").unwrap().sticky_templates(), 1);
    // c joins and the scheduler changes: the pool is rebuilt, the template table carried over.
    std::fs::write(&path, source(&[a.addr, b.addr, c.addr], "scheduler = \"swrr\"")).unwrap();
    let r = admin(admin_addr, "POST", "/reload", "").await;
    assert!(r.status == 200 && r.text().contains("\"rebuilt\": [\"app\"]"), "{}", r.text());
    assert_eq!(p.handle().pool("app").unwrap().sticky_templates(), 1);
    for i in 0..6 {
        let r = get(addr, &format!("/{i}")).await;
        assert_eq!(r.header("x-backend"), Some(owner.as_str()), "request {i}");
    }
    p.shutdown().await;
}
