//! Failure semantics over real sockets: a backend killed mid-test, retries of idempotent
//! requests, no unsafe retries, timeouts, the retry budget, 5xx retries, no usable backend.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

/// A backend that reads a request and closes the connection without answering; counts requests.
async fn black_hole() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let n = Arc::new(AtomicUsize::new(0));
    let n2 = n.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else { continue };
            let n = n2.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(k) => got.extend_from_slice(&buf[..k]),
                    }
                }
                n.fetch_add(1, Ordering::SeqCst);
                // dropped: closed without a response
            });
        }
    });
    (addr, n)
}

#[tokio::test]
async fn killed_backend_is_ejected_after_the_configured_failures_and_requests_still_succeed() {
    let bs = [Backend::start("a").await, Backend::start("b").await, Backend::start("c").await];
    let toml = r#"
default_pool = "app"
[[listeners]]
address = "127.0.0.1:0"
[pools.app]
backends = ["{b0}", "{b1}", "{b2}"]
passive = { consecutive_failures = 2, max_ejection_percent = 50, base_ejection = "60s" }
retry = { tries = 3 }
"#;
    let p = proxy(toml, &[&bs[0], &bs[1], &bs[2]]).await;
    let addr = p.local_addr("main").unwrap();
    for _ in 0..9 {
        assert_eq!(get(addr, "/warm").await.status, 200);
    }
    bs[1].kill();
    let before = bs[1].count();
    let mut statuses = Vec::new();
    for i in 0..30 {
        let r = get(addr, &format!("/after/{i}")).await;
        statuses.push(r.status);
        assert_ne!(r.header("x-backend"), Some("b"));
    }
    assert!(statuses.iter().all(|&s| s == 200), "idempotent requests were retried: {statuses:?}");
    assert_eq!(bs[1].count(), before, "the dead backend saw nothing");
    let pool = p.handle().pool("app").unwrap();
    let dead = pool.backends().into_iter().find(|b| b.addr == bs[1].addr).unwrap();
    assert!(dead.ejected && !dead.usable, "{dead:?}");
    assert_eq!(
        dead.stats.connect_errors(),
        2,
        "tried exactly `consecutive_failures` times, then ejected"
    );
    let status = p.handle().status_json();
    assert!(
        status.contains(&format!("\"name\": \"{}\", \"status\": \"down\"", bs[1].addr)),
        "{status}"
    );
    assert_eq!(
        bs[0].count() + bs[2].count(),
        9 - 3 + 30,
        "all later requests went to the live two"
    );
    p.shutdown().await;
}

#[tokio::test]
async fn sent_non_idempotent_requests_are_not_retried_but_gets_are() {
    let (hole, hole_count) = black_hole().await;
    let good = Backend::start("good").await;
    let toml = format!(
        r#"
default_pool = "app"
[[listeners]]
address = "127.0.0.1:0"
[pools.app]
backends = ["{hole}", "{{b0}}"]
passive = {{ enabled = false }}
retry = {{ tries = 3 }}
"#
    );
    let p = proxy(&toml, &[&good]).await;
    let addr = p.local_addr("main").unwrap();
    let mut posts_502 = 0;
    for i in 0..6 {
        let r = request(
            addr,
            &format!("POST /order/{i} HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi"),
        )
        .await;
        match r.status {
            502 => posts_502 += 1,
            200 => {}
            s => panic!("unexpected {s}"),
        }
    }
    assert_eq!(posts_502, 3, "round robin sends every other POST to the black hole");
    assert_eq!(hole_count.load(Ordering::SeqCst), 3, "each of them reached it once");
    assert_eq!(good.count(), 3, "and none was retried on the good backend");
    for i in 0..6 {
        let r = get(addr, &format!("/read/{i}")).await;
        assert_eq!(r.status, 200, "GETs are retried on the next backend");
    }
    // A retry advances the round robin too, so every GET met the black hole first.
    assert_eq!(hole_count.load(Ordering::SeqCst), 3 + 6);
    assert_eq!(good.count(), 3 + 6);
    p.shutdown().await;
}

#[tokio::test]
async fn response_header_timeout_is_504_and_only_idempotent_requests_move_on() {
    let slow = Backend::start("slow").await;
    slow.set(Behavior::Delay(Duration::from_secs(3)));
    let fast = Backend::start("fast").await;
    let toml = r#"
default_pool = "app"
[[listeners]]
address = "127.0.0.1:0"
[pools.app]
backends = ["{b0}", "{b1}"]
passive = { enabled = false }
timeouts = { response_header = "300ms" }
retry = { on = ["error", "timeout"] }
"#;
    let p = proxy(toml, &[&slow, &fast]).await;
    let addr = p.local_addr("main").unwrap();
    let post = request(addr, "POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n\r\nx").await;
    assert_eq!(post.status, 504, "{}", post.text());
    assert!(post.text().contains("did not answer in time"));
    assert_eq!(fast.count(), 0, "the POST was sent to the slow backend and is not resent");
    let r = get(addr, "/g").await;
    assert_eq!(
        (r.status, r.header("x-backend")),
        (200, Some("fast")),
        "the GET timed out on slow, then went to fast"
    );
    p.shutdown().await;
}

