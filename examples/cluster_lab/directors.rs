//! Starting, killing and upgrading directors: slb's `l4_director` (slb-l4 + slb-sync, one
//! process per director namespace), or the kernel baseline (iptables DNAT + SNAT, no sync).

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use slb::l4::lab::{Lab, Proc, SIGTERM, in_netns, wait_until};

use crate::topo::{self, Mode, Topology, VIP, VPORT};
use crate::{Args, DirectorKind};

/// Where each director serves its counters (inside its own namespace).
const STATS: &str = "127.0.0.1:9100";

pub(crate) struct Directors {
    pub(crate) procs: Vec<Option<Proc>>,
    pub(crate) members: Vec<usize>,
    /// Configuration files and logs.
    pub(crate) dir: PathBuf,
    /// The run succeeded: no need to show the directors' logs.
    pub(crate) ok: bool,
}

impl Directors {
    pub(crate) fn new(n: usize) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("slb-cluster-lab-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(Directors {
            procs: (0..n).map(|_| None).collect(),
            members: (0..n).collect(),
            dir,
            ok: false,
        })
    }
}

impl Drop for Directors {
    fn drop(&mut self) {
        if !self.ok {
            for i in 0..self.procs.len() {
                let log = self.dir.join(format!("d{}.log", i + 1));
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                eprintln!("--- d{} log (last 30 lines) ---", i + 1);
                for l in &lines[lines.len().saturating_sub(30)..] {
                    eprintln!("{l}");
                }
            }
        }
        if std::env::var_os("SLB_LAB_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The `l4_director` binary next to this one (cargo builds examples into one directory).
fn director_binary() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe()?;
    let bin = me.with_file_name("l4_director");
    anyhow::ensure!(
        bin.exists(),
        "{} not found: build the examples first (cargo build --features lab --examples)",
        bin.display()
    );
    Ok(bin)
}

fn config(topo: &Topology, mode: Mode, i: usize, link: &str, offload: bool) -> String {
    let n = topo.directors.len();
    let reals: Vec<String> =
        (0..topo.servers.len()).map(|s| format!("\"{}:{VPORT}\"", topo::server_ip(s))).collect();
    let mode_name = mode.name();
    // The cache updates checksums incrementally: the lab's veths have no checksum offloads.
    let csums = if offload { "assume-complete" } else { "detect" };
    let locals =
        if mode == Mode::FullNat { format!("[\"{}\"]", topo::local_ip(i)) } else { "[]".into() };
    let mut c = format!(
        r#"[director]
link = "{link}"
offload = {offload}
unknown_checksums = "{csums}"
local_addresses = {locals}
sessions = 262144
preallocate = true

[[port]]
interface = "eth0"
[[port]]
interface = "eth1"

[[route]]
prefix = "0.0.0.0/0"
port = 0
via = "10.2.0.1"

[health]
kind = "tcp"
interval_ms = 200
timeout_ms = 200
rise = 2
fall = 2

[[service]]
proto = "tcp"
vip = "{VIP}"
port = {VPORT}
mode = "{mode_name}"
scheduler = "mh"
reals = [{reals}]

[stats]
listen = "{STATS}"
every_ms = 100

[sync]
node = {node}
cluster = 7
secret = "slb cluster lab"
interface = "{iface}"
heartbeat_ms = 50
dead_after = 3
"#,
        reals = reals.join(", "),
        node = i + 1,
        iface = topo::director_up_ip(i),
    );
    match mode {
        Mode::FullNat => {
            for j in 0..n {
                c += &format!(
                    "\n[[sync.takeover]]\nhome = {}\naddresses = [\"{}\"]\n",
                    j + 1,
                    topo::local_ip(j)
                );
            }
        }
        Mode::Nat => {
            c += &format!(
                "\n[[sync.takeover]]\naddresses = [\"{}\", \"{}\"]\n",
                topo::FLOAT_UP,
                topo::FLOAT_DOWN
            );
        }
        Mode::Dr => {}
    }
    c
}

/// Starts director `i` (and, in the kernel baseline, configures its kernel instead).
pub(crate) fn start(
    lab: &mut Lab,
    topo: &Topology,
    args: &Args,
    mode: Mode,
    i: usize,
    dirs: &mut Directors,
) -> anyhow::Result<()> {
    let d = &topo.directors[i];
    match args.director {
        DirectorKind::Kernel => {
            anyhow::ensure!(
                mode == Mode::FullNat,
                "the kernel baseline supports fullnat only (no IPVS here)"
            );
            let server = topo::server_ip(i % topo.servers.len());
            let local = topo::local_ip(i);
            lab.ip(d, &["addr", "add", &format!("{local}/24"), "dev", "eth1"])?;
            lab.ip(d, &["route", "add", "default", "via", "10.2.0.1"])?;
            lab.sysctl(d, "net.ipv4.ip_forward=1")?;
            lab.sh(d, &format!(
                "iptables -t nat -A PREROUTING -d {VIP} -p tcp --dport {VPORT} -j DNAT --to-destination {server}:{VPORT} && \
                 iptables -t nat -A POSTROUTING -d {server} -p tcp --dport {VPORT} -j SNAT --to-source {local}"
            ))?;
            Ok(())
        }
        DirectorKind::Slb => {
            let bin = director_binary()?;
            let cfg = dirs.dir.join(format!("d{}.toml", i + 1));
            std::fs::write(&cfg, config(topo, mode, i, &args.link, args.offload))?;
            let log = dirs.dir.join(format!("d{}.log", i + 1));
            let p =
                lab.spawn(d, &[bin.as_os_str(), "--config".as_ref(), cfg.as_os_str()], Some(&log))?;
            dirs.procs[i] = Some(p);
            Ok(())
        }
    }
}

/// `GET path` on director `i`'s stats endpoint: (status code, body).
pub(crate) fn http_get(topo: &Topology, i: usize, path: &str) -> Option<(u16, String)> {
    let ns = topo.directors[i].name().to_owned();
    let path = path.to_owned();
    in_netns(&ns, move || -> Option<(u16, String)> {
        let addr: SocketAddr = STATS.parse().ok()?;
        let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        write!(s, "GET {path} HTTP/1.0\r\n\r\n").ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        let code = text.split_whitespace().nth(1)?.parse().ok()?;
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
        Some((code, body))
    })
    .ok()
    .flatten()
}

/// A gauge or counter without labels from a director's metrics.
pub(crate) fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (n, v) = l.split_once(' ')?;
        (n == name).then(|| v.trim().parse().ok()).flatten()
    })
}

