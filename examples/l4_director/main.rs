//! An L4 director (NAT, FULLNAT + TOA, DR) on real interfaces, configured from a TOML file, or,
//! when the environment of the l4-compare candidate contract is set (MODE, VIP, CLIENT_IF,
//! SERVER_IF, BACKENDS, UDP_PORTS, TCP_PORTS, CLIENT_NEXTHOP; `benches/compare/l4.sh` sets it),
//! from that. Runs until SIGTERM / SIGINT. Needs root (AF_PACKET) and runs in the director's
//! network namespace.
//!
//! ```sh
//! cargo run --release --example l4_director -- --config director.toml
//! # the harness: LINK=batched|ring|xdp|xdp-generic|pnet selects the link (default batched),
//! # OFFLOAD=1 the XDP flow cache (with LINK=xdp-generic on veth)
//! LINK=batched benches/compare/l4.sh
//! ```
//!
//! Configuration file:
//! ```toml
//! [director]
//! link = "batched"          # batched (recvmmsg/sendmmsg) | ring (TPACKET_V3 rx) | pnet
//!                           # | xdp (AF_XDP: the IPv4 data path in an XDP socket, the rest
//!                           #   via the kernel and a packet socket; the interface's own
//!                           #   addresses stay with the kernel) | xdp-generic (the same in
//!                           #   the kernel's generic XDP hook)
//! batch = 64
//! coalesce_us = 50          # after a pass with < batch/4 frames, sleep this long so frames
//!                           # gather (interrupt moderation; 0: off). Harness: COALESCE_US
//! stats_every_secs = 10     # print ipvsadm-style counters to stderr (0: never)
//! strict_tcp = true
//! expire_nodest_conn = false
//! unknown_checksums = "detect"  # links that cannot tell (pnet, xdp): "detect" checks each
//!                           # transport sum first; "assume-complete" trusts it (senders without
//!                           # tx checksum offload, e.g. frames from the wire); the harness
//!                           # contract promises complete sums, so its mode assumes them
//! offload = false           # xdp links: established flows are forwarded by the XDP program
//!                           # itself from a flow cache the director fills (needs complete
//!                           # checksums: "assume-complete"; on veth use xdp-generic, a veth
//!                           # peer without XDP cannot take redirects)
//! offload_flows = 262144    # flows the cache holds (one per session and direction; the map
//!                           # is allocated at start, ~120 B each); the rest use user space
//! drop_transit = true       # pnet/batched/ring: drop the frames the director forwards at the
//!                           # interface's TCX ingress, after the packet socket's copy, so the
//!                           # kernel's IP stack does not handle them too (or, with forwarding
//!                           # on, forward a second copy). Unset: on where the kernel can attach
//!                           # it (TCX, Linux 6.6), a warning where not; true: required; false:
//!                           # off. Harness: DROP_TRANSIT=1 / 0 (unset: the default)
//! local_addresses = ["10.0.2.100"]   # FULLNAT pool
//! sessions = 1048576        # session table capacity (half of it at most half-open)
//! preallocate = false       # reserve it at start, huge pages advised (recommended in production)
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
//! scheduler = "mh"          # any slb-core scheduler name (default mh: Maglev, which every
//!                           # director of a cluster computes alike; rr, swrr, wlc, sh, ...)
//! hash = "flow"             # flow | source (what hashing schedulers hash)
//! persistence_secs = 300    # optional, IPVS -p
//! reals = ["10.0.2.11:80", "10.0.2.12:80"]
//!
//! [sync]                    # optional: a cluster of directors replicating sessions (slb-sync)
//! node = 1                  # unique in the cluster, 1..
//! cluster = 7
//! secret = "..."            # or secret_file = "/etc/slb/cluster.key"
//! interface = "10.0.1.1"    # address of the interface carrying sync (multicast 224.0.0.81:8848)
//! # group = "224.0.0.81"; port = 8848; ifindex = 0 (IPv6 groups)
//! # bind = "10.0.1.1:8848"; unicast = ["10.0.1.2:8848", "10.0.1.3:8848"]   # instead of multicast
//! heartbeat_ms = 100        # peers are down after dead_after missed heartbeats
//! dead_after = 3
//! # threshold = 3; period = 50; resync = true; drain_ms = (liveness timeout + 300 ms)
//! # known_capacity = N      # sync table presized for N sessions (default: director.sessions
//!                           # with preallocate, else 0: grow on demand)
//! [[sync.takeover]]         # FULLNAT: each director's local addresses, homed on it
//! home = 1
//! addresses = ["10.0.2.100"]
//! [[sync.takeover]]         # NAT active-standby: floating addresses (no home: lowest live id)
//! addresses = ["10.0.1.254", "10.0.2.254"]
//!
//! [stats]                   # optional: GET /metrics (Prometheus text), GET /ready
//! listen = "127.0.0.1:9100"
//! ```
//!
//! With `[sync]`, the director answers ARP for nothing until its startup resync is over, then
//! announces what it holds; on SIGTERM it stops the sync engine (its peers take over its
//! addresses when they miss its heartbeats), keeps forwarding for `drain_ms`, and exits.

