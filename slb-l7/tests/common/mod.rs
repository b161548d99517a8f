//! Test helpers: real backend servers on loopback, a raw HTTP/1 client that shows exactly what
//! came back, TLS material from rcgen, and a proxy started from TOML.
#![allow(dead_code, unreachable_pub)] // each test binary uses a different subset

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use slb_l7::Proxy;
use slb_l7::RunningProxy;
use slb_l7::config::Config;
use slb_l7::http::Framing;
use slb_l7::http::chunked::ChunkedDecoder;
use slb_l7::http::response::parse_response;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// A request as a backend saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// How a backend answers.
#[derive(Clone, Debug)]
pub enum Behavior {
    /// 200 with body "ok NAME\n" and `X-Backend: NAME`.
    Ok,
    /// This status, same body.
    Status(u16),
    /// Wait this long, then 200.
    Delay(Duration),
    /// 200 with this Set-Cookie field (an application setting its own session cookie).
    SetCookie(String),
    /// 200 once a permit of this semaphore is available (each request takes one for good).
    Hold(Arc<tokio::sync::Semaphore>),
}

/// A hyper HTTP/1.1 backend that records what it receives.
pub struct Backend {
    pub addr: SocketAddr,
    pub name: String,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub connections: Arc<AtomicUsize>,
    pub behavior: Arc<Mutex<Behavior>>,
    tasks: Arc<Mutex<JoinSet<()>>>,
}

impl Backend {
    pub async fn start(name: &str) -> Backend {
        Backend::start_on("127.0.0.1:0".parse().unwrap(), name).await
    }

    pub async fn start_on(addr: SocketAddr, name: &str) -> Backend {
        let l = TcpListener::bind(addr).await.unwrap();
        let addr = l.local_addr().unwrap();
        let b = Backend {
            addr,
            name: name.to_owned(),
            seen: Arc::default(),
            connections: Arc::default(),
            behavior: Arc::new(Mutex::new(Behavior::Ok)),
            tasks: Arc::new(Mutex::new(JoinSet::new())),
        };
        let (seen, conns, behavior, tasks, name) = (
            b.seen.clone(),
            b.connections.clone(),
            b.behavior.clone(),
            b.tasks.clone(),
            b.name.clone(),
        );
        let tasks2 = tasks.clone();
        tasks.lock().spawn(async move {
            loop {
                let Ok((stream, _)) = l.accept().await else { continue };
                conns.fetch_add(1, Ordering::SeqCst);
                let (seen, behavior, name) = (seen.clone(), behavior.clone(), name.clone());
                tasks2.lock().spawn(async move {
                    let svc = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let (seen, behavior, name) =
                                (seen.clone(), behavior.clone(), name.clone());
                            async move {
                                let (parts, body) = req.into_parts();
                                let body =
                                    body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
                                seen.lock().push(Seen {
                                    method: parts.method.to_string(),
                                    path: parts.uri.to_string(),
                                    headers: parts
                                        .headers
                                        .iter()
                                        .map(|(n, v)| {
                                            (
                                                n.to_string(),
                                                String::from_utf8_lossy(v.as_bytes()).into_owned(),
                                            )
                                        })
                                        .collect(),
                                    body: body.to_vec(),
                                });
                                let b = behavior.lock().clone();
                                let mut set_cookie = None;
                                let status = match b {
                                    Behavior::Ok => 200,
                                    Behavior::Status(s) => s,
                                    Behavior::Delay(d) => {
                                        tokio::time::sleep(d).await;
                                        200
                                    }
                                    Behavior::SetCookie(c) => {
                                        set_cookie = Some(c);
                                        200
                                    }
                                    Behavior::Hold(gate) => {
                                        if let Ok(p) = gate.acquire().await {
                                            p.forget();
                                        }
                                        200
                                    }
                                };
                                let mut resp = hyper::Response::builder();
                                if let Some(c) = set_cookie {
                                    resp = resp.header("Set-Cookie", c);
                                }
                                let resp = resp
                                    .status(status)
                                    .header("X-Backend", name.as_str())
                                    .header("Connection", "X-Hop")
                                    .header("X-Hop", "should not pass")
                                    .header("Keep-Alive", "timeout=300")
                                    .body(Full::new(Bytes::from(format!("ok {name}\n"))))
                                    .unwrap();
                                Ok::<_, std::convert::Infallible>(resp)
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .with_upgrades()
                        .await;
                });
            }
        });
        b
    }

    pub fn set(&self, b: Behavior) {
        *self.behavior.lock() = b;
    }

    pub fn count(&self) -> usize {
        self.seen.lock().len()
    }

    /// Closes the listener and every open connection: the port refuses from now on.
    pub fn kill(&self) {
        self.tasks.lock().abort_all();
    }
}

/// A proxy from TOML; `{b0}`, `{b1}`, ... are replaced by backend addresses.
pub async fn proxy(toml: &str, backends: &[&Backend]) -> RunningProxy {
    let mut src = toml.to_owned();
    for (i, b) in backends.iter().enumerate() {
        src = src.replace(&format!("{{b{i}}}"), &b.addr.to_string());
    }
    let cfg = Config::from_toml(&src).unwrap_or_else(|e| panic!("{e}\n{src}"));
    Proxy::from_config(cfg).unwrap().start().await.unwrap()
}

/// A response as the client saw it.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A raw HTTP/1 client: sends exact bytes, parses what comes back.
pub struct RawClient {
    pub io: Box<dyn Io>,
    buf: Vec<u8>,
}

impl RawClient {
    pub async fn connect(addr: SocketAddr) -> RawClient {
        RawClient { io: Box::new(TcpStream::connect(addr).await.unwrap()), buf: Vec::new() }
    }

