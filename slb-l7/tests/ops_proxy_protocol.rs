//! PROXY protocol over real sockets: v1 and v2 headers from a trusted L4 tier give the client
//! address to X-Forwarded-For, X-Real-IP and source stickiness; malformed, missing and untrusted
//! headers close the connection (counted); headers sent to upstreams carry the client.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use common::*;
use parking_lot::Mutex;
use slb_l7::proxy_protocol::{ProxyAddrs, parse, write_v1, write_v2};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

async fn send_raw(addr: SocketAddr, bytes: &[u8]) -> RawClient {
    let mut c = RawClient::connect(addr).await;
    c.send(bytes).await;
    c
}

#[tokio::test]
async fn v1_and_v2_from_trusted_peers_name_the_client() {
    let b = Backend::start("b").await;
    let toml = r#"
default_pool = "app"
[[listeners]]
address = "127.0.0.1:0"
proxy_protocol = true
trusted_proxies = ["127.0.0.0/8"]
[pools.app]
backends = ["{b0}"]
"#;
    let p = proxy(toml, &[&b]).await;
    let addr = p.local_addr("main").unwrap();
    let req = b"GET /pp HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 10.9.9.9\r\n\r\n";

    let mut v1 = Vec::new();
    write_v1(sa("203.0.113.7:40000"), sa("198.51.100.1:80"), &mut v1);
    v1.extend_from_slice(req);
    let mut c = send_raw(addr, &v1).await;
    assert_eq!(c.response(false).await.unwrap().status, 200);
    let seen = b.seen.lock().last().cloned().unwrap();
    assert_eq!(seen.header("x-forwarded-for"), Some("10.9.9.9, 203.0.113.7"));
    assert_eq!(seen.header("x-real-ip"), Some("203.0.113.7"));

    // v2 over IPv6, header and request in separate writes.
    let mut v2 = Vec::new();
    write_v2(sa("[2001:db8::5]:1234"), sa("[2001:db8::1]:443"), &mut v2);
    let mut c = send_raw(addr, &v2).await;
    c.send(req).await;
    assert_eq!(c.response(false).await.unwrap().status, 200);
    let seen = b.seen.lock().last().cloned().unwrap();
    assert_eq!(seen.header("x-real-ip"), Some("2001:db8::5"));
    // The same connection keeps its client for later requests.
    c.send(req).await;
    assert_eq!(c.response(false).await.unwrap().status, 200);
    assert_eq!(b.seen.lock().last().unwrap().header("x-real-ip"), Some("2001:db8::5"));

    // v2 LOCAL (the L4 tier's own health check): the connection's address.
    let mut local = slb_l7::proxy_protocol::V2_SIGNATURE.to_vec();
    local.extend_from_slice(&[0x20, 0x00, 0, 0]);
    local.extend_from_slice(req);
    let mut c = send_raw(addr, &local).await;
    assert_eq!(c.response(false).await.unwrap().status, 200);
    assert_eq!(b.seen.lock().last().unwrap().header("x-real-ip"), Some("127.0.0.1"));

    let stats = p.handle().listener_stats();
    assert_eq!(stats[0].proxy_accepted(), (1, 2));
    let metrics = p.handle().metrics_text();
    assert!(
        metrics.contains("slb_l7_listener_proxy_headers_total{listener=\"main\",outcome=\"v2\"} 2"),
        "{metrics}"
    );
    p.shutdown().await;
}

