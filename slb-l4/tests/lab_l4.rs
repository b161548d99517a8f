//! Root-only lab: the director (Forwarder + real AF_PACKET links, in-process, inside its own
//! network namespace) between real kernel TCP/UDP peers in network namespaces: curl to nginx,
//! a 20 MB byte-exact download and UDP, in NAT, FULLNAT (the server's capture of the SYN and
//! handshake ACK carries the client address in TOA) and DR, with the pnet link and the batched
//! link (recvmmsg/sendmmsg, and with a TPACKET_V3 receive ring) and the AF_XDP link; and a real server killed: new connections go to the other within the health check's
//! fall time. Skips with `LAB-SKIPPED: <name>` when not root.
//!
//! ```text
//!  NAT / FULLNAT:  c 10.0.1.2 --- lb (lb-c 10.0.1.1 | lb-s 10.0.2.1) --- sw bridge --- s1 10.0.2.11
//!                                                                                  \-- s2 10.0.2.12
//!  DR:             c 10.0.1.2 --- r (10.0.1.1 | 10.0.2.254) --- sw bridge --- lb 10.0.2.1 (one port)
//!                                                                 \-- s1, s2 (VIP on lo, via r)
//! ```
// A lab test drives real processes in real time: it reads the clock like any driver.
#![allow(clippy::disallowed_methods)]

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use slb_core::flow::Protocol;
use slb_core::health::{HealthConfig, HealthStatus};
use slb_core::rng::SplitMix64;
use slb_core::sched::{SchedulerConfig, SchedulerKind};
use slb_core::time::Clock;
use slb_l4::driver::{BoxLink, Director, DriverConfig, interface_info};
use slb_l4::frame::FrameBuf;
use slb_l4::fwd::{Forwarder, ForwarderConfig, Mode, PortConfig, ServiceConfig, UnknownCsum};
use slb_l4::health::{Monitor, TcpConnectProbe, spawn_prober};
use slb_l4::lab::{Lab, Netns, in_addr_errors, in_netns, skip_unless_root, wait_until};
use slb_l4::link::{
    AfPacketLink, FlowOffload, Link, LinkStats, OffloadConfig, OffloadStats, PnetLink,
    TransitFilter, XdpConfig, XdpLink,
};
use slb_l4::wire::{self, Kind};

const VIP: &str = "10.0.0.100";
const BIG: usize = 20 << 20;
const LINKS: [LinkKind; 5] =
    [LinkKind::Pnet, LinkKind::Batched, LinkKind::Ring, LinkKind::Xdp, LinkKind::XdpOffload];

#[derive(Clone, Copy, Debug, PartialEq)]
enum LinkKind {
    Pnet,
    Batched,
    Ring,
    Xdp,
    /// The AF_XDP link in generic mode with the XDP flow cache.
    XdpOffload,
}

fn open(kind: LinkKind, ifname: &str, cache: Option<&FlowOffload>) -> BoxLink {
    match kind {
        LinkKind::Pnet => Box::new(PnetLink::open(ifname, 4 << 20).expect("pnet link")),
        LinkKind::Batched => {
            Box::new(AfPacketLink::open(ifname, 64, 4 << 20).expect("batched link"))
        }
        LinkKind::Ring => {
            Box::new(AfPacketLink::open_ring(ifname, 64, 4 << 20, 4 << 20).expect("ring link"))
        }
        LinkKind::Xdp => Box::new(XdpLink::open(ifname, &XdpConfig::default()).expect("xdp link")),
        LinkKind::XdpOffload => {
            let cfg = XdpConfig { generic: true, offload: cache.cloned(), ..XdpConfig::default() };
            Box::new(XdpLink::open(ifname, &cfg).expect("xdp link with offload"))
        }
    }
}

/// Stops in-process threads (director, UDP echo, capture) on drop, also when a test fails.
struct Threads {
    stop: Arc<AtomicBool>,
    handles: Vec<JoinHandle<()>>,
}