    pub fn over(io: impl Io + 'static) -> RawClient {
        RawClient { io: Box::new(io), buf: Vec::new() }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.io.write_all(bytes).await.unwrap();
        self.io.flush().await.unwrap();
    }

    pub async fn fill(&mut self) -> bool {
        let mut tmp = [0u8; 16384];
        match tokio::time::timeout(Duration::from_secs(10), self.io.read(&mut tmp)).await {
            Ok(Ok(n)) if n > 0 => {
                self.buf.extend_from_slice(&tmp[..n]);
                true
            }
            _ => false,
        }
    }

    /// Reads one response; `None` if the connection closed first.
    pub async fn response(&mut self, head_request: bool) -> Option<Resp> {
        let mut spans = Vec::new();
        let head = loop {
            if let Some(h) = parse_response(&self.buf, head_request, 1 << 16, &mut spans)
                .expect("valid response")
            {
                break h;
            }
            if !self.fill().await {
                return None;
            }
        };
        let headers = spans
            .iter()
            .map(|s| {
                (
                    String::from_utf8_lossy(s.name(&self.buf)).into_owned(),
                    String::from_utf8_lossy(s.value(&self.buf)).into_owned(),
                )
            })
            .collect();
        self.buf.drain(..head.head_len);
        let mut body = Vec::new();
        match head.framing {
            Framing::None => {}
            Framing::Length(n) => {
                while (self.buf.len() as u64) < n {
                    assert!(self.fill().await, "connection closed mid-body");
                }
                body = self.buf.drain(..n as usize).collect();
            }
            Framing::Chunked => {
                let mut dec = ChunkedDecoder::new();
                loop {
                    let input = std::mem::take(&mut self.buf);
                    let n = dec.feed(&input, |r| body.extend_from_slice(&input[r])).unwrap();
                    self.buf = input[n..].to_vec();
                    if dec.is_done() {
                        break;
                    }
                    assert!(self.fill().await, "connection closed mid-body");
                }
            }
            Framing::UntilClose => {
                while self.fill().await {}
                body = std::mem::take(&mut self.buf);
            }
        }
        Some(Resp { status: head.status, headers, body })
    }

