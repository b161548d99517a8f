//! `[stats]`: the director's counters as Prometheus text over HTTP, on a thread of its own.
//! `GET /metrics` (or `/`): the text; `GET /ready`: 200 once the cluster resync is over (or
//! always without `[sync]`), else 503. Anything else: 404; unreadable requests: 400.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Serves `metrics` (rendered by the director loop) on `listen`.
pub(crate) fn serve(listen: SocketAddr, metrics: Arc<Mutex<String>>) -> std::io::Result<()> {
    let l = TcpListener::bind(listen)?;
    tracing::info!("stats: http://{listen}/metrics");
    std::thread::Builder::new().name("stats".into()).spawn(move || {
        for conn in l.incoming().flatten() {
            let _ = answer(conn, &metrics);
        }
    })?;
    Ok(())
}

fn answer(mut c: TcpStream, metrics: &Mutex<String>) -> std::io::Result<()> {
    c.set_read_timeout(Some(Duration::from_secs(1)))?;
    let mut buf = [0u8; 2048];
    let mut n = 0;
    while n < buf.len() {
        let got = c.read(&mut buf[n..])?;
        if got == 0 {
            break;
        }
        n += got;
        if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let head = String::from_utf8_lossy(&buf[..n]);
    let mut words = head.split_whitespace();
    let (status, body) = match (words.next(), words.next()) {
        (Some("GET"), Some("/metrics" | "/")) => {
            ("200 OK", metrics.lock().map(|m| m.clone()).unwrap_or_default())
        }
        (Some("GET"), Some("/ready")) => {
            let text = metrics.lock().map(|m| m.clone()).unwrap_or_default();
            let not_ready = text.lines().any(|l| l == "slb_cluster_ready 0") || text.is_empty();
            if not_ready {
                ("503 Service Unavailable", "not ready\n".into())
            } else {
                ("200 OK", "ready\n".into())
            }
        }
        (Some(_), Some(_)) => ("404 Not Found", "not found\n".into()),
        _ => ("400 Bad Request", "bad request\n".into()),
    };
    write!(
        c,
        "HTTP/1.0 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}
