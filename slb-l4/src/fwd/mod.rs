//! The forwarder: a pure step from a received frame to a verdict, rewriting the frame in place.
//!
//! ```text
//!   process(now, frame, port)
//!     ARP / NS for our addresses, VIPs, local addresses   -> Reply (frame rewritten as the answer)
//!     TCP/UDP with a session (forward or reverse key)     -> rewrite per mode -> Forward(port)
//!     TCP SYN / UDP to a service, no session              -> schedule, insert session, rewrite
//!     ICMP error about a known flow                       -> relay, embedded header rewritten too
//!     next hop unknown                                    -> Solicit(port) (frame now an ARP/NS)
//!     anything else                                       -> Host, or Drop(reason), counted
//! ```
//!
//! The forwarder reads no clock and does no I/O: time is the `now` argument, links are drivers.
//!
//! ## Policies
//! - **TCP sessions** are created only by a SYN (strict, as IPVS) unless
//!   [`ForwarderConfig::strict_tcp`] is off ("sloppy": any non-RST segment); UDP sessions by the
//!   first datagram. IPVS's TCP state machine ([`tcp_transition`](slb_core::session::tcp_transition)) drives the idle timeouts; a
//!   SYN on a finished session (TIME_WAIT, CLOSE) removes it and schedules afresh.
//! - **Fragments** (IPv4 with MF or an offset, IPv6 with a fragment header) addressed to a VIP or
//!   a local address are dropped and counted ([`DropReason::Fragment`]); the director never
//!   reassembles, so fragments cost no memory. TCP avoids fragments by path MTU discovery (whose
//!   ICMP errors are relayed); UDP services must keep datagrams within the MTU. Fragments to other
//!   addresses are left to the host.
//! - **TTL**: NAT and FULLNAT decrement it (and drop at 1, counted); DR forwards at layer 2 and
//!   leaves it alone.
//! - **Checksums** are updated incrementally (RFC 1624). A transport checksum that a transmit
//!   offload left partial is recomputed fully: links that can tell say so in
//!   [`FrameMeta`](crate::frame::FrameMeta), otherwise the forwarder detects it
//!   ([`UnknownCsum::Detect`]). Grown segments (TOA) are recomputed fully.
//! - **TOA** (FULLNAT): inserted in the client's SYN and in the ACK that completes the handshake
//!   (the one Alibaba's TOA kernel module reads), never in later segments, so sequence numbers and
//!   data segments are untouched. The client's SYN MSS and the server's SYN-ACK MSS are lowered
//!   by the option's length so that neither side fills a segment the option could not join. When
//!   the option does not fit (40 bytes of options used, or the link MTU), the segment goes without
//!   it and [`GlobalStats::toa_skipped`] counts it.
//! - **Real server down** (health checks): it takes no new flows. Existing sessions keep going to
//!   it (IPVS default) unless [`ForwarderConfig::expire_nodest_conn`] is on, which removes them at
//!   once; their next packets are then dropped (strict TCP) or rescheduled (UDP).
//! - **SYN floods** only ever displace other half-open sessions (see slb-core's session table).

mod batch;
mod config;
mod fast;
mod icmp;
mod neigh;
mod offload;
mod process;
mod rewrite;
mod service;
mod stats;
mod sync;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use hashbrown::HashMap;
use slb_core::backend::{BackendId, BackendState, SetError};
use slb_core::flow::Protocol;
use slb_core::sched::Balancer;
use slb_core::session::{PersistTable, SessionTable, SessionView};
use slb_core::time::Instant;

pub use config::{
    BROADCAST, Cidr, ForwarderConfig, HashOn, Mac, Mode, Persistence, PortConfig, PortId,
    RealConfig, Route, ServiceConfig, ServiceId, UnknownCsum, mask32, mask128,
};
pub use stats::{Counters, DropReason, GlobalStats, StatsReport};
pub use sync::{
    ChangeFilter, InstallError, Installed, PEER_SESSION, SessionChange, SessionInstall,
    SyncCounters,
};

use crate::frame::FrameBuf;
use service::{LocalPool, Real, Service, Services};

