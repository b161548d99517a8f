//! An L4 director (NAT, FULLNAT + TOA, DR) on real interfaces, configured from a TOML file, or,
//! when the environment of `shared/bench/l4-compare.sh`'s candidate contract is set (MODE, VIP,
//! CLIENT_IF, SERVER_IF, BACKENDS, UDP_PORTS, TCP_PORTS, CLIENT_NEXTHOP), from that. Runs until
//! SIGTERM / SIGINT. Needs root (AF_PACKET) and runs in the director's network namespace.
//!
//! ```sh
//! cargo run --release --example l4_director -- --config director.toml
//! # the harness: LINK=batched|ring|pnet selects the link (default batched)
//! CANDIDATE_CMD="LINK=batched target/release/examples/l4_director" shared/bench/l4-compare.sh
//! ```
//!
//! Configuration file:
//! ```toml
//! [director]
//! link = "batched"          # batched (recvmmsg/sendmmsg) | ring (TPACKET_V3 rx) | pnet
//! batch = 64
//! stats_every_secs = 10     # print ipvsadm-style counters to stderr (0: never)
//! strict_tcp = true
//! expire_nodest_conn = false
//! local_addresses = ["10.0.2.100"]   # FULLNAT pool
//!
//! [[port]]                  # port 0, 1, ... in this order; addresses/MAC read from the system
//! interface = "lb-c"
//! [[port]]
//! interface = "lb-s"
//!
//! [[neighbour]]             # optional static entries (otherwise resolved with ARP/ND)
//! ip = "10.0.2.11"
//! mac = "02:00:00:00:02:11"
//!
//! [[route]]                 # optional (connected routes come from the ports' addresses)
//! prefix = "0.0.0.0/0"
//! port = 0
//! via = "10.0.1.254"
//!
//! [health]                  # optional: tcp | http probes of every real server
//! kind = "http"
//! path = "/"
//! interval_ms = 1000
//! timeout_ms = 500
//! rise = 2
//! fall = 3
//!
//! [[service]]
//! proto = "tcp"             # tcp | udp
//! vip = "10.0.0.100"
//! port = 80                 # 0: all ports
//! mode = "nat"              # nat | fullnat | dr
//! scheduler = "rr"          # any slb-core scheduler name (rr, swrr, mh, wlc, sh, ...)
//! hash = "flow"             # flow | source (what hashing schedulers hash)
//! persistence_secs = 300    # optional, IPVS -p
//! reals = ["10.0.2.11:80", "10.0.2.12:80"]
//! ```

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;
use serde::Deserialize;
use slb::core::health::{HealthConfig, HealthStatus};
use slb::core::sched::{SchedulerConfig, SchedulerKind};
use slb::core::time::Clock;
use slb::l4::driver::{BoxLink, Director, DriverConfig, interface_info, stop_on_signals};
use slb::l4::fwd::{
    Cidr, Forwarder, ForwarderConfig, HashOn, Mac, Mode, Persistence, PortConfig, PortId,
    RealConfig, Route, ServiceConfig,
};
use slb::l4::health::{HttpProbe, Monitor, TcpConnectProbe, spawn_prober};
use slb::l4::link::{AfPacketLink, PnetLink};

#[derive(Parser, Debug)]
#[command(about = "slb L4 director on real interfaces")]
struct Args {
    /// TOML configuration (ignored when the l4-compare environment is set).
    #[arg(long)]
    config: Option<std::path::PathBuf>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    director: DirectorSection,
    #[serde(default)]
    port: Vec<PortSection>,
    #[serde(default)]
    neighbour: Vec<NeighbourSection>,
    #[serde(default)]
    route: Vec<RouteSection>,
    health: Option<HealthSection>,
    #[serde(default)]
    service: Vec<ServiceSection>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, default)]
struct DirectorSection {
    link: String,
    batch: usize,
    stats_every_secs: u64,
    strict_tcp: bool,
    expire_nodest_conn: bool,
    local_addresses: Vec<IpAddr>,
}