impl Drop for Threads {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

struct World {
    // Dropped first: in-process threads stop before the namespaces go.
    threads: Threads,
    lab: Lab,
    c: Netns,
    lb: Netns,
    servers: Vec<Netns>,
    nginx: Vec<slb_l4::lab::Proc>,
    dir: PathBuf,
    /// The director's link and flow cache counters, stored when its loop ends.
    link_stats: Arc<std::sync::Mutex<Stats>>,
}

type Stats = (Vec<LinkStats>, Option<OffloadStats>);

fn work_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("slb-lab-l4-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn big_file(dir: &Path) -> Vec<u8> {
    let data = SplitMix64::new(0x9e37_79b9_7f4a_7c15).bytes(BIG);
    std::fs::write(dir.join("big"), &data).unwrap();
    data
}

/// nginx serving `id` (the server's name) and `big`, in `ns`.
fn start_nginx(lab: &mut Lab, ns: &Netns, dir: &Path, name: &str) -> slb_l4::lab::Proc {
    let d = dir.join(name);
    std::fs::create_dir_all(d.join("www")).unwrap();
    std::fs::create_dir_all(d.join("tmp")).unwrap();
    std::fs::write(d.join("www/id"), name).unwrap();
    std::fs::hard_link(dir.join("big"), d.join("www/big")).unwrap();
    let conf = format!(
        "daemon off; worker_processes 1; pid {p}/nginx.pid; error_log {p}/error.log;\n\
         events {{ worker_connections 256; }}\n\
         http {{ access_log off; client_body_temp_path {p}/tmp; proxy_temp_path {p}/tmp;\n\
           fastcgi_temp_path {p}/tmp; uwsgi_temp_path {p}/tmp; scgi_temp_path {p}/tmp;\n\
           server {{ listen 80; root {p}/www; }} }}\n",
        p = d.display()
    );
    std::fs::write(d.join("nginx.conf"), conf).unwrap();
    let conf_path = d.join("nginx.conf");
    let p = lab
        .spawn(ns, &["nginx", "-c", conf_path.to_str().unwrap()], Some(&d.join("nginx.log")))
        .unwrap();
    let ns2 = ns.clone();
    assert!(
        wait_until(Duration::from_secs(10), || {
            lab.exec(&ns2, &["sh", "-c", "ss -ltn | grep -q ':80 '"]).is_ok()
        }),
        "nginx in {} listening",
        ns.name()
    );
    p
}

/// A UDP echo on `bind` in `ns` answering `<payload>|<name>`. (In DR it binds the VIP, as DR
/// UDP servers must: a wildcard socket would answer from the server's own address.)
fn udp_echo(
    ns: &Netns,
    bind: &'static str,
    name: &'static str,
    stop: Arc<AtomicBool>,
) -> JoinHandle<()> {
    in_netns(ns.name(), move || {
        let s = UdpSocket::bind(bind).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !stop.load(Ordering::Relaxed) {
                if let Ok((n, from)) = s.recv_from(&mut buf) {
                    let mut reply = buf[..n].to_vec();
                    reply.extend_from_slice(b"|");
                    reply.extend_from_slice(name.as_bytes());
                    let _ = s.send_to(&reply, from);
                }
            }
        })
    })
    .unwrap()
}

