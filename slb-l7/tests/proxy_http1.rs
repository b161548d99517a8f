//! HTTP/1.1 proxying over real sockets: balancing, forwarded fields, hop-by-hop removal, bodies,
//! keep-alive to upstreams, routing, header rules, hashing.

mod common;

use std::collections::HashMap;

use common::*;

const SIMPLE: &str = r#"
default_pool = "app"
[[listeners]]
address = "127.0.0.1:0"
[pools.app]
backends = ["{b0}", "{b1}", "{b2}"]
"#;

#[tokio::test]
async fn round_robin_over_three_backends_with_upstream_keepalive() {
    let bs = [Backend::start("a").await, Backend::start("b").await, Backend::start("c").await];
    let p = proxy(SIMPLE, &[&bs[0], &bs[1], &bs[2]]).await;
    let addr = p.local_addr("main").unwrap();
    let mut c = RawClient::connect(addr).await;
    let mut hits: HashMap<String, usize> = HashMap::new();
    for _ in 0..30 {
        c.send(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n").await;
        let r = c.response(false).await.unwrap();
        assert_eq!(r.status, 200);
        *hits.entry(r.header("x-backend").unwrap().to_owned()).or_default() += 1;
    }
    assert_eq!(hits.len(), 3, "{hits:?}");
    assert!(hits.values().all(|&n| n == 10), "round robin: {hits:?}");
    let conns: usize =
        bs.iter().map(|b| b.connections.load(std::sync::atomic::Ordering::SeqCst)).sum();
    assert!(conns <= 3, "upstream connections are reused: {conns} for 30 requests");
    p.shutdown().await;
}

#[tokio::test]
async fn forwarded_fields_and_hop_by_hop_removal() {
    let b = Backend::start("a").await;
    let p = proxy(SIMPLE.replace(r#""{b0}", "{b1}", "{b2}""#, r#""{b0}""#).as_str(), &[&b]).await;
    let addr = p.local_addr("main").unwrap();
    let r = request(
        addr,
        "GET /x?y=1 HTTP/1.1\r\nHost: Example.org\r\nX-Forwarded-For: 198.51.100.1\r\nConnection: keep-alive, X-Private\r\n\
         X-Private: secret\r\nKeep-Alive: 10\r\nTE: trailers\r\nProxy-Connection: keep-alive\r\nX-Real-IP: 6.6.6.6\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-hop"), None, "fields named by the upstream's Connection are removed");
    assert_eq!(r.header("keep-alive"), None);
    let seen = b.seen.lock()[0].clone();
    assert_eq!(seen.path, "/x?y=1");
    assert_eq!(seen.header("host"), Some("Example.org"));
    assert_eq!(seen.header("x-forwarded-for"), Some("198.51.100.1, 127.0.0.1"));
    assert_eq!(seen.header("x-real-ip"), Some("127.0.0.1"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    assert_eq!(seen.header("x-forwarded-host"), Some("Example.org"));
    for hop in ["x-private", "keep-alive", "te", "proxy-connection"] {
        assert_eq!(seen.header(hop), None, "{hop} must not reach the upstream");
    }
    p.shutdown().await;
}

#[tokio::test]
async fn bodies_are_forwarded_with_a_length() {
    let b = Backend::start("a").await;
    let p = proxy(SIMPLE.replace(r#""{b0}", "{b1}", "{b2}""#, r#""{b0}""#).as_str(), &[&b]).await;
    let addr = p.local_addr("main").unwrap();
    let r =
        request(addr, "POST /form HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\nhello world")
            .await;
    assert_eq!(r.status, 200);
    let r = request(
        addr,
        "POST /chunks HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200);
    let seen = b.seen.lock().clone();
    assert_eq!(seen[0].body, b"hello world");
    assert_eq!(seen[1].body, b"hello world");
    assert_eq!(seen[1].header("content-length"), Some("11"), "de-chunked");
    assert_eq!(seen[1].header("transfer-encoding"), None);
    // Expect: 100-continue is answered by the proxy.
    let mut c = RawClient::connect(addr).await;
    c.send(b"PUT /e HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
        .await;
    let interim = c.response(false).await.unwrap();
    assert_eq!(interim.status, 100);
    c.send(b"abc").await;
    assert_eq!(c.response(false).await.unwrap().status, 200);
    assert_eq!(b.seen.lock()[2].body, b"abc");
    p.shutdown().await;
}

#[tokio::test]
async fn http10_and_head_and_pipelining() {
    let b = Backend::start("a").await;
    let p = proxy(SIMPLE.replace(r#""{b0}", "{b1}", "{b2}""#, r#""{b0}""#).as_str(), &[&b]).await;
    let addr = p.local_addr("main").unwrap();
    let mut c = RawClient::connect(addr).await;
    c.send(b"GET /old HTTP/1.0\r\n\r\n").await;
    let r = c.response(false).await.unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "ok a\n"));
    assert!(c.closed().await, "HTTP/1.0 without keep-alive closes");
    let r = request(addr, "HEAD / HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    let mut c = RawClient::connect(addr).await;
    c.send(b"GET /1 HTTP/1.1\r\nHost: t\r\n\r\nGET /2 HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert_eq!(c.response(false).await.unwrap().status, 200);
    assert_eq!(c.response(false).await.unwrap().status, 200);
    let paths: Vec<String> = b.seen.lock().iter().map(|s| s.path.clone()).collect();
    assert_eq!(paths, ["/old", "/", "/1", "/2"]);
    p.shutdown().await;
}

#[tokio::test]
async fn virtual_hosts_locations_and_header_rules() {
    let [api, img, web, other, fallback] = [
        Backend::start("api").await,
        Backend::start("img").await,
        Backend::start("web").await,
        Backend::start("other").await,
        Backend::start("fallback").await,
    ];
    let toml = r#"
default_pool = "fallback"
[[listeners]]
address = "127.0.0.1:0"
[[vhosts]]
hosts = ["example.com", "www.example.com"]
pool = "web"
response_headers = { add = { "X-Served-By" = "slb" }, remove = ["X-Backend"] }
[[vhosts.locations]]
prefix = "/api/"
pool = "api"
request_headers = { add = { "X-Api" = "1" }, remove = ["Cookie"] }
[[vhosts.locations]]
regex = '\.(png|jpg)$'
pool = "img"
[[vhosts.locations]]
exact = "/api/special.png"
pool = "web"
[[vhosts]]
hosts = ["*.other.net"]
pool = "other"
[pools.api]
backends = ["{b0}"]
[pools.img]
backends = ["{b1}"]
[pools.web]
backends = ["{b2}"]
[pools.other]
backends = ["{b3}"]
[pools.fallback]
backends = ["{b4}"]
"#;
    let p = proxy(toml, &[&api, &img, &web, &other, &fallback]).await;
    let addr = p.local_addr("main").unwrap();
    let go = |host: &'static str, path: &'static str| async move {
        request(addr, &format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nCookie: c=1\r\n\r\n")).await
    };
    assert_eq!(go("example.com", "/api/users").await.text(), "ok api\n");
    assert_eq!(
        go("EXAMPLE.com:8080", "/api/x.png").await.text(),
        "ok img\n",
        "regex before prefix"
    );
    assert_eq!(go("example.com", "/api/special.png").await.text(), "ok web\n", "exact first");
    assert_eq!(go("www.example.com", "/index.html").await.text(), "ok web\n", "vhost pool");
    assert_eq!(go("a.b.other.net", "/").await.text(), "ok other\n", "wildcard host");
    assert_eq!(go("other.net", "/").await.text(), "ok fallback\n", "wildcard needs a label");
    assert_eq!(go("unknown.org", "/api/users").await.text(), "ok fallback\n", "default route");
    let r = go("example.com", "/api/users").await;
    assert_eq!(r.header("x-served-by"), Some("slb"));
    assert_eq!(r.header("x-backend"), None);
    let seen = api.seen.lock()[0].clone();
    assert_eq!(seen.header("x-api"), Some("1"));
    assert_eq!(seen.header("cookie"), None);
    assert_eq!(img.seen.lock()[0].header("cookie"), Some("c=1"), "rules are per location");
    p.shutdown().await;
}

#[tokio::test]
async fn no_route_is_404() {
    let b = Backend::start("a").await;
    let toml = r#"
[[listeners]]
address = "127.0.0.1:0"
[[vhosts]]
hosts = ["only.example"]
pool = "app"
[pools.app]
backends = ["{b0}"]
"#;
    let p = proxy(toml, &[&b]).await;
    let r =
        request(p.local_addr("main").unwrap(), "GET / HTTP/1.1\r\nHost: elsewhere\r\n\r\n").await;
    assert_eq!(r.status, 404);
    assert!(r.text().contains("no route"), "{}", r.text());
    p.shutdown().await;
}

#[tokio::test]
async fn hashing_by_header_cookie_and_client_ip_is_sticky() {
    let bs = [Backend::start("a").await, Backend::start("b").await, Backend::start("c").await];
    for hash in ["header:X-User", "cookie:sid", "uri", "client_ip"] {
        let toml = SIMPLE
            .replace("[pools.app]", &format!("[pools.app]\nscheduler = \"mh\"\nhash = \"{hash}\""));
        let p = proxy(&toml, &[&bs[0], &bs[1], &bs[2]]).await;
        let addr = p.local_addr("main").unwrap();
        let mut spread = std::collections::HashSet::new();
        for user in 0..20 {
            let req = format!(
                "GET /u/{user} HTTP/1.1\r\nHost: t\r\nX-User: {user}\r\nCookie: a=b; sid={user}\r\n\r\n"
            );
            let first = request(addr, &req).await.header("x-backend").unwrap().to_owned();
            for _ in 0..3 {
                assert_eq!(
                    request(addr, &req).await.header("x-backend").unwrap(),
                    first,
                    "{hash}: key {user} moved"
                );
            }
            spread.insert(first);
        }
        if hash == "client_ip" {
            assert_eq!(spread.len(), 1, "one client address, one backend");
        } else {
            assert!(spread.len() >= 2, "{hash}: 20 keys all on one backend");
        }
        p.shutdown().await;
    }
}

#[test]
fn per_worker_runtimes_share_routing_and_pools() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let bs = rt.block_on(async { [Backend::start("a").await, Backend::start("b").await] });
    let cfg = slb_l7::config::Config::simple(
        "127.0.0.1:0",
        "app",
        &[&bs[0].addr.to_string(), &bs[1].addr.to_string()],
    );
    let workers = slb_l7::Proxy::from_config(cfg).unwrap().start_workers(2).unwrap();
    let addr = workers.local_addr("main").unwrap();
    rt.block_on(async {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..40 {
            let r = get(addr, "/").await;
            assert_eq!(r.status, 200);
            seen.insert(r.header("x-backend").unwrap().to_owned());
        }
        assert_eq!(seen.len(), 2);
    });
    let pool = workers.handle().pool("app").unwrap();
    let total: u64 = pool.backends().iter().map(|b| b.stats.requests()).sum();
    assert_eq!(total, 40, "one pool, counted across workers");
    workers.shutdown();
    assert!(
        rt.block_on(async { tokio::net::TcpStream::connect(addr).await.is_err() }),
        "listeners closed"
    );
}