/// What to do with a frame after [`Forwarder::process`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Send the rewritten frame on this port (its MACs are set).
    Forward(PortId),
    /// The frame now holds a reply (ARP reply, neighbour advertisement, echo reply): send it on
    /// this port, the one it came from.
    Reply(PortId),
    /// The next hop's MAC is unknown: the buffer now holds an ARP request or neighbour
    /// solicitation for it, to send on this port. The original frame is held until the
    /// neighbour answers ([`Forwarder::poll_transmit`] releases it), or was dropped and counted
    /// as [`DropReason::NoNeighbour`] when the hold queues were full.
    Solicit(PortId),
    /// The frame is held until its next hop resolves (a solicitation is already out);
    /// [`Forwarder::poll_transmit`] releases it.
    Held,
    /// Not the director's business: the host stack may have it (AF_PACKET links: the kernel
    /// already got its own copy, so do nothing).
    Host,
    /// Dropped, and counted under this reason.
    Drop(DropReason),
}

/// The forwarder's per-session data, stored in the session table (16 bytes: with the session
/// and its forward key, one cache line).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionData {
    /// MAC of the client-side next hop (the source MAC of the client's last frame); all zero
    /// when unknown (e.g. a session installed by sync), then the routes are used.
    pub client_mac: Mac,
    /// Port the client's frames arrive on.
    pub client_port: u8,
    /// Bits: [`REV_SRC_IS_REAL`], [`LOCAL_IN_DATA`]; the others are free.
    pub flags: u8,
    /// The service.
    pub svc: u16,
    /// With [`LOCAL_IN_DATA`]: the IPv4 local address of a FULLNAT session (the reverse key's
    /// destination), so that an inbound packet takes its new source from here, not from the
    /// reverse key in another cache line. Zero otherwise.
    pub local_ip: [u8; 4],
    /// With [`LOCAL_IN_DATA`]: the local port (the reverse key's destination port).
    pub local_port: u16,
}

impl SessionData {
    /// Records a FULLNAT session's local address and port when they fit (IPv4), setting
    /// [`LOCAL_IN_DATA`]; an IPv6 one stays in the reverse key alone.
    pub fn set_local(&mut self, ip: IpAddr, port: u16) {
        if let IpAddr::V4(v4) = ip {
            self.local_ip = v4.octets();
            self.local_port = port;
            self.flags |= LOCAL_IN_DATA;
        }
    }

    /// The local address and port recorded by [`SessionData::set_local`], if any.
    #[inline]
    pub fn local(&self) -> Option<(IpAddr, u16)> {
        (self.flags & LOCAL_IN_DATA != 0)
            .then(|| (IpAddr::V4(Ipv4Addr::from(self.local_ip)), self.local_port))
    }
}

/// [`SessionData::flags`] bit: the session's reverse key has the real server's address as its
/// source, with the real's port (or, for a real of port 0, the forward key's destination port),
/// so that an inbound NAT packet finds its new destination in the real server's record without
/// reading the reverse key.
pub const REV_SRC_IS_REAL: u8 = 0x01;

/// [`SessionData::flags`] bit: [`SessionData::local_ip`] and [`SessionData::local_port`] hold
/// the FULLNAT session's local address and port (its reverse key's destination). With
/// [`REV_SRC_IS_REAL`], an inbound FULLNAT packet reads no reverse key.
pub const LOCAL_IN_DATA: u8 = 0x02;