/// Builds the lab for `mode` and starts the director with `link` links (and health probes of
/// the servers' port 80 when `health` is set).
fn world(mode: Mode, link: LinkKind, health: Option<HealthConfig>) -> World {
    let tag = format!("{mode:?}{link:?}").to_lowercase();
    let mut lab = Lab::new(&tag[..tag.len().min(8)]).unwrap();
    // The two tests run at once and may build the same mode and link: separate directories.
    let dir = work_dir(&format!("{tag}{}", if health.is_some() { "-health" } else { "" }));
    let c = lab.netns("c").unwrap();
    let lb = lab.netns("lb").unwrap();
    let sw = lab.netns("sw").unwrap();
    let s1 = lab.netns("s1").unwrap();
    let s2 = lab.netns("s2").unwrap();
    lab.bridge(&sw, "br0").unwrap();
    let dr = mode == Mode::Dr;
    if dr {
        let r = lab.netns("r").unwrap();
        lab.veth((&c, "eth0", Some("10.0.1.2/24")), (&r, "r-c", Some("10.0.1.1/24"))).unwrap();
        lab.veth((&r, "r-s", Some("10.0.2.254/24")), (&sw, "p-r", None)).unwrap();
        lab.attach(&sw, "p-r", "br0").unwrap();
        lab.veth((&lb, "lb-s", Some("10.0.2.1/24")), (&sw, "p-lb", None)).unwrap();
        lab.sysctl(&r, "net.ipv4.ip_forward=1").unwrap();
        lab.ip(&r, &["route", "add", "10.0.0.100/32", "via", "10.0.2.1"]).unwrap();
        for (ns, i) in [(&r, "r-c"), (&r, "r-s")] {
            lab.no_offloads(ns, i).unwrap();
        }
    } else {
        lab.veth((&c, "eth0", Some("10.0.1.2/24")), (&lb, "lb-c", Some("10.0.1.1/24"))).unwrap();
        lab.veth((&lb, "lb-s", Some("10.0.2.1/24")), (&sw, "p-lb", None)).unwrap();
        lab.no_offloads(&lb, "lb-c").unwrap();
    }
    lab.attach(&sw, "p-lb", "br0").unwrap();
    lab.no_offloads(&lb, "lb-s").unwrap();
    lab.no_offloads(&c, "eth0").unwrap();
    lab.ip(&c, &["route", "add", "default", "via", "10.0.1.1"]).unwrap();
    for (ns, addr, port) in [(&s1, "10.0.2.11/24", "p-s1"), (&s2, "10.0.2.12/24", "p-s2")] {
        lab.veth((ns, "eth0", Some(addr)), (&sw, port, None)).unwrap();
        lab.attach(&sw, port, "br0").unwrap();
        lab.no_offloads(ns, "eth0").unwrap();
        if dr {
            lab.ip(ns, &["addr", "add", "10.0.0.100/32", "dev", "lo"]).unwrap();
            lab.sysctl(ns, "net.ipv4.conf.all.arp_ignore=1").unwrap();
            lab.sysctl(ns, "net.ipv4.conf.all.arp_announce=2").unwrap();
            lab.ip(ns, &["route", "add", "default", "via", "10.0.2.254"]).unwrap();
        } else {
            lab.ip(ns, &["route", "add", "default", "via", "10.0.2.1"]).unwrap();
        }
    }
    big_file(&dir);
    let nginx =
        vec![start_nginx(&mut lab, &s1, &dir, "s1"), start_nginx(&mut lab, &s2, &dir, "s2")];
    let stop = Arc::new(AtomicBool::new(false));
    let bind = if dr { "10.0.0.100:53" } else { "0.0.0.0:53" };
    let mut handles = vec![
        udp_echo(&s1, bind, "s1", Arc::clone(&stop)),
        udp_echo(&s2, bind, "s2", Arc::clone(&stop)),
    ];
    let ports: Vec<&'static str> = if dr { vec!["lb-s"] } else { vec!["lb-c", "lb-s"] };
    let stop2 = Arc::clone(&stop);
    let link_stats = Arc::new(std::sync::Mutex::new((Vec::new(), None)));
    let stats_out = Arc::clone(&link_stats);
    let director = in_netns(lb.name(), move || {
        let offload = link == LinkKind::XdpOffload;
        // The lab's veths have checksum offloads off: complete sums, which the cache needs.
        let unknown_csum =
            if offload { UnknownCsum::AssumeComplete } else { UnknownCsum::default() };
        let mut fwd =
            Forwarder::new(ForwarderConfig { unknown_csum, ..ForwarderConfig::default() });
        let cache = offload.then(|| FlowOffload::new(4096).expect("flow cache"));
        let mut links = Vec::new();
        for p in &ports {
            let (mac, addrs) = interface_info(p).unwrap();
            let mut pc = PortConfig::new(mac);
            pc.addrs = addrs.into_iter().filter(|a| a.addr.is_ipv4()).collect();
            fwd.add_port(pc).unwrap();
            links.push(open(link, p, cache.as_ref()));
        }
        // The ring runs keep the kernel's IP stack out of the data path.
        let filters: Vec<TransitFilter> = if link == LinkKind::Ring {
            ports.iter().map(|p| TransitFilter::attach(p, None).expect("transit filter")).collect()
        } else {
            Vec::new()
        };
        fwd.add_local_addr("10.0.2.100".parse().unwrap());
        for (proto, port) in [(Protocol::Tcp, 80), (Protocol::Udp, 53)] {
            let s = ServiceConfig::new(
                proto,
                VIP.parse().unwrap(),
                port,
                mode,
                SchedulerConfig::new(SchedulerKind::RoundRobin),
            )
            .with_real(SocketAddr::new("10.0.2.11".parse().unwrap(), port))
            .with_real(SocketAddr::new("10.0.2.12".parse().unwrap(), port));
            fwd.add_service(s).unwrap();
        }
        let clock = Clock::with_origin(Instant::now());
        // The AF_XDP runs also exercise receive coalescing (the example's default).
        let coalesce = if matches!(link, LinkKind::Xdp | LinkKind::XdpOffload) {
            Duration::from_micros(50)
        } else {
            Duration::ZERO
        };
        let dcfg = DriverConfig { coalesce, ..DriverConfig::default() };
        let mut d = Director::new(fwd, links, clock, dcfg);
        if let Some(cache) = cache {
            d = d.with_offload(cache, OffloadConfig::default());
        }
        if let Some(hc) = health {
            let targets: Vec<_> = d
                .forwarder()
                .reals()
                .into_iter()
                .filter(|r| r.2.port() == 80)
                .map(|(id, _, a, _)| (id, a))
                .collect();
            let m = Monitor::new(hc, &targets, clock.at(Instant::now()), 1);
            let (tx, rx) = std::sync::mpsc::channel();
            let probe = Arc::new(TcpConnectProbe { timeout: hc.timeout });
            spawn_prober(m, probe, clock, tx, Arc::clone(&stop2)).unwrap();
            d = d.with_health(rx);
        }
        d.announce().unwrap();
        std::thread::spawn(move || {
            let _filters = filters;
            d.run(&stop2).expect("director loop");
            eprint!("{}", d.forwarder().report().ipvsadm());
            eprintln!("{:?}", d.forwarder().stats());
            *stats_out.lock().unwrap() = (d.link_stats(), d.offload_stats());
        })
    })
    .unwrap();
    handles.push(director);
    World {
        threads: Threads { stop, handles },
        lab,
        c,
        lb,
        servers: vec![s1, s2],
        nginx,
        dir,
        link_stats,
    }
}

