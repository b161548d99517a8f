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
//! Configuration file: every section and key is in `director.example.toml` beside this file
//! (also printed by `--help`).
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
use slb::logging::LogFormat;

#[derive(Parser, Debug)]
#[command(
    about = "slb L4 director on real interfaces: NAT, FULLNAT + TOA, DR; session sync",
    long_about = "slb L4 director on real interfaces: NAT, FULLNAT + TOA, DR, with optional \
                  session sync between directors. Needs root (packet sockets) and runs in the \
                  director's network namespace until SIGTERM or SIGINT. Without --config it \
                  reads the comparison harness's environment (MODE, VIP, CLIENT_IF, SERVER_IF, \
                  BACKENDS, UDP_PORTS, TCP_PORTS, CLIENT_NEXTHOP; LINK, OFFLOAD).",
    after_long_help = concat!("Configuration file (--config):\n\n", include_str!("director.example.toml"))
)]
struct Args {
    /// TOML configuration (ignored when the l4-compare environment is set).
    #[arg(long)]
    config: Option<std::path::PathBuf>,
    /// Log lines on stderr as `text` (coloured only on a terminal) or `json` (one object per
    /// line); RUST_LOG filters them (default info).
    #[arg(long, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
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
        tracing::info!(
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
        tracing::info!("port {}: {} {} {:?}", links.len(), p.interface, fmt_mac(&mac), pc.addrs);
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
                    tracing::warn!(
                        "no transit filter on {} ({e}): the kernel's IP stack also handles the \
                         frames the director forwards (drop_transit = false silences this)",
                        p.interface
                    )
                })
                .ok(),
            _ => None,
        };
        if let Some(f) = filter {
            tracing::info!("port {}: transit filter attached", links.len() - 1);
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
    slb::logging::init(args.log_format)?;
    let cfg = if std::env::var("MODE").is_ok() && std::env::var("CLIENT_IF").is_ok() {
        tracing::info!("configuration from the comparison harness's environment");
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
    tracing::info!("running ({} link)", cfg.director.link);
    director.run(&stop)?;
    if let Some(d) = drain {
        tracing::info!("leaving the cluster, forwarding for {d:?} more");
        director.leave_cluster();
        director.run_for(&AtomicBool::new(false), d)?;
    }
    director.log_stats();
    Ok(())
}
