//! The proxy's life as a process, over real sockets and real processes: graceful shutdown
//! (refuses new connections, closes idle ones, lets the request in flight finish, gives up at
//! the deadline); SIGHUP reloads (a good file applied under load, a bad one refused while the
//! old configuration serves); a zero-downtime upgrade to a second process that takes the
//! listening sockets over SCM_RIGHTS under a steady load, with zero failed requests and zero
//! refused connections.
//!
//! The proxy processes are this test binary run again with only `child_proxy` selected and
//! `SLB_L7_TEST_CHILD` naming the configuration file: `child_proxy` then runs
//! `slb_l7::process::run` (what the `l7_proxy` example runs) and prints `READY` and `ENDED`
//! lines. Every child is killed by its PID when a test ends, even on failure.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use parking_lot::Mutex;
use slb_l7::config::Config;
use slb_l7::process::{Options, run};
use tokio::net::TcpStream;

const CHILD_ENV: &str = "SLB_L7_TEST_CHILD";
const TAKE_OVER_ENV: &str = "SLB_L7_TEST_TAKE_OVER";

/// A proxy process (only when started by the tests below with `SLB_L7_TEST_CHILD` set).
#[test]
fn child_proxy() {
    let Ok(path) = std::env::var(CHILD_ENV) else { return };
    // The parent holds our stdin open: if it dies without killing us, we end too.
    std::thread::spawn(|| {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        std::process::exit(3);
    });
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter("info")
        .init();
    let config = Config::from_file(&path).unwrap();
    let take_over = std::env::var_os(TAKE_OVER_ENV).is_some();
    let opts =
        Options { config, config_path: Some(path.into()), workers: 2, take_over, overrides: None };
    let ended = run(opts, |w| {
        let admin = w.admin_addr().map(|a| a.to_string()).unwrap_or_default();
        println!("READY {} {admin}", w.local_addr("main").unwrap());
    })
    .unwrap();
    println!("ENDED {ended:?}");
}