impl Default for DirectorSection {
    fn default() -> Self {
        DirectorSection {
            link: "batched".into(),
            batch: 64,
            stats_every_secs: 0,
            strict_tcp: true,
            expire_nodest_conn: false,
            local_addresses: Vec::new(),
        }
    }
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct PortSection {
    interface: String,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct NeighbourSection {
    ip: IpAddr,
    mac: String,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RouteSection {
    prefix: String,
    port: u8,
    via: Option<IpAddr>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, default)]
struct HealthSection {
    kind: String,
    path: String,
    interval_ms: u64,
    timeout_ms: u64,
    rise: u32,
    fall: u32,
}

impl Default for HealthSection {
    fn default() -> Self {
        HealthSection {
            kind: "tcp".into(),
            path: "/".into(),
            interval_ms: 1000,
            timeout_ms: 500,
            rise: 2,
            fall: 3,
        }
    }
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct ServiceSection {
    proto: String,
    vip: IpAddr,
    port: u16,
    mode: String,
    #[serde(default = "rr")]
    scheduler: String,
    #[serde(default)]
    hash: Option<String>,
    persistence_secs: Option<u64>,
    reals: Vec<SocketAddr>,
}

fn rr() -> String {
    "rr".into()
}

fn parse_mac(s: &str) -> Result<Mac> {
    let b: Vec<u8> = s
        .split(':')
        .map(|x| u8::from_str_radix(x, 16))
        .collect::<Result<_, _>>()
        .with_context(|| format!("MAC {s}"))?;
    b.try_into().map_err(|_| anyhow::anyhow!("MAC {s}: need 6 bytes"))
}

/// `ip@mac`.
fn parse_ip_mac(s: &str) -> Result<(IpAddr, Mac)> {
    let (ip, mac) = s.split_once('@').with_context(|| format!("{s}: expected ip@mac"))?;
    Ok((ip.parse().with_context(|| format!("address {ip}"))?, parse_mac(mac)?))
}

fn env(name: &str) -> Result<String> {
    std::env::var(name).with_context(|| format!("environment variable {name}"))
}

fn ports_list(s: &str) -> Result<Vec<u16>> {
    s.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| p.trim().parse().with_context(|| format!("port {p}")))
        .collect()
}

/// The l4-compare candidate contract: NAT from CLIENT_IF to SERVER_IF, static neighbours, UDP
/// services hashed by flow (Maglev), TCP services with source-IP persistence (iperf3's control
/// and data connections must reach one backend). No health probes (iperf3 -1 servers would take
/// a probe's connection for their one client).
fn from_harness_env() -> Result<Config> {
    let mode = env("MODE")?;
    let vip: IpAddr = env("VIP")?.parse().context("VIP")?;
    let reals: Vec<(IpAddr, Mac)> =
        env("BACKENDS")?.split(',').map(parse_ip_mac).collect::<Result<_>>()?;
    let mut neighbour: Vec<NeighbourSection> =
        reals.iter().map(|(ip, mac)| NeighbourSection { ip: *ip, mac: fmt_mac(mac) }).collect();
    if let Ok(hop) = std::env::var("CLIENT_NEXTHOP") {
        let (ip, mac) = parse_ip_mac(&hop)?;
        neighbour.push(NeighbourSection { ip, mac: fmt_mac(&mac) });
    }
    let mut service = Vec::new();
    for (proto, var) in [("udp", "UDP_PORTS"), ("tcp", "TCP_PORTS")] {
        for port in ports_list(&std::env::var(var).unwrap_or_default())? {
            service.push(ServiceSection {
                proto: proto.into(),
                vip,
                port,
                mode: mode.clone(),
                scheduler: if proto == "udp" { "mh".into() } else { "rr".into() },
                hash: None,
                persistence_secs: (proto == "tcp").then_some(300),
                reals: reals.iter().map(|(ip, _)| SocketAddr::new(*ip, 0)).collect(),
            });
        }
    }
    Ok(Config {
        director: DirectorSection {
            link: std::env::var("LINK").unwrap_or_else(|_| "batched".into()),
            ..DirectorSection::default()
        },
        port: vec![
            PortSection { interface: env("CLIENT_IF")? },
            PortSection { interface: env("SERVER_IF")? },
        ],
        neighbour,
        route: Vec::new(),
        health: None,
        service,
    })
}

fn fmt_mac(m: &Mac) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

fn build(cfg: &Config) -> Result<(Forwarder, Vec<BoxLink>)> {
    let d = &cfg.director;
    let fcfg = ForwarderConfig {
        strict_tcp: d.strict_tcp,
        expire_nodest_conn: d.expire_nodest_conn,
        ..ForwarderConfig::default()
    };
    let mut fwd = Forwarder::new(fcfg);
    let mut links: Vec<BoxLink> = Vec::new();
    for p in &cfg.port {
        let (mac, addrs) = interface_info(&p.interface)?;
        let mut pc = PortConfig::new(mac);
        pc.addrs = addrs
            .into_iter()
            .filter(|c: &Cidr| !matches!(c.addr, IpAddr::V6(a) if a.segments()[0] == 0xfe80))
            .collect();
        eprintln!("port {}: {} {} {:?}", links.len(), p.interface, fmt_mac(&mac), pc.addrs);
        fwd.add_port(pc)?;
        let link: BoxLink = match d.link.as_str() {
            "pnet" => Box::new(PnetLink::open(&p.interface, 8 << 20)?),
            "batched" => Box::new(AfPacketLink::open(&p.interface, d.batch, 8 << 20)?),
            "ring" => Box::new(AfPacketLink::open_ring(&p.interface, d.batch, 8 << 20, 16 << 20)?),
            other => bail!("unknown link {other:?} (batched, ring, pnet)"),
        };
        links.push(link);
    }
    for n in &cfg.neighbour {
        fwd.add_neighbour(n.ip, parse_mac(&n.mac)?);
    }
    for r in &cfg.route {
        let prefix: Cidr = r.prefix.parse().map_err(anyhow::Error::msg)?;
        fwd.add_route(Route { prefix, port: PortId(r.port), via: r.via });
    }
    for ip in &d.local_addresses {
        fwd.add_local_addr(*ip);
    }
    for s in &cfg.service {
        let proto = match s.proto.as_str() {
            "tcp" => slb::core::flow::Protocol::Tcp,
            "udp" => slb::core::flow::Protocol::Udp,
            other => bail!("unknown protocol {other:?}"),
        };
        let mode: Mode = s.mode.parse().map_err(anyhow::Error::msg)?;
        let kind: SchedulerKind = s.scheduler.parse()?;
        let mut sc = ServiceConfig::new(proto, s.vip, s.port, mode, SchedulerConfig::new(kind));
        sc.hash_on = match s.hash.as_deref() {
            Some("source") => HashOn::SourceIp,
            Some("flow") | None => HashOn::Flow,
            Some(other) => bail!("unknown hash {other:?} (flow, source)"),
        };
        sc.persistence = s
            .persistence_secs
            .map(|t| Persistence { timeout: Duration::from_secs(t), ..Persistence::default() });
        sc.reals = s.reals.iter().map(|a| RealConfig::new(*a)).collect();
        fwd.add_service(sc)?;
    }
    Ok((fwd, links))
}

fn main() -> Result<()> {
    let args = Args::parse();
    let cfg = if std::env::var("MODE").is_ok() && std::env::var("CLIENT_IF").is_ok() {
        eprintln!("l4_director: configuration from the l4-compare environment");
        from_harness_env()?
    } else {
        let path = args.config.context("--config FILE (or the l4-compare environment)")?;
        let text = std::fs::read_to_string(&path).with_context(|| format!("{}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("{}", path.display()))?
    };
    let (fwd, links) = build(&cfg)?;
    #[allow(clippy::disallowed_methods)] // the example is a driver: it owns the clock
    let clock = Clock::with_origin(std::time::Instant::now());
    let stop = Arc::new(AtomicBool::new(false));
    stop_on_signals(Arc::clone(&stop))?;
    let print = (cfg.director.stats_every_secs > 0)
        .then(|| Duration::from_secs(cfg.director.stats_every_secs));
    let dcfg = DriverConfig {
        batch: cfg.director.batch.max(1),
        print_stats: print,
        ..DriverConfig::default()
    };
    let mut director = Director::new(fwd, links, clock, dcfg);
    if let Some(h) = &cfg.health {
        let hc = HealthConfig {
            interval: Duration::from_millis(h.interval_ms),
            fast_interval: Duration::from_millis(h.interval_ms),
            down_interval: Duration::from_millis(h.interval_ms),
            timeout: Duration::from_millis(h.timeout_ms),
            rise: h.rise,
            fall: h.fall,
            initial: HealthStatus::Up,
            jitter: 0.1,
        };
        let targets: Vec<_> = director
            .forwarder()
            .reals()
            .into_iter()
            .filter(|r| r.2.port() != 0)
            .map(|(id, _, addr, _)| (id, addr))
            .collect();
        let monitor = Monitor::new(hc, &targets, clock.at(std::time::Instant::now()), 7);
        let timeout = Duration::from_millis(h.timeout_ms);
        let probe: Arc<dyn slb::core::health::HealthProbe> = match h.kind.as_str() {
            "tcp" => Arc::new(TcpConnectProbe { timeout }),
            "http" => Arc::new(HttpProbe::new(&h.path, timeout)),
            other => bail!("unknown health kind {other:?} (tcp, http)"),
        };
        let (tx, rx) = std::sync::mpsc::channel();
        spawn_prober(monitor, probe, clock, tx, Arc::clone(&stop))?;
        director = director.with_health(rx);
    }
    director.announce()?;
    eprintln!("l4_director: running ({} link)", cfg.director.link);
    director.run(&stop)?;
    eprint!("{}", director.forwarder().report().ipvsadm());
    eprintln!("links: {:?}", director.link_stats());
    Ok(())
}