    /// True when the server closed the connection (reads EOF within 10 s).
    pub async fn closed(&mut self) -> bool {
        let mut tmp = [0u8; 1024];
        matches!(
            tokio::time::timeout(Duration::from_secs(10), self.io.read(&mut tmp)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }
}

/// One request on a fresh connection.
pub async fn get(addr: SocketAddr, path: &str) -> Resp {
    request(addr, &format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n")).await
}

/// Raw request bytes on a fresh connection; the response.
pub async fn request(addr: SocketAddr, raw: &str) -> Resp {
    let mut c = RawClient::connect(addr).await;
    c.send(raw.as_bytes()).await;
    c.response(raw.starts_with("HEAD ")).await.expect("a response")
}

/// Waits (polling, 5 s at most) until `f` holds.
pub async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A self-signed certificate for `names`, written as PEM files in a temp dir.
pub struct TestCert {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: rustls::pki_types::CertificateDer<'static>,
    pub cert_path: std::path::PathBuf,
    pub key_path: std::path::PathBuf,
}

pub fn test_cert(names: &[&str]) -> TestCert {
    let ck =
        rcgen::generate_simple_self_signed(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
    static SEQ: AtomicUsize = AtomicUsize::new(0);
    let seq = SEQ.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!(
        "slb-l7-test-{}-{seq}-{}",
        std::process::id(),
        names[0].replace('*', "_")
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    std::fs::write(&cert_path, ck.cert.pem()).unwrap();
    std::fs::write(&key_path, ck.signing_key.serialize_pem()).unwrap();
    TestCert {
        cert_pem: ck.cert.pem(),
        key_pem: ck.signing_key.serialize_pem(),
        der: ck.cert.der().clone(),
        cert_path,
        key_path,
    }
}

impl Drop for TestCert {
    fn drop(&mut self) {
        if let Some(dir) = self.cert_path.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A TLS client trusting `roots`, offering `alpn`.
pub fn tls_client(roots: &[&TestCert], alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    let mut store = rustls::RootCertStore::empty();
    for r in roots {
        store.add(r.der.clone()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

/// Outcomes of a [`Load`] run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// 200 responses.
    pub ok: u64,
    /// Other statuses, broken responses, connections closed after a request was sent on a
    /// fresh connection.
    pub failed: u64,
    /// Connections refused or not established.
    pub refused: u64,
    /// Requests repeated because a reused keep-alive connection closed before any byte of the
    /// response (RFC 9112 section 9.3.1 allows a client to retry then); they then succeeded or
    /// counted as failed.
    pub retried_idle: u64,
    /// The first few failures, for the assertion message.
    pub samples: Vec<String>,
}

/// A steady test load: `clients` tasks, each sending GET requests every `interval` (fresh
/// connections for even clients, keep-alive for odd ones), until stopped, `max_each` requests,
/// or `limit` time.
pub struct Load {
    stop: Arc<std::sync::atomic::AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<LoadReport>>,
}

impl Load {
    pub fn start(
        addr: SocketAddr,
        clients: usize,
        interval: Duration,
        max_each: usize,
        limit: Duration,
    ) -> Load {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let deadline = tokio::time::Instant::now() + limit;
        let tasks = (0..clients)
            .map(|i| {
                let stop = stop.clone();
                tokio::spawn(async move {
                    let mut rep = LoadReport::default();
                    let mut conn: Option<RawClient> = None;
                    let mut tick = tokio::time::interval(interval);
                    for n in 0..max_each {
                        tick.tick().await;
                        if stop.load(Ordering::Relaxed) || tokio::time::Instant::now() > deadline {
                            break;
                        }
                        let keep = i % 2 == 1;
                        let path = format!("/load/{i}/{n}");
                        one_request(addr, keep, &path, &mut conn, &mut rep).await;
                    }
                    rep
                })
            })
            .collect();
        Load { stop, tasks }
    }

    /// Stops the clients and sums their reports.
    pub async fn finish(self) -> LoadReport {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = LoadReport::default();
        for t in self.tasks {
            let r = t.await.unwrap();
            total.ok += r.ok;
            total.failed += r.failed;
            total.refused += r.refused;
            total.retried_idle += r.retried_idle;
            total.samples.extend(r.samples.into_iter().take(5));
        }
        total
    }
}

async fn one_request(
    addr: SocketAddr,
    keep: bool,
    path: &str,
    conn: &mut Option<RawClient>,
    rep: &mut LoadReport,
) {
    let raw = if keep {
        format!("GET {path} HTTP/1.1\r\nHost: load\r\n\r\n")
    } else {
        format!("GET {path} HTTP/1.1\r\nHost: load\r\nConnection: close\r\n\r\n")
    };
    for attempt in 0..2 {
        let reused = conn.is_some();
        let mut c = match conn.take() {
            Some(c) => c,
            None => {
                match tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr)).await {
                    Ok(Ok(s)) => RawClient::over(s),
                    other => {
                        rep.refused += 1;
                        rep.samples.push(format!("{path}: connect: {other:?}"));
                        return;
                    }
                }
            }
        };
        let sent = c.io.write_all(raw.as_bytes()).await.is_ok();
        let resp = if sent { c.try_response().await } else { Err(true) };
        match resp {
            Ok(r) if r.status == 200 => {
                rep.ok += 1;
                if keep && r.header("connection") != Some("close") {
                    *conn = Some(c);
                }
                return;
            }
            Ok(r) => {
                rep.failed += 1;
                rep.samples.push(format!("{path}: status {} {}", r.status, r.text()));
                return;
            }
            Err(nothing_received) => {
                if reused && nothing_received && attempt == 0 {
                    rep.retried_idle += 1;
                    continue;
                }
                rep.failed += 1;
                rep.samples.push(format!("{path}: connection closed (reused: {reused})"));
                return;
            }
        }
    }
}

impl RawClient {
    /// One response; `Err(true)` when the connection closed before any byte of it arrived,
    /// `Err(false)` when it broke midway.
    pub async fn try_response(&mut self) -> Result<Resp, bool> {
        let mut spans = Vec::new();
        let head = loop {
            match parse_response(&self.buf, false, 1 << 16, &mut spans) {
                Ok(Some(h)) => break h,
                Ok(None) => {}
                Err(_) => return Err(false),
            }
            let empty = self.buf.is_empty();
            if !self.fill().await {
                return Err(empty);
            }
        };
        let headers: Vec<(String, String)> = spans
            .iter()
            .map(|s| {
                (
                    String::from_utf8_lossy(s.name(&self.buf)).into_owned(),
                    String::from_utf8_lossy(s.value(&self.buf)).into_owned(),
                )
            })
            .collect();
        self.buf.drain(..head.head_len);
        let n = match head.framing {
            Framing::Length(n) => n as usize,
            Framing::None => 0,
            _ => return Err(false),
        };
        while self.buf.len() < n {
            if !self.fill().await {
                return Err(false);
            }
        }
        let body = self.buf.drain(..n).collect();
        Ok(Resp { status: head.status, headers, body })
    }
}

/// Waits (polling, `limit` at most) until the async condition `f` holds.
pub async fn eventually_async<F, Fut>(what: &str, limit: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while !f().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A GET on a fresh connection with extra header lines (each ending in CRLF).
pub async fn get_with(addr: SocketAddr, path: &str, extra: &str) -> Resp {
    request(addr, &format!("GET {path} HTTP/1.1\r\nHost: test\r\n{extra}\r\n")).await
}

/// One admin API call on a fresh connection: `method path` with `body`.
pub async fn admin(addr: SocketAddr, method: &str, path: &str, body: &str) -> Resp {
    request(
        addr,
        &format!(
            "{method} {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    )
    .await
}

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "slb-l7-{tag}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self, name: &str) -> std::path::PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
