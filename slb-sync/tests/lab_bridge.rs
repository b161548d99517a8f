//! Lab test (root): three engines in three network namespaces joined by a Linux bridge, over
//! real UDP multicast (IPv4 224.0.0.81 on the bridge's segment) and over the unicast transport:
//! two nodes replicate, a third joins late and receives the whole table by resync, it then
//! replicates its own sessions to the others, and a node that stops is declared down by both
//! survivors. Every namespace is uniquely named and removed on drop, also when the test fails.
//! Without root: prints `LAB-SKIPPED: <test>` and passes.
#![allow(clippy::disallowed_methods, reason = "deadlines of a real-time lab test")]

mod common;

use std::fs::File;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use slb_sync::transport::{MulticastConfig, MulticastTransport, Transport, UnicastTransport};

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

fn skip(name: &str) -> bool {
    if is_root() {
        return false;
    }
    println!("LAB-SKIPPED: {name} (needs root for network namespaces)");
    true
}

fn ip(args: &[&str]) {
    let st = Command::new("ip").args(args).stdout(Stdio::null()).status().expect("ip");
    assert!(st.success(), "ip {}", args.join(" "));
}

/// Three node namespaces on a bridge (in a fourth namespace), removed on drop.
struct Segment {
    bridge: String,
    nodes: Vec<String>,
}

impl Segment {
    fn new(tag: &str) -> Segment {
        let nanos = std::time::SystemTime::UNIX_EPOCH.elapsed().map_or(0, |d| d.subsec_nanos());
        let base = format!("slbsync-{tag}-{}-{nanos}", std::process::id());
        let seg = Segment {
            bridge: format!("{base}-br"),
            nodes: (1..=3).map(|i| format!("{base}-n{i}")).collect(),
        };
        for ns in std::iter::once(&seg.bridge).chain(&seg.nodes) {
            ip(&["netns", "add", ns]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        ip(&["-n", &seg.bridge, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &seg.bridge, "link", "set", "br0", "up"]);
        for (i, ns) in seg.nodes.iter().enumerate() {
            let port = format!("p{}", i + 1);
            ip(&[
                "-n",
                &seg.bridge,
                "link",
                "add",
                &port,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                ns,
            ]);
            ip(&["-n", &seg.bridge, "link", "set", &port, "master", "br0"]);
            ip(&["-n", &seg.bridge, "link", "set", &port, "up"]);
            ip(&["-n", ns, "addr", "add", &format!("{}/24", Self::addr(i)), "dev", "eth0"]);
            ip(&["-n", ns, "link", "set", "eth0", "up"]);
        }
        seg
    }

    fn addr(i: usize) -> IpAddr {
        IpAddr::from([10, 77, 0, 1 + i as u8])
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        for ns in self.nodes.iter().chain(std::iter::once(&self.bridge)) {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Runs `f` on a thread inside namespace `ns`: the sockets it creates live there.
fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> io::Result<T> {
    let file = File::open(format!("/run/netns/{ns}"))?;
    std::thread::spawn(move || {
        // SAFETY: setns on a namespace fd we hold open changes only this thread's network
        // namespace; it reads no memory of ours.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(f())
    })
    .join()
    .map_err(|_| io::Error::other("namespace thread panicked"))?
}

/// Nodes 1 and 2 replicate; node 3 joins late and gets their table, then replicates its own;
/// node 2 stops and both others see it go down. `addr_of[i]` is where node `i + 1`'s datagrams
/// come from.
fn scenario<T: Transport>(mut transports: Vec<T>, addr_of: Vec<IpAddr>) {
    let t3 = transports.pop().unwrap();
    let n2 = NetNode::start(2, true, transports.pop().unwrap());
    let n1 = NetNode::start(1, true, transports.pop().unwrap());
    assert!(wait_until(Duration::from_secs(10), || n1.ready() && n2.ready()), "never ready");
    n1.originate(1, 0..400);
    n2.originate(2, 0..400);
    assert!(
        wait_until(Duration::from_secs(10), || n1.learned() == 400 && n2.learned() == 400),
        "no convergence across namespaces: {} {}",
        n1.learned(),
        n2.learned()
    );
    let n3 = NetNode::start(3, true, t3);
    assert!(wait_until(Duration::from_secs(10), || n3.ready()), "the joiner never ready");
    assert_eq!(n3.learned(), 800, "the joiner had the whole table when it became ready");
    n3.originate(3, 0..100);
    assert!(wait_until(Duration::from_secs(10), || n1.learned() == 500 && n2.learned() == 500));
    for (i, n) in [&n1, &n2, &n3].into_iter().enumerate() {
        let s = n.handle.status().expect("driver answers");
        assert_eq!(s.stats.rx_bad_mac + s.stats.rx_malformed + s.stats.rx_wrong_cluster, 0);
        assert_eq!(s.send_errors, 0);
        let mut peers: Vec<IpAddr> = s.peers.iter().map(|p| p.addr.ip()).collect();
        peers.sort();
        let want: Vec<IpAddr> =
            addr_of.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, a)| *a).collect();
        assert_eq!(peers, want, "node {}: peers heard from their own namespaces", i + 1);
    }
    assert!(n3.handle.status().unwrap().stats.resync_completed >= 2);
    n2.handle.shutdown();
    for n in [&n1, &n3] {
        assert!(
            wait_until(Duration::from_secs(5), || {
                n.handle.status().is_some_and(|s| {
                    s.peers.iter().any(|p| p.node.0 == 2 && !p.alive)
                        && s.peers.iter().filter(|p| p.alive).count() == 1
                })
            }),
            "node 2's silence is noticed"
        );
    }
}

#[test]
fn lab_bridge_multicast_three_namespaces() {
    if skip("lab_bridge_multicast_three_namespaces") {
        return;
    }
    let seg = Segment::new("mc");
    let transports: Vec<MulticastTransport> = (0..3)
        .map(|i| {
            let cfg = MulticastConfig {
                interface: Some(Segment::addr(i)),
                loopback: false,
                ..MulticastConfig::default()
            };
            in_netns(&seg.nodes[i], move || MulticastTransport::bind(&cfg))
                .expect("enter namespace")
                .expect("multicast socket")
        })
        .collect();
    scenario(transports, (0..3).map(Segment::addr).collect());
}

#[test]
fn lab_bridge_unicast_three_namespaces() {
    if skip("lab_bridge_unicast_three_namespaces") {
        return;
    }
    let seg = Segment::new("uc");
    let addr = |i: usize| SocketAddr::new(Segment::addr(i), 8848);
    let transports: Vec<UnicastTransport> = (0..3)
        .map(|i| {
            let peers: Vec<SocketAddr> = (0..3).filter(|&j| j != i).map(addr).collect();
            let me = addr(i);
            in_netns(&seg.nodes[i], move || UnicastTransport::bind(me, peers))
                .expect("enter namespace")
                .expect("unicast socket")
        })
        .collect();
    scenario(transports, (0..3).map(Segment::addr).collect());
}
