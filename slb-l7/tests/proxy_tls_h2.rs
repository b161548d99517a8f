//! HTTPS with rcgen certificates chosen by SNI, HTTP/2 (ALPN and h2c), WebSocket pass-through,
//! TLS to upstreams; curl as a second, independent client.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn tls_toml(a: &TestCert, b: &TestCert) -> String {
    format!(
        r#"
default_pool = "app"
[[listeners]]
name = "tls"
address = "127.0.0.1:0"
[listeners.tls]
certificates = [
  {{ cert = "{}", key = "{}", names = ["a.test"] }},
  {{ cert = "{}", key = "{}" }},
]
[pools.app]
backends = ["{{b0}}"]
"#,
        a.cert_path.display(),
        a.key_path.display(),
        b.cert_path.display(),
        b.key_path.display()
    )
}

async fn tls_connect(
    addr: std::net::SocketAddr,
    name: &str,
    roots: &[&TestCert],
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let server_name = ServerName::try_from(name.to_owned()).unwrap();
    tls_client(roots, alpn).connect(server_name, tcp).await.unwrap()
}

#[tokio::test]
async fn https_certificates_by_sni_and_forwarded_proto() {
    // The second certificate is served for the DNS names in its subjectAltName (no `names`).
    // A also covers 127.0.0.1: a client connecting by address sends no SNI and gets the default.
    let (a, b) = (test_cert(&["a.test", "127.0.0.1"]), test_cert(&["x.b.test"]));
    let be = Backend::start("a").await;
    let p = proxy(&tls_toml(&a, &b), &[&be]).await;
    let addr = p.local_addr("tls").unwrap();
    for (sni, want) in [("a.test", &a), ("x.b.test", &b), ("127.0.0.1", &a)] {
        let tls = tls_connect(addr, sni, &[&a, &b], &[b"http/1.1"]).await;
        let presented = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
        assert_eq!(presented, want.der, "SNI {sni}");
        let mut c = RawClient::over(tls);
        c.send(format!("GET /s HTTP/1.1\r\nHost: {sni}\r\n\r\n").as_bytes()).await;
        let r = c.response(false).await.unwrap();
        assert_eq!((r.status, r.text().as_str()), (200, "ok a\n"));
    }
    assert_eq!(be.seen.lock()[0].header("x-forwarded-proto"), Some("https"));
    p.shutdown().await;
}

async fn h2_client<S>(io: S) -> hyper::client::conn::http2::SendRequest<Full<Bytes>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .unwrap();
    tokio::spawn(conn);
    send
}

async fn h2_roundtrips(
    send: &mut hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    authority: &str,
) {
    // Concurrent streams on one connection, GETs and a POST with a body.
    let mut tasks = Vec::new();
    for i in 0..10 {
        let mut s = send.clone();
        let uri = format!("https://{authority}/h2/{i}");
        tasks.push(tokio::spawn(async move {
            let req = hyper::Request::get(uri).body(Full::new(Bytes::new())).unwrap();
            let resp = s.send_request(req).await.unwrap();
            let status = resp.status().as_u16();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            (status, body)
        }));
    }
    for t in tasks {
        let (status, body) = t.await.unwrap();
        assert_eq!((status, &body[..]), (200, &b"ok a\n"[..]));
    }
    let req = hyper::Request::post(format!("https://{authority}/upload"))
        .body(Full::new(Bytes::from_static(b"h2 body")))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("x-hop").is_none(), "hop-by-hop fields stay out of h2 responses");
}