#[tokio::test]
async fn connect_errors_retry_even_for_post_and_the_budget_can_forbid_it() {
    let dead = Backend::start("dead").await;
    let good = Backend::start("good").await;
    dead.kill();
    let toml = r#"
default_pool = "app"
[[listeners]]
address = "127.0.0.1:0"
[pools.app]
backends = ["{b0}", "{b1}"]
passive = { enabled = false }
"#;
    let p = proxy(toml, &[&dead, &good]).await;
    let addr = p.local_addr("main").unwrap();
    for _ in 0..4 {
        let r = request(addr, "POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n\r\nx").await;
        assert_eq!(r.status, 200, "nothing was sent to the dead backend: safe to retry");
    }
    assert_eq!(good.count(), 4);
    p.shutdown().await;

    let no_budget = toml.replace(
        "passive = { enabled = false }",
        "passive = { enabled = false }\nretry = { budget_percent = 0, budget_min = 0 }",
    );
    let p = proxy(&no_budget, &[&dead, &good]).await;
    let addr = p.local_addr("main").unwrap();
    let statuses: Vec<u16> = {
        let mut v = Vec::new();
        for _ in 0..4 {
            v.push(get(addr, "/").await.status);
        }
        v
    };
    assert_eq!(
        statuses.iter().filter(|&&s| s == 502).count(),
        2,
        "{statuses:?}: no retries without budget"
    );
    assert!(p.handle().pool("app").unwrap().retry_budget().denied() >= 2);
    p.shutdown().await;
}

#[tokio::test]
async fn retry_on_503_when_configured_and_503_when_nothing_is_usable() {
    let sick = Backend::start("sick").await;
    sick.set(Behavior::Status(503));
    let good = Backend::start("good").await;
    let toml = r#"
default_pool = "app"
[[listeners]]
address = "127.0.0.1:0"
[pools.app]
backends = ["{b0}", "{b1}"]
passive = { enabled = false }
retry = { on = ["error", "timeout", "http_503"] }
[pools.off]
backends = [{ address = "{b1}", state = "disabled" }]
[[vhosts]]
hosts = ["off.test"]
pool = "off"
"#;
    let p = proxy(toml, &[&sick, &good]).await;
    let addr = p.local_addr("main").unwrap();
    for _ in 0..4 {
        assert_eq!(get(addr, "/").await.status, 200);
    }
    // Each request met the sick backend first (a retry advances the round robin too).
    assert_eq!(sick.count(), 4, "the 503s were seen");
    assert_eq!(good.count(), 4, "and retried elsewhere");
    let r = request(addr, "GET / HTTP/1.1\r\nHost: off.test\r\n\r\n").await;
    assert_eq!(r.status, 503);
    assert!(r.text().contains("no healthy upstream"));
    p.shutdown().await;
}

#[tokio::test]
async fn least_connections_sees_requests_in_flight() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    a.set(Behavior::Delay(Duration::from_millis(600)));
    b.set(Behavior::Delay(Duration::from_millis(600)));
    let toml = r#"
default_pool = "app"
[[listeners]]
address = "127.0.0.1:0"
[pools.app]
scheduler = "lc"
backends = ["{b0}", "{b1}"]
"#;
    let p = proxy(toml, &[&a, &b]).await;
    let addr = p.local_addr("main").unwrap();
    let pool = p.handle().pool("app").unwrap();
    let first = tokio::spawn(async move { get(addr, "/1").await });
    eventually("one request in flight", || {
        pool.backends().iter().map(|b| b.active).sum::<u32>() == 1
    })
    .await;
    let busy = pool.backends().into_iter().find(|b| b.active == 1).unwrap().addr;
    let second = get(addr, "/2").await;
    let first = first.await.unwrap();
    assert_ne!(
        first.header("x-backend"),
        second.header("x-backend"),
        "the idle backend took the second request"
    );
    let busy_name = if busy == a.addr { "a" } else { "b" };
    assert_eq!(first.header("x-backend"), Some(busy_name));
    eventually("nothing in flight", || pool.backends().iter().all(|b| b.active == 0)).await;
    p.shutdown().await;
}

/// A listener that never accepts, with its accept queue filled: further SYNs are dropped, so
/// connecting to it hangs (a connect timeout on loopback).
async fn tarpit() -> (socket2::Socket, std::net::SocketAddr, Vec<tokio::net::TcpStream>) {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(&"127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap().into()).unwrap();
    sock.listen(0).unwrap();
    let addr = sock.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        if let Ok(Ok(s)) =
            tokio::time::timeout(Duration::from_millis(200), tokio::net::TcpStream::connect(addr))
                .await
        {
            fillers.push(s);
        }
    }
    (sock, addr, fillers)
}

#[tokio::test]
async fn connect_timeout_is_504_and_is_retried_on_the_next_backend() {
    let (_sock, pit, _fillers) = tarpit().await;
    let good = Backend::start("good").await;
    let toml = format!(
        r#"
default_pool = "app"
[[listeners]]
address = "127.0.0.1:0"
[pools.app]
backends = ["{pit}"]
passive = {{ enabled = false }}
timeouts = {{ connect = "200ms" }}
[pools.two]
backends = ["{pit}", "{{b0}}"]
passive = {{ enabled = false }}
timeouts = {{ connect = "200ms" }}
[[vhosts]]
hosts = ["two.test"]
pool = "two"
"#
    );
    let p = proxy(&toml, &[&good]).await;
    let addr = p.local_addr("main").unwrap();
    let r = get(addr, "/").await;
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(r.text().contains("connect timed out"), "{}", r.text());
    let pool = p.handle().pool("app").unwrap();
    assert_eq!(pool.backends()[0].stats.timeouts(), 1);
    for _ in 0..2 {
        let r =
            request(addr, "POST /p HTTP/1.1\r\nHost: two.test\r\nContent-Length: 1\r\n\r\nx").await;
        assert_eq!(r.status, 200, "nothing was sent before the connect timed out: safe to retry");
    }
    assert_eq!(good.count(), 2);
    p.shutdown().await;
}
