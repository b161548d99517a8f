//! Configuration of a [`Forwarder`](super::Forwarder): ports, routes, services, real servers.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use slb_core::flow::Protocol;
use slb_core::sched::SchedulerConfig;
use slb_core::session::TableConfig;

pub use crate::wire::{BROADCAST, Mac};

/// Index of a port (a link the forwarder sends and receives on).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortId(pub u8);

/// Index of a virtual service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceId(pub u16);

/// An address with a prefix length (`10.0.1.1/24`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    /// The address.
    pub addr: IpAddr,
    /// Prefix length.
    pub prefix: u8,
}

impl Cidr {
    /// `addr/prefix`.
    pub fn new(addr: IpAddr, prefix: u8) -> Self {
        Cidr { addr, prefix }
    }

    /// True when `ip` is inside the prefix.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                let m = mask32(self.prefix);
                u32::from(a) & m == u32::from(b) & m
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                let m = mask128(self.prefix);
                u128::from(a) & m == u128::from(b) & m
            }
            _ => false,
        }
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, p) = s.split_once('/').unwrap_or((s, ""));
        let addr: IpAddr = a.parse().map_err(|e| format!("{s}: {e}"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = if p.is_empty() { max } else { p.parse().map_err(|e| format!("{s}: {e}"))? };
        if prefix > max {
            return Err(format!("{s}: prefix longer than {max}"));
        }
        Ok(Cidr { addr, prefix })
    }
}

/// The IPv4 netmask of a prefix length.
pub fn mask32(prefix: u8) -> u32 {
    if prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(prefix.min(32))) }
}

/// The IPv6 netmask of a prefix length.
pub fn mask128(prefix: u8) -> u128 {
    if prefix == 0 { 0 } else { u128::MAX << (128 - u32::from(prefix.min(128))) }
}

/// One port (interface) of the director.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortConfig {
    /// The port's MAC: frames to other unicast MACs are ignored, frames it sends carry it.
    pub mac: Mac,
    /// The port's own addresses; their prefixes are connected routes, and ARP/NS for them are
    /// answered on this port.
    pub addrs: Vec<Cidr>,
    /// Answer ARP/NS for the virtual addresses and the FULLNAT local addresses on this port.
    pub proxy_arp: bool,
    /// IP MTU of the link (frames the forwarder would grow beyond it are not grown).
    pub mtu: usize,
}

impl PortConfig {
    /// A port with `mac`, no addresses, answering ARP for VIPs and local addresses, MTU 1500.
    pub fn new(mac: Mac) -> Self {
        PortConfig { mac, addrs: Vec::new(), proxy_arp: true, mtu: 1500 }
    }

    /// Adds an address.
    pub fn with_addr(mut self, cidr: Cidr) -> Self {
        self.addrs.push(cidr);
        self
    }
}

/// A static route: `prefix` is reached through `port`, via the gateway `via` (else on-link).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    /// Destination prefix.
    pub prefix: Cidr,
    /// Outgoing port.
    pub port: PortId,
    /// Next hop, or `None` when the destination is on-link.
    pub via: Option<IpAddr>,
}

/// How a service forwards to its real servers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Destination NAT in, source NAT out; real servers route their replies via the director.
    Nat,
    /// Both addresses replaced: the client by a local address and port from the director's pool,
    /// the VIP by the real server. The client address travels in a TOA option.
    FullNat,
    /// Direct routing: only the MAC is rewritten; real servers hold the VIP and reply directly.
    Dr,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "nat" | "masq" => Ok(Mode::Nat),
            "fullnat" | "fnat" => Ok(Mode::FullNat),
            "dr" | "route" | "direct" => Ok(Mode::Dr),
            _ => Err(format!("unknown mode {s:?} (nat, fullnat, dr)")),
        }
    }
}

/// Persistence (IPVS `-p`): new connections from one client (masked) go to the same real server
/// while its template lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Persistence {
    /// Template lifetime after the client's last new connection (IPVS default 300 s).
    pub timeout: Duration,
    /// Prefix length applied to IPv4 clients (IPVS `-M`, default 32).
    pub v4_prefix: u8,
    /// Prefix length applied to IPv6 clients (default 128).
    pub v6_prefix: u8,
}

