//! Lab test: three engines over real UDP multicast on loopback, IPv4 and IPv6.
//!
//! As root, each test re-runs itself inside a fresh network namespace (unique name, removed on
//! drop, the child killed by PID if it overruns). Without root it tries the current namespace's
//! loopback and, if multicast does not work there, prints `LAB-SKIPPED: <test>` and passes.
#![allow(clippy::disallowed_methods, reason = "deadlines of a real-time lab test")]

mod common;

use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use slb_sync::Destination;
use slb_sync::transport::{MulticastConfig, MulticastTransport, Transport};

const INNER: &str = "SLB_SYNC_LAB_INNER";

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A network namespace removed on drop.
struct Netns(String);

impl Netns {
    fn create(tag: &str) -> Netns {
        let nanos = std::time::SystemTime::UNIX_EPOCH.elapsed().map_or(0, |d| d.subsec_nanos());
        let name = format!("slbsync-{tag}-{}-{nanos}", std::process::id());
        assert!(ip(&["netns", "add", &name]), "ip netns add {name}");
        let ns = Netns(name);
        assert!(ip(&["-n", &ns.0, "link", "set", "lo", "up"]));
        // IPv6 multicast does not loop back on `lo` (the kernel leaves looping to the device,
        // and lo drops it): IPv6 runs over a veth pair inside the namespace instead.
        assert!(ip(&["-n", &ns.0, "link", "add", "sv0", "type", "veth", "peer", "name", "sv1"]));
        assert!(ip(&["-n", &ns.0, "link", "set", "sv0", "up"]));
        assert!(ip(&["-n", &ns.0, "link", "set", "sv1", "up"]));
        assert!(ip(&["-n", &ns.0, "addr", "add", "fd00:5:1::1/64", "dev", "sv0", "nodad"]));
        ns
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        ip(&["netns", "del", &self.0]);
    }
}

/// A child process killed (by PID) and reaped on drop.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs test `name` of this binary inside a fresh namespace; panics if it fails.
fn run_in_netns(name: &str) {
    let ns = Netns::create(name.rsplit('_').next().unwrap_or("t"));
    let exe = std::env::current_exe().unwrap();
    let child = Command::new("ip")
        .args(["netns", "exec", &ns.0])
        .arg(exe)
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(INNER, "1")
        .spawn()
        .expect("spawn ip netns exec");
    let mut guard = ChildGuard(child);
    let end = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(s) = guard.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < end, "{name} overran in namespace {}", ns.0);
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{name} failed inside namespace {}", ns.0);
}

fn in_lab_netns() -> bool {
    std::env::var_os(INNER).is_some()
}

fn mcfg(group: IpAddr, port: u16, interface: Option<IpAddr>, ifindex: u32) -> MulticastConfig {
    MulticastConfig { group, port, interface, ifindex, ..MulticastConfig::default() }
}

/// Whether a datagram sent to the group comes back on this host.
fn multicast_works(cfg: &MulticastConfig) -> bool {
    let Ok(t) = MulticastTransport::bind(cfg) else { return false };
    let Ok(socks) = t.receivers() else { return false };
    let _ = socks[0].set_read_timeout(Some(Duration::from_millis(300)));
    let mut buf = [0u8; 64];
    (0..3).any(|_| {
        t.send(&Destination::Group, b"probe").is_ok() && socks[0].recv_from(&mut buf).is_ok()
    })
}

/// Decides where the test runs: `Some(port)` to run here, `None` when handled elsewhere.
fn placement(name: &str, cfg_for: impl Fn(u16) -> MulticastConfig) -> Option<u16> {
    if in_lab_netns() {
        return Some(8848);
    }
    if is_root() {
        run_in_netns(name);
        return None;
    }
    let port = 20_000 + (std::process::id() % 20_000) as u16;
    if multicast_works(&cfg_for(port)) {
        Some(port)
    } else {
        println!("LAB-SKIPPED: {name} (not root and multicast does not loop back here)");
        None
    }
}

/// Nodes 1 and 2 start, replicate, then node 3 joins late and must get the table.
fn three_engines(cfg: MulticastConfig) {
    let t = || MulticastTransport::bind(&cfg).expect("multicast socket");
    let (t1, t2, t3) = (t(), t(), t());
    let src: Vec<SocketAddr> = [&t1, &t2, &t3].iter().map(|t| t.local_addr().unwrap()).collect();
    let n1 = NetNode::start(1, true, t1);
    let n2 = NetNode::start(2, true, t2);
    assert!(wait_until(Duration::from_secs(10), || n1.ready() && n2.ready()));
    n1.originate(1, 0..500);
    n2.originate(2, 0..500);
    assert!(
        wait_until(Duration::from_secs(10), || n1.learned() == 500 && n2.learned() == 500),
        "no convergence over multicast: {} {}",
        n1.learned(),
        n2.learned()
    );
    let n3 = NetNode::start(3, true, t3);
    assert!(wait_until(Duration::from_secs(10), || n3.ready()));
    assert_eq!(n3.learned(), 1000);
    n3.originate(3, 0..200);
    assert!(wait_until(Duration::from_secs(10), || n1.learned() == 700 && n2.learned() == 700));
    for (i, n) in [&n1, &n2, &n3].into_iter().enumerate() {
        let s = n.handle.status().unwrap();
        assert!(s.stats.rx_own > 0, "multicast loopback: a node hears (and drops) itself");
        assert_eq!(s.stats.rx_bad_mac + s.stats.rx_malformed, 0);
        assert_eq!(s.send_errors, 0);
        let peers: Vec<SocketAddr> = s.peers.iter().map(|p| p.addr).collect();
        let want: Vec<SocketAddr> =
            src.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, a)| *a).collect();
        assert_eq!(peers, want, "peers are known by their unicast source addresses");
    }
}

#[test]
fn lab_multicast_ipv4_three_engines_on_loopback() {
    let cfg =
        |port| mcfg("224.0.0.81".parse().unwrap(), port, Some("127.0.0.1".parse().unwrap()), 0);
    if let Some(port) = placement("lab_multicast_ipv4_three_engines_on_loopback", cfg) {
        three_engines(cfg(port));
    }
}

#[test]
fn lab_multicast_ipv6_three_engines_on_loopback() {
    // ff02::/16 is link-local, scoped to an interface: the namespace's veth, or (not root) lo.
    let (src, ifindex) = match std::fs::read_to_string("/sys/class/net/sv0/ifindex") {
        Ok(i) if in_lab_netns() => ("fd00:5:1::1", i.trim().parse().unwrap()),
        _ => ("::1", 1),
    };
    let cfg = |port| mcfg("ff02::81".parse().unwrap(), port, Some(src.parse().unwrap()), ifindex);
    if let Some(port) = placement("lab_multicast_ipv6_three_engines_on_loopback", cfg) {
        three_engines(cfg(port));
    }
}
