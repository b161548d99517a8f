//! The director's configuration file, and the l4-compare harness's environment.

use std::net::{IpAddr, SocketAddr};

use anyhow::{Context, Result};
use serde::Deserialize;
use slb::l4::fwd::Mac;

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    #[serde(default)]
    pub(crate) director: DirectorSection,
    #[serde(default)]
    pub(crate) port: Vec<PortSection>,
    #[serde(default)]
    pub(crate) neighbour: Vec<NeighbourSection>,
    #[serde(default)]
    pub(crate) route: Vec<RouteSection>,
    pub(crate) health: Option<HealthSection>,
    #[serde(default)]
    pub(crate) service: Vec<ServiceSection>,
    pub(crate) sync: Option<SyncSection>,
    pub(crate) stats: Option<StatsSection>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct DirectorSection {
    pub(crate) link: String,
    pub(crate) batch: usize,
    pub(crate) stats_every_secs: u64,
    pub(crate) strict_tcp: bool,
    pub(crate) expire_nodest_conn: bool,
    pub(crate) local_addresses: Vec<IpAddr>,
    /// Most sessions (half of them at most half-open).
    pub(crate) sessions: usize,
    /// Reserve the session table's memory at start (advised for huge pages) instead of growing
    /// it; with `[sync]`, the sync engine's table is presized alike.
    pub(crate) preallocate: bool,
    /// Receive coalescing in microseconds (DriverConfig::coalesce); 0: off.
    pub(crate) coalesce_us: u64,
    /// "detect" | "assume-complete": transport checksums of frames whose link cannot tell.
    pub(crate) unknown_checksums: String,
    /// XDP links: forward established flows in the XDP program (the flow cache).
    pub(crate) offload: bool,
    /// Flows the cache holds (a session is one flow per direction); the kernel allocates the
    /// whole map at start, ~120 bytes per flow.
    pub(crate) offload_flows: u32,
    /// AF_PACKET links: drop the frames the director forwards at the interface's TCX ingress
    /// hook, after the packet socket's copy, so the kernel's IP stack does not handle them too.
    /// Unset: on where the kernel can attach it, with a warning where it cannot; `true`: a
    /// failure to attach stops the director; `false`: off.
    pub(crate) drop_transit: Option<bool>,
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
            sessions: 1 << 20,
            preallocate: false,
            coalesce_us: 50,
            unknown_checksums: "detect".into(),
            offload: false,
            offload_flows: 262_144,
            drop_transit: None,
        }
    }
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(crate) struct PortSection {
    pub(crate) interface: String,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(crate) struct NeighbourSection {
    pub(crate) ip: IpAddr,
    pub(crate) mac: String,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(crate) struct RouteSection {
    pub(crate) prefix: String,
    pub(crate) port: u8,
    pub(crate) via: Option<IpAddr>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct HealthSection {
    pub(crate) kind: String,
    pub(crate) path: String,
    pub(crate) interval_ms: u64,
    pub(crate) timeout_ms: u64,
    pub(crate) rise: u32,
    pub(crate) fall: u32,
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
pub(crate) struct ServiceSection {
    pub(crate) proto: String,
    pub(crate) vip: IpAddr,
    pub(crate) port: u16,
    pub(crate) mode: String,
    #[serde(default = "maglev")]
    pub(crate) scheduler: String,
    #[serde(default)]
    pub(crate) hash: Option<String>,
    pub(crate) persistence_secs: Option<u64>,
    pub(crate) reals: Vec<SocketAddr>,
}

fn maglev() -> String {
    "mh".into()
}

pub(crate) fn parse_mac(s: &str) -> Result<Mac> {
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
pub(crate) fn from_harness_env() -> Result<Config> {
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
            coalesce_us: std::env::var("COALESCE_US")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            // The contract: tx checksum offload is off on the client and servers.
            unknown_checksums: "assume-complete".into(),
            offload: std::env::var("OFFLOAD").is_ok_and(|v| v == "1"),
            // DROP_TRANSIT=1 requires the filter, 0 turns it off; unset, the default (on
            // where it attaches).
            drop_transit: std::env::var("DROP_TRANSIT").ok().map(|v| v == "1"),
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
        sync: None,
        stats: None,
    })
}

pub(crate) fn fmt_mac(m: &Mac) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// `[sync]`: session replication with the other directors (slb-sync).
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(crate) struct SyncSection {
    /// This node's id (1.., unique in the cluster).
    pub(crate) node: u32,
    /// Cluster id (datagrams of other clusters are dropped).
    pub(crate) cluster: u32,
    /// Cluster secret (authenticates every datagram), or read from `secret_file`.
    pub(crate) secret: Option<String>,
    pub(crate) secret_file: Option<std::path::PathBuf>,
    /// Multicast group (default 224.0.0.81) unless `unicast` peers are listed.
    pub(crate) group: Option<IpAddr>,
    /// UDP port (default 8848).
    pub(crate) port: Option<u16>,
    /// Address of the interface that carries sync traffic (multicast source and membership).
    pub(crate) interface: Option<IpAddr>,
    /// IPv6 interface index for the group.
    #[serde(default)]
    pub(crate) ifindex: u32,
    /// Unicast instead of multicast: this node's bind address and the peers' addresses.
    pub(crate) bind: Option<SocketAddr>,
    #[serde(default)]
    pub(crate) unicast: Vec<SocketAddr>,
    /// Heartbeat period (default 250 ms) and how many may be missed (default 4).
    pub(crate) heartbeat_ms: Option<u64>,
    pub(crate) dead_after: Option<u32>,
    /// Ask peers for their tables at startup and hold back until done (default true).
    pub(crate) resync: Option<bool>,
    /// Sync threshold and period (IPVS "3 50").
    pub(crate) threshold: Option<u32>,
    pub(crate) period: Option<u32>,
    /// After SIGTERM, keep forwarding this long with sync stopped, so that peers take over the
    /// addresses first (default: the liveness timeout plus 300 ms).
    pub(crate) drain_ms: Option<u64>,
    /// Sessions the sync engine reserves room for up front (default: `director.sessions` when
    /// `director.preallocate`, else 0: grow on demand). A
    /// table that grows rehashes in one step, a pause of tens of milliseconds at hundreds of
    /// thousands of sessions that shows in the replication lag.
    pub(crate) known_capacity: Option<usize>,
    /// Address groups that move between directors (same list on every director).
    #[serde(default)]
    pub(crate) takeover: Vec<TakeoverSection>,
}

/// `[[sync.takeover]]`: addresses held by `home` while it is alive and ready, else by the
/// lowest-numbered live director (no `home`: always the lowest-numbered live director).
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(crate) struct TakeoverSection {
    pub(crate) home: Option<u32>,
    pub(crate) addresses: Vec<IpAddr>,
}

/// `[stats]`: Prometheus text over HTTP (`/metrics`; `/ready` answers 200 once ready).
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(crate) struct StatsSection {
    pub(crate) listen: SocketAddr,
    /// How often the counters are rendered (default 200 ms).
    pub(crate) every_ms: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::Config;

    /// The file `--help` prints is a configuration this program accepts, with every section.
    #[test]
    fn the_example_configuration_parses() {
        let cfg: Config = toml::from_str(include_str!("director.example.toml")).unwrap();
        assert_eq!(cfg.port.len(), 2);
        assert_eq!(cfg.service.len(), 1);
        assert!(cfg.sync.is_some() && cfg.stats.is_some() && cfg.health.is_some());
    }
}