/// Waits until director `i` says its startup resync is over.
pub(crate) fn wait_ready(topo: &Topology, i: usize, limit: Duration) -> bool {
    wait_until(limit, || http_get(topo, i, "/ready").is_some_and(|(c, _)| c == 200))
}

/// The addresses director `i` answers for, from its metrics (`None` when it does not answer).
fn held(topo: &Topology, i: usize) -> Option<Vec<String>> {
    let (code, text) = http_get(topo, i, "/metrics")?;
    (code == 200).then(|| {
        text.lines()
            .filter_map(|l| l.strip_prefix("slb_cluster_address_held{address=\""))
            .filter_map(|l| l.split_once('"').map(|(a, _)| a.to_owned()))
            .collect()
    })
}

/// Waits until the takeover addresses have settled after start-up: in FULLNAT each director
/// answers for its own local address and no other's (a director that came up first answers
/// for the others' until they are up, and a connection opened meanwhile would get its replies
/// at the wrong node); in NAT each floating address is held by exactly one director.
pub(crate) fn wait_settled(topo: &Topology, mode: Mode, n: usize, limit: Duration) -> bool {
    wait_until(limit, || {
        let Some(sets) = (0..n).map(|i| held(topo, i)).collect::<Option<Vec<_>>>() else {
            return false;
        };
        match mode {
            Mode::FullNat => sets.iter().enumerate().all(|(i, set)| {
                (0..n).all(|j| set.contains(&topo::local_ip(j).to_string()) == (i == j))
            }),
            Mode::Nat => [topo::FLOAT_UP, topo::FLOAT_DOWN]
                .iter()
                .all(|a| sets.iter().filter(|set| set.contains(&a.to_string())).count() == 1),
            Mode::Dr => true,
        }
    })
}