#[tokio::test]
async fn malformed_missing_and_untrusted_headers_are_rejected() {
    let b = Backend::start("b").await;
    let toml = r#"
default_pool = "app"
[[listeners]]
name = "l4"
address = "127.0.0.1:0"
proxy_protocol = true
[[listeners]]
name = "mixed"
address = "127.0.0.1:0"
proxy_protocol = true
trusted_proxies = ["10.0.0.0/8"]
[pools.app]
backends = ["{b0}"]
"#;
    let p = proxy(toml, &[&b]).await;
    let l4 = p.local_addr("l4").unwrap();
    let mixed = p.local_addr("mixed").unwrap();
    let req = "GET / HTTP/1.1\r\nHost: t\r\n\r\n";
    for bad in [
        "PROXY TCP4 1.2.3.4 5.6.7.8 70000 80\r\n".to_owned(),
        "PROXY TCP4 1.2.3.4\r\n".to_owned(),
        format!("PROXY TCP4 {} 1 2\r\n", "9".repeat(120)),
    ] {
        let mut c = send_raw(l4, format!("{bad}{req}").as_bytes()).await;
        assert!(c.closed().await, "{bad:?} must close the connection");
    }
    let mut v2 = slb_l7::proxy_protocol::V2_SIGNATURE.to_vec();
    v2.extend_from_slice(&[0x21, 0x11, 0, 4, 1, 2, 3, 4]);
    let mut c = send_raw(l4, &v2).await;
    assert!(c.closed().await, "short v2 address block");
    // Every peer of `l4` must send a header.
    let mut c = send_raw(l4, req.as_bytes()).await;
    assert!(c.closed().await);
    // `mixed` trusts only 10/8: loopback is served directly, but may not claim another address.
    let r = request(mixed, req).await;
    assert_eq!(r.status, 200);
    assert_eq!(b.seen.lock().last().unwrap().header("x-real-ip"), Some("127.0.0.1"));
    let mut c =
        send_raw(mixed, format!("PROXY TCP4 6.6.6.6 1.1.1.1 1 80\r\n{req}").as_bytes()).await;
    assert!(c.closed().await, "untrusted header");
    assert_eq!(b.count(), 1, "nothing rejected reached the backend");
    let s = p.handle().listener_stats();
    assert_eq!((s[0].proxy_malformed(), s[0].proxy_missing()), (4, 1));
    assert_eq!(s[1].proxy_untrusted(), 1);
    p.shutdown().await;
}

#[tokio::test]
async fn source_stickiness_and_hashing_use_the_proxied_client() {
    let bs = [Backend::start("a").await, Backend::start("b").await, Backend::start("c").await];
    let toml = r#"
default_pool = "app"
[[listeners]]
address = "127.0.0.1:0"
proxy_protocol = true
[pools.app]
backends = ["{b0}", "{b1}", "{b2}"]
sticky = { type = "source_ip" }
"#;
    let p = proxy(toml, &[&bs[0], &bs[1], &bs[2]]).await;
    let addr = p.local_addr("main").unwrap();
    let mut owners = Vec::new();
    for client in ["192.0.2.1", "192.0.2.2", "192.0.2.3"] {
        let mut got = Vec::new();
        for _ in 0..4 {
            let mut h = Vec::new();
            write_v1(sa(&format!("{client}:5555")), addr, &mut h);
            h.extend_from_slice(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
            let mut c = send_raw(addr, &h).await;
            got.push(c.response(false).await.unwrap().header("x-backend").unwrap().to_owned());
        }
        assert!(got.iter().all(|g| *g == got[0]), "{client}: {got:?}");
        owners.push(got[0].clone());
    }
    owners.sort();
    owners.dedup();
    assert_eq!(owners.len(), 3, "three clients behind one L4 peer spread (round robin) then stick");
    assert_eq!(p.handle().pool("app").unwrap().sticky_templates(), 3);
    p.shutdown().await;
}

/// A backend that expects a PROXY header, records it, and answers one request per connection.
async fn proxy_aware_backend() -> (SocketAddr, Arc<Mutex<Vec<ProxyAddrs>>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else { continue };
            let seen = seen2.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut tmp = [0u8; 4096];
                loop {
                    match s.read(&mut tmp).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&tmp[..n]),
                    }
                    if let Ok(Some(h)) = parse(&buf) {
                        if buf[h.len..].windows(4).any(|w| w == b"\r\n\r\n") {
                            seen.lock().push(h.addrs);
                            break;
                        }
                    }
                }
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-Backend: pp\r\n\r\nok\n")
                    .await;
            });
        }
    });
    (addr, seen)
}

#[tokio::test]
async fn pools_can_send_proxy_headers_to_backends() {
    for version in ["v1", "v2"] {
        let (backend, seen) = proxy_aware_backend().await;
        let toml = format!(
            r#"
default_pool = "app"
[[listeners]]
address = "127.0.0.1:0"
[pools.app]
backends = ["{backend}"]
proxy_protocol = "{version}"
health = {{ type = "tcp", start = "up", interval = "1h" }}
"#
        );
        let p = proxy(&toml, &[]).await;
        let addr = p.local_addr("main").unwrap();
        let client = TcpStream::connect(addr).await.unwrap();
        let from = client.local_addr().unwrap();
        let mut c = RawClient::over(client);
        for _ in 0..2 {
            c.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").await;
            assert_eq!(c.response(false).await.unwrap().status, 200);
        }
        let got = seen.lock().clone();
        assert_eq!(got.len(), 2, "{version}: one upstream connection per request (never reused)");
        for g in got {
            assert_eq!(g, ProxyAddrs::Proxied { src: from, dst: addr }, "{version}");
        }
        p.shutdown().await;
    }
}