impl World {
    /// Stops the director (and the other in-process threads); returns its links' and flow
    /// cache's counters.
    fn stop_director(&mut self) -> Stats {
        self.threads.stop.store(true, Ordering::Relaxed);
        for h in self.threads.handles.drain(..) {
            let _ = h.join();
        }
        std::mem::take(&mut *self.link_stats.lock().unwrap())
    }

    fn curl(&self, path: &str, out: Option<&Path>) -> std::io::Result<String> {
        let url = format!("http://{VIP}/{path}");
        let mut args = vec!["curl", "-sS", "--max-time", "20", "--connect-timeout", "3"];
        let o;
        if let Some(p) = out {
            o = p.to_str().unwrap().to_owned();
            args.extend(["-o", &o]);
        }
        args.push(&url);
        let r = self.lab.exec(&self.c, &args)?;
        Ok(String::from_utf8_lossy(&r.stdout).into_owned())
    }

    fn udp(&self, n: usize) -> Vec<String> {
        in_netns(self.c.name(), move || {
            (0..n)
                .map(|i| {
                    let s = UdpSocket::bind("0.0.0.0:0").unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                    let msg = format!("q{i}");
                    for _ in 0..3 {
                        s.send_to(msg.as_bytes(), (VIP, 53)).unwrap();
                        let mut buf = [0u8; 100];
                        if let Ok((k, from)) = s.recv_from(&mut buf) {
                            assert_eq!(from, SocketAddr::new(VIP.parse().unwrap(), 53));
                            return String::from_utf8_lossy(&buf[..k]).into_owned();
                        }
                    }
                    String::new()
                })
                .collect()
        })
        .unwrap()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Captures the TCP SYN and handshake ACK to port 80 that reach `ns`'s eth0 (with the batched
/// link, i.e. an AF_PACKET socket), returning the TOA addresses found in them.
fn capture_toa(ns: &Netns, stop: Arc<AtomicBool>) -> JoinHandle<Vec<(u8, Option<SocketAddr>)>> {
    let (tx, rx) = std::sync::mpsc::channel();
    let h = in_netns(ns.name(), move || {
        let mut link = AfPacketLink::open("eth0", 64, 1 << 20).unwrap();
        tx.send(()).unwrap();
        std::thread::spawn(move || {
            let mut bufs = vec![FrameBuf::default(); 64];
            let mut seen = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let n = link.recv_batch(&mut bufs).unwrap_or(0);
                for b in &bufs[..n] {
                    let f = b.as_slice();
                    if let Ok(Kind::Ip(m)) = wire::parse(f)
                        && m.proto == 6
                        && m.dport == 80
                        && m.tcp_flags & 0x12 != 0
                        && m.end - m.l4 == m.tcp_hlen
                    {
                        let opts = &f[m.l4 + 20..m.l4 + m.tcp_hlen];
                        seen.push((m.tcp_flags, wire::parse_toa(opts).map(SocketAddr::V4)));
                    }
                }
                if n == 0 {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            seen
        })
    })
    .unwrap();
    rx.recv().unwrap();
    h
}

fn modes_and_links(test: &str, f: impl Fn(Mode, LinkKind)) {
    if skip_unless_root(test) {
        return;
    }
    for link in LINKS {
        for mode in [Mode::Nat, Mode::FullNat, Mode::Dr] {
            eprintln!("--- {test}: {mode:?} over {link:?}");
            f(mode, link);
        }
    }
}

#[test]
fn lab_l4_curl_20mb_and_udp_in_every_mode_and_link() {
    modes_and_links("lab_l4_curl_20mb_and_udp_in_every_mode_and_link", |mode, link| {
        let mut w = world(mode, link, None);
        let cap_stop = Arc::new(AtomicBool::new(false));
        let caps: Vec<_> = if mode == Mode::FullNat {
            w.servers.iter().map(|s| capture_toa(s, Arc::clone(&cap_stop))).collect()
        } else {
            Vec::new()
        };
        // Small requests: both servers answer (round robin), through real kernel TCP.
        let mut ids = Vec::new();
        for _ in 0..4 {
            ids.push(w.curl("id", None).unwrap_or_else(|e| panic!("{mode:?}/{link:?}: curl: {e}")));
        }
        assert!(
            ids.iter().any(|i| i == "s1") && ids.iter().any(|i| i == "s2"),
            "{mode:?}/{link:?}: {ids:?}"
        );
        // 20 MB, byte for byte.
        let out = w.dir.join("download");
        let t = Instant::now();
        let errors = in_addr_errors(&w.lb).unwrap();
        w.curl("big", Some(&out)).unwrap();
        let errors = in_addr_errors(&w.lb).unwrap() - errors;
        match link {
            // The transit filter kept the download's frames from the kernel's IP stack...
            LinkKind::Ring => assert!(errors < 50, "{mode:?}: {errors} transit frames"),
            // ...which otherwise sees (and drops) each of them after the packet socket.
            LinkKind::Batched if mode != Mode::Dr => {
                assert!(errors > 1000, "{mode:?}: {errors} transit frames")
            }
            _ => {}
        }
        let got = std::fs::read(&out).unwrap();
        let want = std::fs::read(w.dir.join("big")).unwrap();
        assert!(got == want, "{mode:?}/{link:?}: 20 MB download differs ({} bytes)", got.len());
        eprintln!("{mode:?}/{link:?}: 20 MB in {:?}", t.elapsed());
        // UDP: answers from the VIP, spread over both servers.
        let answers = w.udp(8);
        assert!(answers.iter().all(|a| a.starts_with('q')), "{mode:?}/{link:?}: {answers:?}");
        assert!(
            answers.iter().any(|a| a.ends_with("s1")) && answers.iter().any(|a| a.ends_with("s2")),
            "{answers:?}"
        );
        if mode == Mode::FullNat {
            cap_stop.store(true, Ordering::Relaxed);
            let seen: Vec<_> = caps.into_iter().flat_map(|h| h.join().unwrap()).collect();
            let client: SocketAddr = "10.0.1.2:0".parse().unwrap();
            let syns: Vec<_> = seen.iter().filter(|(f, _)| f & 0x12 == 0x02).collect();
            let acks: Vec<_> = seen.iter().filter(|(f, _)| f & 0x12 == 0x10).collect();
            assert!(syns.len() >= 5, "{seen:?}");
            for (_, toa) in syns.iter().chain(acks.iter().take(1)) {
                let a = toa.expect("TOA in SYN and handshake ACK");
                assert_eq!(a.ip(), client.ip(), "the server sees the client's address");
                assert!(a.port() >= 1024);
            }
        }
        let (stats, offload) = w.stop_director();
        if link == LinkKind::XdpOffload {
            // Most of the download's segments and acknowledgements went through the cache,
            // not through user space (DR: only the client's acknowledgements pass the
            // director).
            let o = offload.expect("offload stats");
            let rx: u64 = stats.iter().map(|s| s.rx_frames).sum();
            eprintln!("{mode:?}: flow cache {o:?}, user space received {rx} frames");
            assert!(o.learned >= 2 && o.packets > 2 * rx, "{mode:?}: {o:?}, {stats:?}");
            if mode != Mode::Dr {
                // Every segment of the download but the first few (IP bytes: more than 20 MB).
                assert!(o.bytes > BIG as u64 * 9 / 10, "{mode:?}: {o:?}");
            }
        }
        if link == LinkKind::Xdp {
            // The data path went through the AF_XDP sockets, not the side packet socket.
            for s in &stats {
                assert!(s.rx_fast * 10 >= s.rx_frames * 9, "{mode:?}: {s:?}");
            }
            let fast: u64 = stats.iter().map(|s| s.rx_fast).sum();
            assert!(fast > 1000, "{mode:?}: {stats:?}");
        }
    });
}

#[test]
fn lab_l4_killed_server_is_avoided_within_the_fall_time() {
    if skip_unless_root("lab_l4_killed_server_is_avoided_within_the_fall_time") {
        return;
    }
    let hc = HealthConfig {
        interval: Duration::from_millis(200),
        fast_interval: Duration::from_millis(200),
        down_interval: Duration::from_millis(500),
        timeout: Duration::from_millis(200),
        rise: 2,
        fall: 2,
        initial: HealthStatus::Up,
        jitter: 0.0,
    };
    let fall_time = (hc.fast_interval + hc.timeout) * hc.fall + hc.interval;
    for link in LINKS {
        let mut w = world(Mode::Nat, link, Some(hc));
        for _ in 0..4 {
            w.curl("id", None).unwrap();
        }
        let p = w.nginx.remove(0);
        let killed = Instant::now();
        w.lab.kill(&p);
        // Connections scheduled to s1 fail (RST) until the check marks it down; after that every
        // new connection goes to s2.
        let mut last_failure = None;
        let ok = wait_until(Duration::from_secs(10), || {
            let mut streak = 0;
            for _ in 0..6 {
                match w.curl("id", None) {
                    Ok(id) if id == "s2" => streak += 1,
                    _ => {
                        last_failure = Some(killed.elapsed());
                        return false;
                    }
                }
            }
            streak == 6
        });
        assert!(ok, "{link:?}: s2 never took all new connections");
        let settled = last_failure.unwrap_or_default();
        eprintln!(
            "{link:?}: last failed connection {settled:?} after the kill (fall time {fall_time:?})"
        );
        assert!(settled <= fall_time + Duration::from_millis(500), "{link:?}: {settled:?}");
        let ids: Vec<_> = (0..6).map(|_| w.curl("id", None).unwrap()).collect();
        assert!(ids.iter().all(|i| i == "s2"), "{ids:?}");
    }
}