/// A child proxy process: its output lines (stdout and stderr), killed on drop.
struct ChildProxy {
    child: std::process::Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl ChildProxy {
    fn spawn(config: &Path, take_over: bool) -> ChildProxy {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args(["--exact", "child_proxy", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, config)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if take_over {
            cmd.env(TAKE_OVER_ENV, "1");
        }
        let mut child = cmd.spawn().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        for r in [Box::new(out) as Box<dyn std::io::Read + Send>, Box::new(err)] {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for l in BufReader::new(r).lines().map_while(Result::ok) {
                    lines.lock().push(l);
                }
            });
        }
        ChildProxy { child, lines }
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    fn output(&self) -> String {
        self.lines.lock().join("\n")
    }

    /// Waits (20 s at most) for a line containing `what`; returns it.
    async fn line(&self, what: &str) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(l) = self.lines.lock().iter().find(|l| l.contains(what)) {
                return l.clone();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no line with {what:?} from the child; its output:\n{}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits (20 s at most) until `n` lines contain `what`.
    async fn lines_with(&self, what: &str, n: usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while self.lines.lock().iter().filter(|l| l.contains(what)).count() < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "fewer than {n} lines with {what:?} from the child; its output:\n{}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The listener and admin addresses from the READY line.
    async fn ready(&self) -> (SocketAddr, SocketAddr) {
        let l = self.line("READY ").await;
        // The test harness may have written "test child_proxy ... " on the same line.
        let at = l.find("READY ").unwrap() + "READY ".len();
        let mut parts = l[at..].split(' ');
        (parts.next().unwrap().parse().unwrap(), parts.next().unwrap().parse().unwrap())
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill").args([sig, &self.pid()]).status().unwrap().success();
        assert!(ok, "kill {sig} {}", self.pid());
    }

    /// Waits (20 s at most) for the process to exit; true if it exited with success.
    async fn exited(&mut self) -> bool {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.success();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the child did not exit; its output:\n{}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for ChildProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config(backends: &[SocketAddr], dir: &TempDir) -> String {
    let list: Vec<String> = backends.iter().map(|b| format!("\"{b}\"")).collect();
    format!(
        r#"
default_pool = "app"
[server]
upgrade_socket = "{}"
drain_timeout = "10s"
[timeouts]
# Idle keep-alive connections of a draining process wait for one more request (the test load
# sends one every few milliseconds), so no request ever meets a closed connection.
drain_idle = "60s"
[[listeners]]
address = "127.0.0.1:0"
[admin]
address = "127.0.0.1:0"
[pools.app]
backends = [{}]
sticky = {{ type = "cookie" }}
"#,
        dir.path("upgrade.sock").display(),
        list.join(", ")
    )
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_to_a_second_process_under_load_fails_and_refuses_nothing() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let dir = TempDir::new("upgrade");
    let path = dir.path("l7.toml");
    std::fs::write(&path, config(&[a.addr, b.addr], &dir)).unwrap();
    let mut old = ChildProxy::spawn(&path, false);
    let (addr, admin_addr) = old.ready().await;
    let first = get(addr, "/").await;
    let cookie = first.header("set-cookie").unwrap().split(';').next().unwrap().to_owned();
    let owner = first.header("x-backend").unwrap().to_owned();

    let load = Load::start(addr, 4, Duration::from_millis(2), 50_000, Duration::from_secs(60));
    progress(&[&a, &b], 20).await;

    let mut new = ChildProxy::spawn(&path, true);
    let (new_addr, new_admin) = new.ready().await;
    // The same port although the configuration says port 0: the sockets were handed over.
    assert_eq!((new_addr, new_admin), (addr, admin_addr));
    old.line("ENDED Upgraded").await;
    assert!(old.exited().await, "the old process failed:\n{}", old.output());
    progress(&[&a, &b], 20).await;

    // The new process knows the old one's cookies (the key travelled along): no new cookie.
    let r = get_with(addr, "/sticky", &format!("Cookie: {cookie}\r\n")).await;
    assert_eq!(r.header("x-backend"), Some(owner.as_str()));
    assert_eq!(r.header("set-cookie"), None, "the cookie was not recognised");
    let pools = admin(admin_addr, "GET", "/pools", "").await;
    assert_eq!(pools.status, 200);

    let rep = load.finish().await;
    assert_eq!((rep.failed, rep.refused, rep.retried_idle), (0, 0, 0), "{rep:?}");
    assert!(rep.ok >= 100, "{rep:?}");

    // And it can be upgraded again, then stops on SIGTERM.
    let mut third = ChildProxy::spawn(&path, true);
    assert_eq!(third.ready().await.0, addr);
    new.line("ENDED Upgraded").await;
    assert!(new.exited().await);
    assert_eq!(get(addr, "/again").await.status, 200);
    third.signal("-TERM");
    third.line("ENDED Signal").await;
    assert!(third.exited().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_upgrade_leaves_the_old_process_serving() {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    let a = Backend::start("a").await;
    let dir = TempDir::new("upgrade-fail");
    let path = dir.path("l7.toml");
    std::fs::write(&path, config(&[a.addr], &dir)).unwrap();
    let mut old = ChildProxy::spawn(&path, false);
    let (addr, _) = old.ready().await;
    let load = Load::start(addr, 2, Duration::from_millis(2), 50_000, Duration::from_secs(60));
    progress(&[&a], 10).await;
    let exchange = |hello: &[u8]| {
        let mut s = UnixStream::connect(dir.path("upgrade.sock")).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(hello).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        // Read what the old process sends (the manifest; the descriptors are discarded), and
        // hang up without READY, as a new process that crashed would.
        if let Ok(n) = s.read(&mut buf) {
            got.extend_from_slice(&buf[..n]);
        }
        got
    };
    // Not an upgrade request at all.
    assert!(exchange(b"GET / HTTP/1.1\r\n\r\n").is_empty());
    old.lines_with("upgrade attempt failed", 1).await;
    // A "new process" that gets the sockets and dies before it serves.
    let manifest = String::from_utf8_lossy(&exchange(b"SLB-UPGRADE 1\n")).into_owned();
    assert!(
        manifest.starts_with("SLB-SOCKETS 1\n") && manifest.contains("listener:main"),
        "{manifest}"
    );
    old.lines_with("upgrade attempt failed", 2).await;
    progress(&[&a], 20).await;
    assert_eq!(get(addr, "/still").await.status, 200);

    // The next, real, upgrade works.
    let new = ChildProxy::spawn(&path, true);
    assert_eq!(new.ready().await.0, addr);
    old.line("ENDED Upgraded").await;
    assert!(old.exited().await);
    progress(&[&a], 20).await;
    let rep = load.finish().await;
    assert_eq!((rep.failed, rep.refused, rep.retried_idle), (0, 0, 0), "{rep:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_file_and_a_bad_one_leaves_the_old_serving() {
    let (a, b, c) =
        (Backend::start("a").await, Backend::start("b").await, Backend::start("c").await);
    let dir = TempDir::new("sighup");
    let path = dir.path("l7.toml");
    std::fs::write(&path, config(&[a.addr, b.addr], &dir)).unwrap();
    let proxy = ChildProxy::spawn(&path, false);
    let (addr, admin_addr) = proxy.ready().await;
    let load = Load::start(addr, 4, Duration::from_millis(2), 50_000, Duration::from_secs(60));
    progress(&[&a, &b], 10).await;

    std::fs::write(&path, config(&[a.addr, b.addr, c.addr], &dir)).unwrap();
    proxy.signal("-HUP");
    proxy.line("reloaded on SIGHUP").await;
    progress(&[&a, &b, &c], 10).await;

    std::fs::write(&path, config(&[a.addr], &dir).replace("[pools.app]", "[pools.app")).unwrap();
    proxy.signal("-HUP");
    let refused = proxy.line("reload refused").await;
    assert!(refused.contains("line"), "the error names the line: {refused}");
    let pools = admin(admin_addr, "GET", "/pools/app", "").await.text();
    for x in [a.addr, b.addr, c.addr] {
        assert!(pools.contains(&x.to_string()), "{pools}");
    }
    progress(&[&a, &b, &c], 10).await;

    let rep = load.finish().await;
    assert_eq!((rep.failed, rep.refused, rep.retried_idle), (0, 0, 0), "{rep:?}");
    proxy.signal("-TERM");
    proxy.line("ENDED Signal").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_refuses_new_connections_and_finishes_the_request_in_flight() {
    let a = Backend::start("a").await;
    let p = proxy(
        "default_pool = \"app\"\n[[listeners]]\naddress = \"127.0.0.1:0\"\n[pools.app]\nbackends = [\"{b0}\"]\n",
        &[&a],
    )
    .await;
    let addr = p.local_addr("main").unwrap();
    // An idle keep-alive connection, and a request the backend holds.
    let mut idle = RawClient::connect(addr).await;
    idle.send(b"GET /idle HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert_eq!(idle.response(false).await.unwrap().status, 200);
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    a.set(Behavior::Hold(gate.clone()));
    let mut busy = RawClient::connect(addr).await;
    busy.send(b"GET /busy HTTP/1.1\r\nHost: t\r\n\r\n").await;
    eventually("the held request reaches the backend", || a.count() == 2).await;

    let handle = p.handle();
    let shutdown = tokio::spawn(p.shutdown_graceful(Duration::from_secs(30)));
    eventually_async("new connections are refused", Duration::from_secs(10), || async {
        TcpStream::connect(addr).await.is_err()
    })
    .await;
    assert!(idle.closed().await, "the idle connection is closed");
    eventually("only the request in flight keeps its connection", || handle.connections() == 1)
        .await;
    gate.add_permits(1);
    let r = busy.response(false).await.expect("the request in flight gets its response");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("connection"), Some("close"));
    assert_eq!(shutdown.await.unwrap(), 0, "nothing left open at the end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_gives_up_at_the_deadline() {
    let a = Backend::start("a").await;
    let p = proxy(
        "default_pool = \"app\"\n[[listeners]]\naddress = \"127.0.0.1:0\"\n[pools.app]\nbackends = [\"{b0}\"]\n",
        &[&a],
    )
    .await;
    let addr = p.local_addr("main").unwrap();
    a.set(Behavior::Hold(Arc::new(tokio::sync::Semaphore::new(0))));
    let mut busy = RawClient::connect(addr).await;
    busy.send(b"GET /never HTTP/1.1\r\nHost: t\r\n\r\n").await;
    eventually("the held request reaches the backend", || a.count() == 1).await;
    assert_eq!(p.shutdown_graceful(Duration::from_millis(200)).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_on_an_idle_connection_as_the_drain_begins_is_served_and_closed() {
    let a = Backend::start("a").await;
    // A long drain_idle, so that the test does not race it.
    let p = proxy(
        "default_pool = \"app\"\n[[listeners]]\naddress = \"127.0.0.1:0\"\n[timeouts]\ndrain_idle = \"60s\"\n[pools.app]\nbackends = [\"{b0}\"]\n",
        &[&a],
    )
    .await;
    let addr = p.local_addr("main").unwrap();
    let mut clients = Vec::new();
    for i in 0..3 {
        let mut c = RawClient::connect(addr).await;
        c.send(format!("GET /first/{i} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes()).await;
        let r = c.response(false).await.unwrap();
        assert_eq!((r.status, r.header("connection")), (200, None), "kept alive");
        clients.push(c);
    }
    let shutdown = tokio::spawn(p.shutdown_graceful(Duration::from_secs(60)));
    eventually_async("new connections are refused", Duration::from_secs(10), || async {
        TcpStream::connect(addr).await.is_err()
    })
    .await;
    // Each idle keep-alive connection still gets its next request answered, as the last one.
    for (i, c) in clients.iter_mut().enumerate() {
        c.send(format!("GET /second/{i} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes()).await;
        let r = c.response(false).await.expect("answered, not cut off");
        assert_eq!((r.status, r.header("connection")), (200, Some("close")));
        assert!(c.closed().await);
    }
    // With every connection closed the drain ends well before its deadline.
    assert_eq!(shutdown.await.unwrap(), 0);
}