impl Default for Persistence {
    fn default() -> Self {
        Persistence { timeout: Duration::from_secs(300), v4_prefix: 32, v6_prefix: 128 }
    }
}

/// What the hashing schedulers hash for a new flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum HashOn {
    /// The whole 5-tuple (spreads one client's flows).
    #[default]
    Flow,
    /// The client address only (IPVS `sh`: one client, one real server).
    SourceIp,
}

/// A real server of a service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RealConfig {
    /// Address; port 0 means "the port the client asked for".
    pub addr: SocketAddr,
    /// Weight (0 takes no new flows).
    pub weight: u32,
}

impl RealConfig {
    /// A real server with weight 1.
    pub fn new(addr: SocketAddr) -> Self {
        RealConfig { addr, weight: 1 }
    }
}

/// A virtual service: VIP + port + protocol (port 0: every port).
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceConfig {
    /// TCP or UDP.
    pub proto: Protocol,
    /// Virtual address.
    pub vip: IpAddr,
    /// Virtual port, 0 for all ports.
    pub port: u16,
    /// Forwarding mode.
    pub mode: Mode,
    /// Scheduler.
    pub scheduler: SchedulerConfig,
    /// Hash input for hashing schedulers.
    pub hash_on: HashOn,
    /// Persistence, if any.
    pub persistence: Option<Persistence>,
    /// Real servers.
    pub reals: Vec<RealConfig>,
}

impl ServiceConfig {
    /// A service with the given scheduler and no real servers yet.
    pub fn new(
        proto: Protocol,
        vip: IpAddr,
        port: u16,
        mode: Mode,
        sched: SchedulerConfig,
    ) -> Self {
        ServiceConfig {
            proto,
            vip,
            port,
            mode,
            scheduler: sched,
            hash_on: HashOn::Flow,
            persistence: None,
            reals: Vec::new(),
        }
    }

    /// Adds a real server with weight 1.
    pub fn with_real(mut self, addr: SocketAddr) -> Self {
        self.reals.push(RealConfig::new(addr));
        self
    }
}

/// What the forwarder does with transport checksums of frames whose link could not say whether
/// an offload left them partial ([`CsumState::Unknown`](crate::frame::CsumState)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum UnknownCsum {
    /// Check the sum before rewriting: a valid sum is updated incrementally, a partial one
    /// (only the pseudo-header sum) is recomputed fully, a wrong one is updated incrementally so
    /// that it stays wrong and the receiver drops the segment.
    #[default]
    Detect,
    /// Trust it to be complete (links that never see partial sums).
    AssumeComplete,
}

/// Forwarder-wide settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ForwarderConfig {
    /// Session table parameters (capacity, half-open bound, timeouts, hash key).
    pub table: TableConfig,
    /// Most persistence templates.
    pub persist_capacity: usize,
    /// Strict TCP (IPVS default): only a SYN creates a TCP session. When false ("sloppy"), any
    /// TCP packet but a RST to a service creates one (useful after a failover without sync).
    pub strict_tcp: bool,
    /// IPVS `expire_nodest_conn`: when a real server goes down, remove its sessions at once
    /// (their next packets are dropped and the clients see their connections die quickly).
    /// When false (IPVS default) existing sessions keep going to the server until they end.
    pub expire_nodest_conn: bool,
    /// Insert the TOA option in FULLNAT SYNs and handshake ACKs.
    pub toa: bool,
    /// Transport checksum handling when the link cannot tell.
    pub unknown_csum: UnknownCsum,
    /// Answer ICMP echo requests sent to virtual addresses.
    pub answer_ping: bool,
    /// Least time between two ARP/NS requests for one unresolved neighbour.
    pub resolve_interval: Duration,
}

impl Default for ForwarderConfig {
    fn default() -> Self {
        ForwarderConfig {
            table: TableConfig::default(),
            persist_capacity: 1 << 16,
            strict_tcp: true,
            expire_nodest_conn: false,
            toa: true,
            unknown_csum: UnknownCsum::Detect,
            answer_ping: true,
            resolve_interval: Duration::from_secs(1),
        }
    }
}
