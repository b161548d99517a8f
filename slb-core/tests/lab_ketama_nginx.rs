//! Ketama against the real thing: a local nginx with `hash $arg_k consistent` and our [`Ketama`]
//! must send every key to the same server, with weights and with a server marked `down`.
//!
//! Loopback only, no root needed; prints `LAB-SKIPPED: ...` and passes when nginx is missing.
//! nginx runs in the foreground as a single process (`master_process off`), is killed by PID
//! when the test ends (a Drop guard, also on failure), and its files live in a private temp dir.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use slb_core::backend::{
    Backend, BackendId, BackendSet, BackendState, RuntimeRegistry, SetOptions,
};
use slb_core::flow::HashKey;
use slb_core::sched::{Ketama, PickContext, Scheduler};

const WEIGHTS: [u32; 5] = [1, 2, 1, 3, 1];
const DOWN: usize = 2;

struct Nginx {
    child: Child,
    dir: PathBuf,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> =
        (0..n).map(|_| TcpListener::bind("127.0.0.1:0").expect("bind")).collect();
    listeners.iter().map(|l| l.local_addr().expect("addr").port()).collect()
}

fn config(dir: &std::path::Path, proxy: u16, down_proxy: u16, servers: &[u16]) -> String {
    let upstream = |name: &str, down: Option<usize>| {
        let lines: String = servers
            .iter()
            .zip(WEIGHTS)
            .enumerate()
            .map(|(i, (p, w))| {
                let d = if Some(i) == down { " down" } else { "" };
                format!("    server 127.0.0.1:{p} weight={w}{d};\n")
            })
            .collect();
        format!("  upstream {name} {{\n    hash $arg_k consistent;\n{lines}  }}\n")
    };
    let backends: String = servers
        .iter()
        .map(|p| format!("  server {{ listen 127.0.0.1:{p}; return 200 \"{p}\"; }}\n"))
        .collect();
    let d = dir.display();
    format!(
        "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}; proxy_temp_path {d};\n  \
         fastcgi_temp_path {d}; uwsgi_temp_path {d}; scgi_temp_path {d};\n{}{}\
           server {{ listen 127.0.0.1:{proxy}; location / {{ proxy_pass http://pool; }} }}\n  \
         server {{ listen 127.0.0.1:{down_proxy}; location / {{ proxy_pass http://pool_down; }} }}\n\
         {backends}}}\n",
        upstream("pool", None),
        upstream("pool_down", Some(DOWN)),
    )
}

fn get(port: u16, key: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to nginx");
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    write!(s, "GET /?k={key} HTTP/1.0\r\nHost: t\r\n\r\n").expect("send");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read");
    let (head, body) = resp.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_owned()
}

/// Waits until nginx accepts connections on `port`, with a deadline.
#[allow(clippy::disallowed_methods)] // a test driver waiting on a real process reads the clock
fn wait_ready(n: &mut Nginx, port: u16) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = n.child.try_wait() {
            let log = std::fs::read_to_string(n.dir.join("error.log")).unwrap_or_default();
            panic!("nginx exited with {status}: {log}");
        }
        assert!(std::time::Instant::now() < deadline, "nginx not listening after 10 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn ketama(servers: &[u16], down: Option<usize>) -> Ketama {
    let list = servers
        .iter()
        .zip(WEIGHTS)
        .enumerate()
        .map(|(i, (&p, w))| {
            let b = Backend::new(BackendId(i as u32), SocketAddr::from(([127, 0, 0, 1], p)));
            let state = if Some(i) == down { BackendState::Down } else { BackendState::Up };
            b.with_weight(w).with_state(state)
        })
        .collect();
    let set = BackendSet::new(list, &RuntimeRegistry::new(), SetOptions::default()).unwrap();
    Ketama::new(set, HashKey::default())
}

#[test]
fn ketama_matches_real_nginx() {
    if Command::new("nginx").arg("-v").stderr(Stdio::null()).status().is_err() {
        println!("LAB-SKIPPED: ketama_matches_real_nginx (nginx is not installed)");
        return;
    }
    let ports = free_ports(2 + WEIGHTS.len());
    let (proxy, down_proxy, servers) = (ports[0], ports[1], &ports[2..]);
    let dir = std::env::temp_dir().join(format!("slb-ketama-nginx-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, config(&dir, proxy, down_proxy, servers)).expect("write config");
    let child = Command::new("nginx")
        .arg("-p")
        .arg(&dir)
        .arg("-e")
        .arg(dir.join("error.log"))
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nginx");
    let mut nginx = Nginx { child, dir };
    wait_ready(&mut nginx, proxy);
    wait_ready(&mut nginx, down_proxy);

    let (all, with_down) = (ketama(servers, None), ketama(servers, Some(DOWN)));
    let port_of = |k: &Ketama, key: &str| {
        let ctx = PickContext::with_hash(Ketama::key_hash(key.as_bytes()));
        k.pick(&ctx).unwrap().backend.addr.port().to_string()
    };
    let mut seen = std::collections::HashSet::new();
    for i in 0..400 {
        let key = format!("user{}x{}", i, i * 7919 % 1000);
        let want = get(proxy, &key);
        assert_eq!(port_of(&all, &key), want, "key {key}");
        seen.insert(want);
        let want_down = get(down_proxy, &key);
        assert_ne!(want_down, servers[DOWN].to_string());
        assert_eq!(port_of(&with_down, &key), want_down, "key {key} with a down server");
    }
    assert_eq!(seen.len(), WEIGHTS.len(), "every server got keys: {seen:?}");
}