/// Why a configuration call failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// A service with the same protocol, VIP and port exists.
    #[error("duplicate service")]
    DuplicateService,
    /// Only TCP and UDP services exist.
    #[error("services are TCP or UDP")]
    BadProtocol,
    /// A real server's address family differs from the VIP's.
    #[error("real server {0} is not of the VIP's address family")]
    FamilyMismatch(SocketAddr),
    /// FULLNAT needs a local address of the VIP's family.
    #[error("FULLNAT service without a local address of its family")]
    NoLocalAddress,
    /// Too many ports, services or real servers.
    #[error("too many {0}")]
    TooMany(&'static str),
    /// Unknown real server or service id.
    #[error("unknown id")]
    UnknownId,
    /// The backend set was refused.
    #[error(transparent)]
    Set(#[from] SetError),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Owned {
    Vip,
    Local,
}

#[derive(Debug)]
struct Port {
    cfg: PortConfig,
}

/// The L4 forwarding step. Single-threaded: one per forwarding core.
#[derive(Debug)]
pub struct Forwarder {
    cfg: ForwarderConfig,
    ports: Vec<Port>,
    routes: Vec<Route>,
    services: Services,
    reals: Vec<Real>,
    table: SessionTable<SessionData>,
    persist: PersistTable,
    laddrs: LocalPool,
    owned: HashMap<IpAddr, Owned>,
    neigh: neigh::Neighbours,
    stats: GlobalStats,
    sync: sync::SyncHooks,
}

impl Forwarder {
    /// A forwarder with no ports, routes or services.
    pub fn new(cfg: ForwarderConfig) -> Self {
        Forwarder {
            table: SessionTable::new(cfg.table),
            persist: PersistTable::new(cfg.persist_capacity),
            cfg,
            ports: Vec::new(),
            routes: Vec::new(),
            services: Services::default(),
            reals: Vec::new(),
            laddrs: LocalPool::default(),
            owned: HashMap::new(),
            neigh: neigh::Neighbours::default(),
            stats: GlobalStats::default(),
            sync: sync::SyncHooks::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ForwarderConfig {
        &self.cfg
    }

    /// Adds a port; its addresses become connected routes.
    pub fn add_port(&mut self, cfg: PortConfig) -> Result<PortId, ConfigError> {
        let id = u8::try_from(self.ports.len()).map_err(|_| ConfigError::TooMany("ports"))?;
        self.ports.push(Port { cfg });
        self.reroute();
        Ok(PortId(id))
    }

    /// Adds a static route (longest prefix wins; connected routes of port addresses exist
    /// implicitly).
    pub fn add_route(&mut self, route: Route) {
        self.routes.push(route);
        self.reroute();
    }

    /// Adds a static neighbour entry (never overwritten by what the forwarder learns).
    pub fn add_neighbour(&mut self, ip: IpAddr, mac: Mac) {
        self.neigh.set_static(ip, mac);
    }

    /// Neighbour entries: address, MAC, static.
    pub fn neighbours(&self) -> Vec<(IpAddr, Mac, bool)> {
        self.neigh.entries().collect()
    }

    /// Adds a FULLNAT local address (the pool is per node; ports 5000-65535 of each).
    pub fn add_local_addr(&mut self, ip: IpAddr) {
        self.laddrs.add(ip);
        self.owned.insert(ip, Owned::Local);
    }

    /// Adds a virtual service with its real servers.
    pub fn add_service(&mut self, cfg: ServiceConfig) -> Result<ServiceId, ConfigError> {
        if !matches!(cfg.proto, Protocol::Tcp | Protocol::Udp) {
            return Err(ConfigError::BadProtocol);
        }
        let key = (cfg.proto.number(), cfg.vip, cfg.port);
        if self.services.by_key.contains_key(&key) {
            return Err(ConfigError::DuplicateService);
        }
        if let Some(r) = cfg.reals.iter().find(|r| r.addr.is_ipv4() != cfg.vip.is_ipv4()) {
            return Err(ConfigError::FamilyMismatch(r.addr));
        }
        if cfg.mode == Mode::FullNat
            && (if cfg.vip.is_ipv4() { &self.laddrs.v4 } else { &self.laddrs.v6 }).is_empty()
        {
            return Err(ConfigError::NoLocalAddress);
        }
        let sid = ServiceId(
            u16::try_from(self.services.list.len())
                .map_err(|_| ConfigError::TooMany("services"))?,
        );
        let mut ids = Vec::new();
        for r in &cfg.reals {
            let id = BackendId(
                u32::try_from(self.reals.len()).map_err(|_| ConfigError::TooMany("reals"))?,
            );
            self.reals.push(Real {
                svc: sid,
                addr: r.addr,
                weight: r.weight,
                state: BackendState::Up,
                stats: Counters::default(),
                route: None,
                hop_mac: None,
            });
            ids.push(id);
        }
        let svc = Service {
            balancer: Balancer::with_registry(
                cfg.scheduler,
                Default::default(),
                Vec::new(),
                self.table.registry().clone(),
            )?,
            cfg,
            reals: ids,
            stats: Counters::default(),
            drops: [0; DropReason::COUNT],
        };
        svc.balancer.update(svc.backends(&self.reals), Instant::ZERO)?;
        self.owned.insert(svc.cfg.vip, Owned::Vip);
        self.services.add(key, sid, svc);
        self.reroute();
        Ok(sid)
    }

    /// Real servers: id, service, address, state.
    pub fn reals(&self) -> Vec<(BackendId, ServiceId, SocketAddr, BackendState)> {
        self.reals
            .iter()
            .enumerate()
            .map(|(i, r)| (BackendId(i as u32), r.svc, r.addr, r.state))
            .collect()
    }

    /// Sets a real server's state (health checks: `Up`/`Down`; operators: `Draining`,
    /// `Disabled`). A server that is not `Up` takes no new flows; see the module docs for what
    /// happens to its existing sessions. Returns how many sessions were removed.
    pub fn set_real_state(
        &mut self,
        id: BackendId,
        state: BackendState,
        now: Instant,
    ) -> Result<usize, ConfigError> {
        let r = self.reals.get_mut(id.0 as usize).ok_or(ConfigError::UnknownId)?;
        if r.state == state {
            return Ok(0);
        }
        r.state = state;
        let sid = r.svc;
        let svc = &self.services.list[sid.0 as usize];
        svc.balancer.update(svc.backends(&self.reals), now)?;
        if state == BackendState::Up {
            return Ok(0);
        }
        self.persist.remove_backend(id);
        if self.cfg.expire_nodest_conn {
            return Ok(self.table.remove_backend(id));
        }
        Ok(0)
    }

    /// Sets a real server's weight (0: no new flows).
    pub fn set_real_weight(
        &mut self,
        id: BackendId,
        weight: u32,
        now: Instant,
    ) -> Result<(), ConfigError> {
        let r = self.reals.get_mut(id.0 as usize).ok_or(ConfigError::UnknownId)?;
        r.weight = weight;
        let svc = &self.services.list[r.svc.0 as usize];
        svc.balancer.update(svc.backends(&self.reals), now)?;
        Ok(())
    }

    /// The session table (read-only).
    pub fn sessions(&self) -> &SessionTable<SessionData> {
        &self.table
    }

    /// The session table, for sync and tests. A session inserted here must have a forward key
    /// to one of the forwarder's services, as those it creates do: the batch step looks the
    /// packets to other addresses up by reverse key alone.
    pub fn sessions_mut(&mut self) -> &mut SessionTable<SessionData> {
        &mut self.table
    }

    /// Every session with its keys.
    pub fn session_views(&self) -> impl Iterator<Item = SessionView<'_, SessionData>> + '_ {
        self.table.iter()
    }

    /// Housekeeping a driver calls regularly: expires at most `budget` session slots (an
    /// incremental sweep) and, every call, expired persistence templates. Returns sessions
    /// removed.
    pub fn expire(&mut self, now: Instant, budget: usize) -> usize {
        self.persist.expire(now);
        let lost = self.neigh.expire_held(now);
        self.stats.drops[DropReason::NoNeighbour.index()] += lost as u64;
        if !self.sync.reporting() {
            return self.table.expire(now, budget);
        }
        // Replication on: removals of locally owned sessions are reported.
        let mut gone = Vec::new();
        let (reals, services) = (&self.reals, &self.services);
        let n = self.table.expire_with(now, budget, |v| {
            if v.session.flags & PEER_SESSION == 0 {
                gone.push(sync::change_of(&v, reals, services, true));
            }
        });
        for c in gone {
            self.sync.push(c);
        }
        n
    }

    /// A frame ready to send that [`Forwarder::process`] did not return: held frames whose next
    /// hop has resolved. Drivers call this after processing (it is cheap when there is none)
    /// and send the frame on the returned port.
    pub fn poll_transmit(&mut self, buf: &mut FrameBuf) -> Option<PortId> {
        let (port, frame) = self.neigh.pop_released()?;
        buf.fill(&frame);
        self.stats.forwarded += 1;
        Some(PortId(port))
    }

    /// Forwarder-wide counters.
    pub fn stats(&self) -> &GlobalStats {
        &self.stats
    }

    /// Counters of one service and of its real servers (in configuration order).
    pub fn service_stats(&self, sid: ServiceId) -> Option<(Counters, Vec<Counters>)> {
        let s = self.services.list.get(sid.0 as usize)?;
        Some((s.stats, s.reals.iter().map(|id| self.reals[id.0 as usize].stats).collect()))
    }

    /// A snapshot of every counter, printable as `ipvsadm --stats` or Prometheus text.
    pub fn report(&self) -> StatsReport {
        let services = self
            .services
            .list
            .iter()
            .map(|s| {
                let label = stats::ServiceLabel {
                    proto: match s.cfg.proto {
                        Protocol::Udp => "UDP",
                        _ => "TCP",
                    },
                    vip: SocketAddr::new(s.cfg.vip, s.cfg.port).to_string(),
                    reals: s
                        .reals
                        .iter()
                        .map(|id| self.reals[id.0 as usize].addr.to_string())
                        .collect(),
                };
                let reals = s.reals.iter().map(|id| self.reals[id.0 as usize].stats).collect();
                (label, s.stats, s.drops, reals)
            })
            .collect();
        StatsReport { services, global: self.stats.clone(), sessions: self.table.len() }
    }

    /// Gratuitous ARPs (IPv4) and unsolicited neighbour advertisements (IPv6) for every VIP
    /// and local address, on every port that answers for them: what a node sends when it takes
    /// over (so that neighbours update their caches at once).
    pub fn announcements(&self) -> Vec<(PortId, FrameBuf)> {
        let mut out = Vec::new();
        let mut addrs: Vec<IpAddr> = self.owned.keys().copied().collect();
        addrs.sort();
        for (i, p) in self.ports.iter().enumerate() {
            if !p.cfg.proxy_arp {
                continue;
            }
            for ip in addrs.iter().filter(|ip| !self.sync.quiet(ip)) {
                let mut b = FrameBuf::default();
                neigh::announcement(&mut b, p.cfg.mac, *ip);
                out.push((PortId(i as u8), b));
            }
        }
        out
    }

    /// The route to `ip`: outgoing port and next hop (the gateway, or `ip` when on-link).
    pub fn route(&self, ip: IpAddr) -> Option<(PortId, IpAddr)> {
        let mut best: Option<(u8, PortId, IpAddr)> = None;
        for (i, p) in self.ports.iter().enumerate() {
            for c in &p.cfg.addrs {
                if c.contains(ip) && best.is_none_or(|b| c.prefix > b.0) {
                    best = Some((c.prefix, PortId(i as u8), ip));
                }
            }
        }
        for r in &self.routes {
            if r.prefix.contains(ip) && best.is_none_or(|b| r.prefix.prefix > b.0) {
                best = Some((r.prefix.prefix, r.port, r.via.unwrap_or(ip)));
            }
        }
        best.map(|(_, p, h)| (p, h))
    }

    fn reroute(&mut self) {
        let routes: Vec<_> = self.reals.iter().map(|r| self.route(r.addr.ip())).collect();
        for (r, route) in self.reals.iter_mut().zip(routes) {
            r.route = route;
        }
    }

    /// The MAC of port `p`.
    pub fn port_mac(&self, p: PortId) -> Option<Mac> {
        self.ports.get(p.0 as usize).map(|p| p.cfg.mac)
    }

    #[inline]
    fn count_drop(&mut self, r: DropReason, svc: Option<u16>) -> Verdict {
        self.stats.drops[r.index()] += 1;
        if let Some(s) = svc.and_then(|s| self.services.list.get_mut(usize::from(s))) {
            s.drops[r.index()] += 1;
        }
        Verdict::Drop(r)
    }
}

#[cfg(test)]
mod tests;