/// Kills director `i` with SIGKILL, then withdraws its next hop after `detect` (BFD).
/// `during` runs right after the kill (e.g. opening connections in the failover window).
pub(crate) fn kill(
    lab: &mut Lab,
    topo: &Topology,
    mode: Mode,
    i: usize,
    dirs: &mut Directors,
    detect: Duration,
    during: impl FnOnce(),
) -> anyhow::Result<()> {
    if let Some(p) = dirs.procs[i].take() {
        lab.kill(&p);
    } else {
        // Kernel baseline: the "director" is its kernel; take its links down.
        lab.ip(&topo.directors[i], &["link", "set", "eth0", "down"])?;
        lab.ip(&topo.directors[i], &["link", "set", "eth1", "down"])?;
    }
    let killed = Instant::now();
    eprintln!("killed d{}", i + 1);
    during();
    std::thread::sleep(detect.saturating_sub(killed.elapsed()));
    if mode != Mode::Nat {
        dirs.members.retain(|&m| m != i);
        topo::set_group(lab, &topo.rt, &dirs.members)?;
        eprintln!("withdrew d{} from the ECMP group", i + 1);
    }
    Ok(())
}

/// Rolling upgrade step for director `i`: withdraw it from the ECMP group, stop it with SIGTERM
/// (it leaves the sync cluster and keeps forwarding while its peers take over its addresses),
/// start it again, wait until it has resynced, and put it back in the group. Returns the time
/// from the new process's start to its readiness.
pub(crate) fn upgrade(
    lab: &mut Lab,
    topo: &Topology,
    args: &Args,
    mode: Mode,
    i: usize,
    dirs: &mut Directors,
) -> anyhow::Result<Duration> {
    anyhow::ensure!(args.director == DirectorKind::Slb, "upgrade needs the slb director");
    if mode != Mode::Nat {
        dirs.members.retain(|&m| m != i);
        topo::set_group(lab, &topo.rt, &dirs.members)?;
        eprintln!("withdrew d{} from the ECMP group", i + 1);
    }
    let p = dirs.procs[i].take().ok_or_else(|| anyhow::anyhow!("d{} is not running", i + 1))?;
    lab.signal(&p, SIGTERM);
    if !lab.wait_exit(&p, Duration::from_secs(5)) {
        eprintln!("d{} did not exit on SIGTERM within 5 s: killed", i + 1);
    }
    lab.kill(&p);
    let t = Instant::now();
    start(lab, topo, args, mode, i, dirs)?;
    anyhow::ensure!(wait_ready(topo, i, Duration::from_secs(20)), "d{} never became ready", i + 1);
    let resync = t.elapsed();
    eprintln!("d{} restarted and ready after {resync:?}", i + 1);
    if mode != Mode::Nat {
        dirs.members.push(i);
        dirs.members.sort_unstable();
        topo::set_group(lab, &topo.rt, &dirs.members)?;
        eprintln!("d{} rejoined the ECMP group", i + 1);
    }
    Ok(resync)
}

/// Waits until every running director holds every stream's session (its own or synced),
/// when the directors can tell; the kernel baseline cannot and does not sync.
pub(crate) fn wait_synced(
    topo: &Topology,
    args: &Args,
    dirs: &Directors,
    connections: usize,
) -> anyhow::Result<()> {
    if args.director == DirectorKind::Kernel {
        return Ok(());
    }
    let running: Vec<usize> = (0..dirs.procs.len()).filter(|&i| dirs.procs[i].is_some()).collect();
    let mut seen = vec![0u64; topo.directors.len()];
    let ok = wait_until(Duration::from_secs(20), || {
        running.iter().all(|&i| {
            let n = http_get(topo, i, "/metrics")
                .and_then(|(_, body)| metric(&body, "slb_cluster_sessions_established"))
                .unwrap_or(0);
            seen[i] = n;
            n >= connections as u64
        })
    });
    anyhow::ensure!(ok, "sessions not synced everywhere: established per director {seen:?}");
    eprintln!("every director holds the {connections} sessions: {seen:?}");
    Ok(())
}