#[tokio::test]
async fn http2_over_tls_by_alpn_and_h2c_prior_knowledge() {
    let (a, b) = (test_cert(&["a.test"]), test_cert(&["x.b.test"]));
    let be = Backend::start("a").await;
    let p = proxy(&tls_toml(&a, &b), &[&be]).await;
    let tls =
        tls_connect(p.local_addr("tls").unwrap(), "a.test", &[&a], &[b"h2", b"http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let mut send = h2_client(tls).await;
    h2_roundtrips(&mut send, "a.test").await;
    let posted = be.seen.lock().iter().find(|s| s.method == "POST").cloned().unwrap();
    assert_eq!(posted.body, b"h2 body");
    assert_eq!(posted.header("host"), Some("a.test"));
    assert_eq!(posted.header("x-forwarded-proto"), Some("https"));
    p.shutdown().await;

    let plain = proxy("default_pool = \"app\"\n[[listeners]]\naddress = \"127.0.0.1:0\"\n[pools.app]\nbackends = [\"{b0}\"]\n", &[&be]).await;
    let tcp = TcpStream::connect(plain.local_addr("main").unwrap()).await.unwrap();
    let mut send = h2_client(tcp).await;
    h2_roundtrips(&mut send, "plain.test").await;
    plain.shutdown().await;
}

#[tokio::test]
async fn curl_speaks_http2_and_http11_through_tls() {
    if std::process::Command::new("curl").arg("--version").output().is_err() {
        eprintln!("curl not installed: skipping the curl cross-check");
        return;
    }
    let (a, b) = (test_cert(&["a.test"]), test_cert(&["x.b.test"]));
    let be = Backend::start("a").await;
    let p = proxy(&tls_toml(&a, &b), &[&be]).await;
    let port = p.local_addr("tls").unwrap().port();
    for (flag, want) in [("--http2", "2"), ("--http1.1", "1.1")] {
        let out = tokio::process::Command::new("curl")
            .args(["-s", flag, "--cacert"])
            .arg(&a.cert_path)
            .args([
                "--resolve",
                &format!("a.test:{port}:127.0.0.1"),
                "-w",
                "\\n%{http_version} %{http_code}",
            ])
            .arg(format!("https://a.test:{port}/curl"))
            .output()
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            text,
            format!("ok a\n\n{want} 200"),
            "curl {flag}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    p.shutdown().await;
}

/// A backend that accepts a WebSocket upgrade and then echoes bytes.
async fn ws_backend() -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else { continue };
            tokio::spawn(async move {
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    got.extend_from_slice(&buf[..n]);
                }
                let req = String::from_utf8_lossy(&got).to_ascii_lowercase();
                assert!(
                    req.contains("upgrade: websocket") && req.contains("connection: upgrade"),
                    "{req}"
                );
                s.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: x\r\n\r\n").await.unwrap();
                loop {
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn websocket_upgrade_passes_through() {
    let ws = ws_backend().await;
    let toml = format!(
        "default_pool = \"ws\"\n[[listeners]]\naddress = \"127.0.0.1:0\"\n[pools.ws]\nbackends = [\"{ws}\"]\n"
    );
    let p = proxy(&toml, &[]).await;
    let mut c = RawClient::connect(p.local_addr("main").unwrap()).await;
    c.send(b"GET /chat HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\nSec-WebSocket-Version: 13\r\n\r\n").await;
    let r = c.response(false).await.unwrap();
    assert_eq!(r.status, 101);
    assert_eq!(r.header("upgrade"), Some("websocket"));
    // A masked text frame "hi" and back (the echo server returns it unchanged).
    let frame = [0x81u8, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2];
    for _ in 0..3 {
        c.io.write_all(&frame).await.unwrap();
        let mut back = [0u8; 8];
        c.io.read_exact(&mut back).await.unwrap();
        assert_eq!(back, frame);
    }
    p.shutdown().await;
}

#[tokio::test]
async fn tls_to_upstreams() {
    let cert = test_cert(&["backend.test"]);
    let key = rustls::pki_types::PrivateKeyDer::try_from(
        rustls::pki_types::pem::PemObject::from_pem_slice(cert.key_pem.as_bytes())
            .map(|k: rustls::pki_types::PrivatePkcs8KeyDer<'static>| k.secret_pkcs8_der().to_vec())
            .unwrap(),
    )
    .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server_cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der.clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_cfg));
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { continue };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(s).await else { return };
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                        Bytes::from_static(b"secure\n"),
                    )))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    let toml = format!(
        "default_pool = \"s\"\n[[listeners]]\naddress = \"127.0.0.1:0\"\n[pools.s]\nbackends = [\"{addr}\"]\n\
         tls = {{ enabled = true, ca_file = \"{}\", server_name = \"backend.test\" }}\n",
        cert.cert_path.display()
    );
    let p = proxy(&toml, &[]).await;
    let pa = p.local_addr("main").unwrap();
    for _ in 0..3 {
        let r = get(pa, "/").await;
        assert_eq!((r.status, r.text().as_str()), (200, "secure\n"));
    }
    let wrong_name = toml.replace("server_name = \"backend.test\"", "server_name = \"other.test\"");
    let p2 = proxy(&wrong_name, &[]).await;
    assert_eq!(
        get(p2.local_addr("main").unwrap(), "/").await.status,
        502,
        "certificate name is verified"
    );
    p.shutdown().await;
    p2.shutdown().await;
}
