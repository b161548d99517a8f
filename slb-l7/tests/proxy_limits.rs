//! Bad and hostile clients: oversized heads and bodies, smuggling shapes, slow clients. Each gets
//! the right status and none disturbs the other clients.

mod common;

use common::*;

const TOML: &str = r#"
default_pool = "app"
[[listeners]]
address = "127.0.0.1:0"
[limits]
max_header_bytes = "4k"
max_uri_bytes = 1024
max_headers = 20
max_body_bytes = "64k"
[timeouts]
client_header = "500ms"
client_body = "500ms"
[pools.app]
backends = ["{b0}"]
"#;

async fn status_of(addr: std::net::SocketAddr, raw: &[u8]) -> (u16, bool) {
    let mut c = RawClient::connect(addr).await;
    c.send(raw).await;
    let r = c.response(false).await.expect("an answer");
    let closed = r.header("connection") == Some("close") && c.closed().await;
    (r.status, closed)
}

#[tokio::test]
async fn oversized_requests_get_431_414_413() {
    let b = Backend::start("a").await;
    let p = proxy(TOML, &[&b]).await;
    let addr = p.local_addr("main").unwrap();
    let big_header = format!("GET / HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n", "x".repeat(5000));
    assert_eq!(status_of(addr, big_header.as_bytes()).await, (431, true));
    let many: String = (0..30).map(|i| format!("X-{i}: v\r\n")).collect();
    assert_eq!(
        status_of(addr, format!("GET / HTTP/1.1\r\nHost: t\r\n{many}\r\n").as_bytes()).await,
        (431, true)
    );
    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: t\r\n\r\n", "u".repeat(2000));
    assert_eq!(status_of(addr, long_uri.as_bytes()).await, (414, true));
    let big_body = "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 70000\r\n\r\n";
    assert_eq!(status_of(addr, big_body.as_bytes()).await, (413, true));
    let mut chunked = b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..10 {
        chunked.extend_from_slice(format!("2000\r\n{}\r\n", "c".repeat(0x2000)).as_bytes());
    }
    assert_eq!(
        status_of(addr, &chunked).await,
        (413, true),
        "chunked bodies are counted as they arrive"
    );
    assert_eq!(b.count(), 0, "nothing reached the backend");
    assert_eq!(get(addr, "/").await.status, 200);
    p.shutdown().await;
}

#[tokio::test]
async fn smuggling_shaped_requests_are_refused() {
    let b = Backend::start("a").await;
    let p = proxy(TOML, &[&b]).await;
    let addr = p.local_addr("main").unwrap();
    let cases: [(&[u8], u16); 8] = [
        (b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nContent-Length: 40\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n", 501),
        (b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding:  xchunked\r\n\r\n", 501),
        (b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding : chunked\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: t\r\nX-Folded: a\r\n b\r\n\r\n", 400),
    ];
    for (raw, want) in cases {
        assert_eq!(status_of(addr, raw).await, (want, true), "{}", String::from_utf8_lossy(raw));
    }
    assert_eq!(b.count(), 0, "no smuggled request reached the backend");
    p.shutdown().await;
}

#[tokio::test]
async fn slow_clients_get_408_and_do_not_disturb_others() {
    let b = Backend::start("a").await;
    let p = proxy(TOML, &[&b]).await;
    let addr = p.local_addr("main").unwrap();
    // Slowloris: many connections trickling a head that never ends.
    let mut slow = Vec::new();
    for _ in 0..50 {
        let mut c = RawClient::connect(addr).await;
        c.send(b"GET / HTTP/1.1\r\nHost: t\r\nX-A: ").await;
        slow.push(c);
    }
    // A slow body.
    let mut slow_body = RawClient::connect(addr).await;
    slow_body.send(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\npartial").await;
    // Meanwhile other clients are served.
    for _ in 0..20 {
        assert_eq!(get(addr, "/fine").await.status, 200);
    }
    for c in &mut slow {
        c.send(b"x").await;
    }
    for mut c in slow {
        let r = c.response(false).await.expect("an answer");
        assert_eq!(r.status, 408);
        assert!(c.closed().await);
    }
    let r = slow_body.response(false).await.expect("an answer");
    assert_eq!(r.status, 408);
    assert_eq!(b.count(), 20);
    // An idle keep-alive connection that never sends anything is closed without a word.
    let mut idle = RawClient::connect(addr).await;
    assert!(idle.response(false).await.is_none(), "closed silently after the header timeout");
    p.shutdown().await;
}