mod cluster;
mod config;
mod status;

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;
use slb::core::health::{HealthConfig, HealthStatus};
use slb::core::sched::{SchedulerConfig, SchedulerKind};
use slb::core::time::Clock;
use slb::l4::driver::{BoxLink, Director, DriverConfig, interface_info, stop_on_signals};
use slb::l4::fwd::{
    Cidr, Forwarder, ForwarderConfig, HashOn, Mode, Persistence, PortConfig, PortId, RealConfig,
    Route, ServiceConfig, UnknownCsum,
};
use slb::l4::health::{HttpProbe, Monitor, TcpConnectProbe, spawn_prober};
use slb::l4::link::{
    AfPacketLink, FlowOffload, OffloadConfig, PnetLink, TransitFilter, XdpConfig, XdpLink,
};

use config::{Config, fmt_mac, from_harness_env, parse_mac};

#[derive(Parser, Debug)]
#[command(about = "slb L4 director on real interfaces")]
struct Args {
    /// TOML configuration (ignored when the l4-compare environment is set).
    #[arg(long)]
    config: Option<std::path::PathBuf>,
}

/// What `build` makes: the forwarder, its links, the XDP flow cache and the transit filters
/// (kept alive as long as the director runs).
struct Built {
    fwd: Forwarder,
    links: Vec<BoxLink>,
    offload: Option<FlowOffload>,
    _filters: Vec<TransitFilter>,
}

