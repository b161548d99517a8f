//! Virtual services, their real servers, scheduling with persistence, and the FULLNAT local
//! address pool.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use hashbrown::HashMap;
use slb_core::backend::{Backend, BackendId, BackendState};
use slb_core::flow::FlowKey;
use slb_core::sched::{Balancer, PickContext};
use slb_core::session::{PersistKey, PersistTable};
use slb_core::time::Instant;

use super::config::{HashOn, Mac, Mode, PortId, ServiceConfig, ServiceId, mask32, mask128};
use super::stats::{Counters, DropReason};

/// A real server as the forwarder keeps it. Its [`BackendId`] is its index in the forwarder's
/// list of real servers, unique across services.
#[derive(Debug)]
pub(crate) struct Real {
    pub(crate) svc: ServiceId,
    pub(crate) addr: SocketAddr,
    pub(crate) weight: u32,
    pub(crate) state: BackendState,
    pub(crate) stats: Counters,
    /// Outgoing port and next hop, from the routes (None: no route).
    pub(crate) route: Option<(PortId, IpAddr)>,
    /// The next hop's MAC as last resolved: (neighbour-table generation, hop, MAC).
    pub(crate) hop_mac: Option<(u64, IpAddr, Mac)>,
}

/// A virtual service.
#[derive(Debug)]
pub(crate) struct Service {
    pub(crate) cfg: ServiceConfig,
    pub(crate) reals: Vec<BackendId>,
    pub(crate) balancer: Balancer,
    pub(crate) stats: Counters,
    pub(crate) drops: [u64; DropReason::COUNT],
}

impl Service {
    pub(crate) fn mode(&self) -> Mode {
        self.cfg.mode
    }

    /// Backends for the balancer from the real servers' current settings.
    pub(crate) fn backends(&self, reals: &[Real]) -> Vec<Backend> {
        self.reals
            .iter()
            .map(|&id| {
                let r = &reals[id.0 as usize];
                Backend::new(id, r.addr).with_weight(r.weight).with_state(r.state)
            })
            .collect()
    }

    /// Chooses a real server for the new flow `key` (persistence first, then the scheduler).
    pub(crate) fn schedule(
        &self,
        key: &FlowKey,
        persist: &mut PersistTable,
        now: Instant,
    ) -> Result<BackendId, DropReason> {
        let pkey = self.cfg.persistence.map(|p| PersistKey {
            proto: key.proto,
            client: mask(key.src, p.v4_prefix, p.v6_prefix),
            vip: key.dst,
            vport: self.cfg.port,
        });
        let sched = self.balancer.scheduler();
        if let (Some(pk), Some(p)) = (pkey.as_ref(), self.cfg.persistence)
            && let Some(id) = persist.get(pk, now, p.timeout)
        {
            let set = sched.backends();
            if set.index_of(id).is_some_and(|i| set.is_usable(i)) {
                return Ok(id);
            }
            persist.remove(pk);
        }
        let hk = self.cfg.scheduler.hash_key;
        let hash = match self.cfg.hash_on {
            HashOn::Flow => hk.hash_flow(key),
            HashOn::SourceIp => hk.hash_ip(key.src),
        };
        let ctx = PickContext { flow: Some(key), hash: Some(hash), now, load: None };
        let id = sched.pick(&ctx).map_err(|_| DropReason::NoBackend)?.id();
        if let (Some(pk), Some(p)) = (pkey, self.cfg.persistence) {
            persist.set(pk, id, now, p.timeout);
        }
        Ok(id)
    }
}

/// Applies a persistence netmask.
fn mask(ip: IpAddr, v4: u8, v6: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask32(v4))),
        IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask128(v6))),
    }
}

/// Key of the service lookup: protocol number, VIP, port (0 = all ports).
pub(crate) type SvcKey = (u8, IpAddr, u16);

/// The services and how to find them.
#[derive(Debug, Default)]
pub(crate) struct Services {
    pub(crate) list: Vec<Service>,
    pub(crate) by_key: HashMap<SvcKey, ServiceId>,
    /// A one-word filter of the services' addresses: bit [`vip_bit`] of each is set. A packet
    /// whose destination's bit is clear is sent to no service, so no session has its flow key
    /// as forward key (services are never removed, and every session's forward key is to a
    /// service: a new flow's, or one a peer installed, checked against them).
    pub(crate) vip_filter: u64,
}

/// The bit of `ip` in [`Services::vip_filter`].
#[inline]
fn vip_bit(ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(a) => vip_bit_of(u64::from(a.to_bits())),
        IpAddr::V6(a) => {
            let b = a.to_bits();
            vip_bit_of((b as u64) ^ ((b >> 64) as u64))
        }
    }
}

#[inline(always)]
fn vip_bit_of(folded: u64) -> u64 {
    1 << (folded.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 58)
}

impl Services {
    /// Adds a service (under `key`, as `sid`).
    pub(crate) fn add(&mut self, key: SvcKey, sid: ServiceId, svc: Service) {
        self.vip_filter |= vip_bit(key.1);
        self.by_key.insert(key, sid);
        self.list.push(svc);
    }

    /// False when no service has address `ip` (true may be a false positive).
    #[inline]
    pub(crate) fn may_be_vip(&self, ip: IpAddr) -> bool {
        self.vip_filter & vip_bit(ip) != 0
    }

    /// [`Services::may_be_vip`] of the IPv4 address `ip` (host order, as parsed).
    #[inline(always)]
    pub(crate) fn may_be_vip4(&self, ip: u32) -> bool {
        self.vip_filter & vip_bit_of(u64::from(ip)) != 0
    }

    /// The service for a new flow to `dst:dport` (exact port first, then all-ports).
    #[inline]
    pub(crate) fn find(&self, proto: u8, dst: IpAddr, dport: u16) -> Option<ServiceId> {
        self.by_key.get(&(proto, dst, dport)).or_else(|| self.by_key.get(&(proto, dst, 0))).copied()
    }
}

/// FULLNAT's local addresses and ports (5000-65535), per node.
#[derive(Debug, Default)]
pub(crate) struct LocalPool {
    pub(crate) v4: Vec<IpAddr>,
    pub(crate) v6: Vec<IpAddr>,
    cursor: u32,
}

/// First local port handed out.
pub(crate) const LPORT_MIN: u16 = 5000;
const LPORT_SPAN: u32 = 65535 - LPORT_MIN as u32 + 1;
/// Ports tried per local address before giving up on it.
pub(crate) const LPORT_TRIES: usize = 64;

impl LocalPool {
    pub(crate) fn add(&mut self, ip: IpAddr) {
        let list = if ip.is_ipv4() { &mut self.v4 } else { &mut self.v6 };
        if !list.contains(&ip) {
            list.push(ip);
        }
    }

    /// The `attempt`-th candidate (local address, port) for a new flow: `LPORT_TRIES` ports per
    /// address, starting at an address chosen by `hash`; None when all were tried.
    pub(crate) fn candidate(
        &mut self,
        v6: bool,
        hash: u64,
        attempt: usize,
    ) -> Option<(IpAddr, u16)> {
        let list = if v6 { &self.v6 } else { &self.v4 };
        let n = list.len();
        if attempt >= n * LPORT_TRIES {
            return None;
        }
        let ip = list[(hash as usize).wrapping_add(attempt / LPORT_TRIES) % n];
        self.cursor = self.cursor.wrapping_add(1);
        Some((ip, LPORT_MIN + (self.cursor % LPORT_SPAN) as u16))
    }
}