fn build(cfg: &Config) -> Result<Built> {
    let d = &cfg.director;
    let offload = if d.offload {
        if !d.link.starts_with("xdp") || d.unknown_checksums != "assume-complete" {
            bail!(
                "offload = true needs link = \"xdp\" or \"xdp-generic\" and unknown_checksums = \"assume-complete\""
            );
        }
        Some(FlowOffload::new(d.offload_flows).context("creating the XDP flow cache")?)
    } else {
        None
    };
    let mut fcfg = ForwarderConfig {
        strict_tcp: d.strict_tcp,
        expire_nodest_conn: d.expire_nodest_conn,
        unknown_csum: match d.unknown_checksums.as_str() {
            "detect" => UnknownCsum::Detect,
            "assume-complete" => UnknownCsum::AssumeComplete,
            other => bail!("unknown_checksums = {other:?}: use \"detect\" or \"assume-complete\""),
        },
        ..ForwarderConfig::default()
    };
    fcfg.table.capacity = d.sessions.max(1);
    fcfg.table.max_half_open = (d.sessions / 2).max(1);
    fcfg.table.preallocate = d.preallocate;
    // The session table's internal hash is this process's own: a random key, so that nobody can
    // aim a flood of flows at one of its buckets (schedulers keep the cluster-wide key).
    let mut seed = [0u8; 16];
    getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("random hash key: {e}"))?;
    fcfg.table.hash_key = slb::core::flow::HashKey::from_bytes(seed);
    let mut fwd = Forwarder::new(fcfg);
    if d.preallocate {
        let advised = slb_l4::link::advise_huge_pages(&fwd.sessions().memory_regions());
        eprintln!(
            "session table: {} sessions reserved, {advised} bytes advised for huge pages",
            d.sessions
        );
    }
    let mut links: Vec<BoxLink> = Vec::new();
    let mut filters = Vec::new();
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
            "xdp" | "xdp-generic" => {
                let generic = d.link == "xdp-generic";
                Box::new(XdpLink::open(
                    &p.interface,
                    &XdpConfig { generic, offload: offload.clone(), ..XdpConfig::default() },
                )?)
            }
            other => bail!("unknown link {other:?} (batched, ring, xdp, xdp-generic, pnet)"),
        };
        links.push(link);
        // The XDP link's frames never reach the kernel's stack: it needs no filter.
        let filter = match (d.drop_transit, d.link.starts_with("xdp")) {
            (Some(true), true) => {
                bail!("drop_transit is for the AF_PACKET links (pnet, batched, ring)")
            }
            (Some(true), false) => Some(
                TransitFilter::attach(&p.interface, None)
                    .with_context(|| format!("the transit filter on {}", p.interface))?,
            ),
            (None, false) => TransitFilter::attach(&p.interface, None)
                .map_err(|e| {
                    eprintln!(
                        "warning: no transit filter on {} ({e}): the kernel's IP stack also \
                         handles the frames the director forwards (drop_transit = false \
                         silences this)",
                        p.interface
                    )
                })
                .ok(),
            _ => None,
        };
        if let Some(f) = filter {
            eprintln!("port {}: transit filter attached", links.len() - 1);
            filters.push(f);
        }
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
    Ok(Built { fwd, links, offload, _filters: filters })
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
    let Built { mut fwd, links, offload, _filters } = build(&cfg)?;
    #[allow(clippy::disallowed_methods)] // the example is a driver: it owns the clock
    let clock = Clock::with_origin(std::time::Instant::now());
    let cluster = match &cfg.sync {
        Some(s) => Some(cluster::start(s, &mut fwd, clock)?),
        None => None,
    };
    let stop = Arc::new(AtomicBool::new(false));
    stop_on_signals(Arc::clone(&stop))?;
    let print = (cfg.director.stats_every_secs > 0)
        .then(|| Duration::from_secs(cfg.director.stats_every_secs));
    let dcfg = DriverConfig {
        batch: cfg.director.batch.max(1),
        print_stats: print,
        coalesce: Duration::from_micros(cfg.director.coalesce_us),
        ..DriverConfig::default()
    };
    let mut director = Director::new(fwd, links, clock, dcfg);
    if let Some(cache) = offload {
        director = director.with_offload(cache, OffloadConfig::default());
    }
    let drain = cluster.as_ref().map(|c| c.1);
    if let Some((c, _)) = cluster {
        director = director.with_cluster(c);
    }
    if let Some(st) = &cfg.stats {
        director = director.with_metrics(Duration::from_millis(st.every_ms.unwrap_or(200)));
        status::serve(st.listen, director.metrics())
            .with_context(|| format!("stats on {}", st.listen))?;
    }
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
        #[allow(clippy::disallowed_methods)] // the example is a driver: it owns the clock
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
    if drain.is_none() {
        // A cluster member announces its addresses once its table has arrived instead.
        director.announce()?;
    }
    eprintln!("l4_director: running ({} link)", cfg.director.link);
    director.run(&stop)?;
    if let Some(d) = drain {
        eprintln!("l4_director: leaving the cluster, forwarding for {d:?} more");
        director.leave_cluster();
        director.run_for(&AtomicBool::new(false), d)?;
    }
    eprint!("{}", director.forwarder().report().ipvsadm());
    eprintln!("links: {:?}", director.link_stats());
    if let Some(o) = director.offload_stats() {
        eprintln!("offload: {o:?}");
    }
    Ok(())
}
