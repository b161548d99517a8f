//! [`FlowOffload`]: the XDP flow cache. Established flows are forwarded by the XDP program of
//! the [`XdpLink`](super::XdpLink)s themselves, without leaving the kernel: no AF_XDP copy, no
//! user-space pass, no socket buffer built for the transmit. User space keeps every decision:
//! it schedules new flows, tracks TCP state, expires sessions and counts, and it fills the
//! cache only with rewrites it has already applied.
//!
//! ```text
//!   frame of a known flow, no SYN/FIN/RST -> XDP: rewrite, count, bpf_redirect(egress)
//!   anything else -> AF_XDP -> process_batch -> steady? learn (key, rewrite) from the frame
//!                                                        before and after its step
//!                                               not steady and cached? forget the flow
//!   housekeeping (driver), each cached flow once per `cycle` -> Forwarder::offload_refresh
//!     with its counters: keeps the session alive, counts for the service and real; forgets
//!     flows the forwarder no longer calls steady, and every flow after `max_age` (new MACs)
//! ```
//! A cached rewrite is derived from one frame before and after the step, and checked before
//! it is cached: the program's checksum arithmetic applied to the frame before must give the
//! checksums the step wrote ([`derive`]), so the program can only replay what the step did.
//! Requires complete transport checksums on arrival (the program updates them incrementally):
//! the forwarder marks frames steady only when their sums are known, or configured, to be
//! complete (`UnknownCsum::AssumeComplete` for the XDP links, which cannot tell). With a
//! cluster, the packets the sync reports (state changes, the sync filter's counts) are not
//! steady and keep coming through user space, and the cached traffic reported back through
//! [`Forwarder::offload_refresh`] sends the periodic resyncs its packets would have sent.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use slb_core::flow::{FlowKey, Protocol};
use slb_core::session::ConnState;
use slb_core::time::Instant;

use super::sys::bpf::{MAP_HASH, Map};
use super::xdp_prog::{flow_key as k, flow_value as v};
use crate::frame::FrameBuf;
use crate::fwd::{Forwarder, Verdict};
use crate::wire::csum;

/// The flow map the XDP programs of the links that share it read: give a clone to every
/// [`XdpConfig`](super::XdpConfig) and to the director
/// ([`Director::with_offload`](crate::driver::Director::with_offload)).
#[derive(Clone, Debug)]
pub struct FlowOffload {
    map: Arc<Map>,
    capacity: u32,
}

impl FlowOffload {
    /// A cache of at most `capacity` flows (each direction of a session is one flow). Needs
    /// root (CAP_BPF).
    pub fn new(capacity: u32) -> io::Result<Self> {
        let map = Map::create(MAP_HASH, k::LEN as u32, v::LEN as u32, capacity.max(1))?;
        Ok(FlowOffload { map: Arc::new(map), capacity: capacity.max(1) })
    }

    /// The map's descriptor, for the programs.
    pub(crate) fn fd(&self) -> std::os::fd::RawFd {
        self.map.fd()
    }

    /// Flows it can hold.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }
}

/// Bytes of a frame kept from before its step: Ethernet, IPv4 and the first 20 bytes of TCP.
pub(crate) const SNAP: usize = 54;

/// The head of a frame before its step.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Snap {
    head: [u8; SNAP],
    len: usize,
}

impl Default for Snap {
    fn default() -> Self {
        Snap { head: [0; SNAP], len: 0 }
    }
}

impl Snap {
    /// Copies the head of `f`.
    pub(crate) fn take(&mut self, f: &FrameBuf) {
        let d = f.as_slice();
        let n = d.len().min(SNAP);
        self.head[..n].copy_from_slice(&d[..n]);
        self.len = d.len();
    }
}

/// Why a steady frame's rewrite was not cached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Not IPv4 TCP/UDP without options and fragments, or too short.
    Shape,
    /// The step changed more than the program can replay (length, protocol, TTL by more than
    /// one, TCP flags).
    Change,
    /// The program's checksum arithmetic does not reproduce the step's checksums.
    Checksum,
}

fn word(b: &[u8], at: usize) -> u32 {
    u32::from(u16::from_ne_bytes([b[at], b[at + 1]]))
}

/// The one's-complement change (RFC 1624) from the 16-bit words of `old` to those of `new` at
/// `ranges` (in the byte order of memory, as the program loads them): `sum(~old + new)`.
fn delta(old: &[u8], new: &[u8], ranges: &[(usize, usize)]) -> u32 {
    let mut s = 0u32;
    for &(from, to) in ranges {
        for at in (from..to).step_by(2) {
            s += (!word(old, at) & 0xffff) + word(new, at);
        }
    }
    // At most 8 words of at most 0x1fffe each: two folds carry everything.
    u32::from(csum::fold(s))
}

/// What the program computes for a checksum `c` and a delta `d` (both at most 0xffff).
fn apply(c: u32, d: u32) -> u32 {
    let x = (c ^ 0xffff) + d;
    ((x & 0xffff) + (x >> 16)) ^ 0xffff
}

/// The flow key of an IPv4 TCP/UDP frame head (no options, not a fragment).
pub(crate) fn key_of(h: &[u8]) -> Option<[u8; k::LEN]> {
    if h.len() < 38 || h[12..14] != [0x08, 0x00] || h[14] != 0x45 || h[20] & 0x3f != 0 || h[21] != 0
    {
        return None;
    }
    let proto = h[23];
    if proto != 6 && proto != 17 {
        return None;
    }
    let mut key = [0u8; k::LEN];
    key[k::SRC..k::SRC + 12].copy_from_slice(&h[26..38]);
    key[k::PROTO] = proto;
    Some(key)
}

/// The cache entry that replays the step's rewrite of `before` (a frame head and its length)
/// into `after` on later frames of the same flow, sent out of interface `ifindex`.
pub(crate) fn derive(
    before: &[u8],
    before_len: usize,
    after: &[u8],
    ifindex: u32,
) -> Result<([u8; k::LEN], [u8; v::LEN]), Refusal> {
    let key = key_of(before).ok_or(Refusal::Shape)?;
    if key_of(after).is_none() {
        return Err(Refusal::Shape);
    }
    let tcp = before[23] == 6;
    let (l4_len, sum_at) = if tcp { (20, 50) } else { (8, 40) };
    if before_len < 34 + l4_len || before.len() < 34 + l4_len || after.len() < 34 + l4_len {
        return Err(Refusal::Shape);
    }
    let ttl_dec = match before[22].checked_sub(after[22]) {
        Some(0) => false,
        Some(1) => true,
        _ => return Err(Refusal::Change),
    };
    if before_len != after.len()
        || after[23] != before[23]
        || after[16..18] != before[16..18]
        || (tcp && (before[47] & 0x07 != 0 || after[47] != before[47]))
    {
        return Err(Refusal::Change);
    }
    // The IPv4 header: addresses, and the TTL's word when it drops.
    let mut ip_words = vec![(26, 34)];
    if ttl_dec {
        ip_words.push((22, 24));
    }
    let d_ip = delta(before, after, &ip_words);
    if apply(word(before, 24), d_ip) != word(after, 24) {
        return Err(Refusal::Checksum);
    }
    // The transport sum covers the addresses (pseudo-header) and the ports.
    let d_l4 = delta(before, after, &[(26, 38)]);
    let (b, a) = (word(before, sum_at), word(after, sum_at));
    let replayed = match (tcp, b) {
        (false, 0) => 0,
        (false, _) => match apply(b, d_l4) {
            0 => 0xffff,
            s => s,
        },
        (true, _) => apply(b, d_l4),
    };
    if replayed != a {
        return Err(Refusal::Checksum);
    }
    let mut val = [0u8; v::LEN];
    val[v::MACS..v::MACS + 12].copy_from_slice(&after[0..12]);
    val[v::ADDRS..v::ADDRS + 8].copy_from_slice(&after[26..34]);
    val[v::PORTS..v::PORTS + 4].copy_from_slice(&after[34..38]);
    val[v::IP_DELTA..v::IP_DELTA + 4].copy_from_slice(&d_ip.to_ne_bytes());
    val[v::L4_DELTA..v::L4_DELTA + 4].copy_from_slice(&d_l4.to_ne_bytes());
    val[v::IFINDEX..v::IFINDEX + 4].copy_from_slice(&ifindex.to_ne_bytes());
    let flags = if ttl_dec { v::TTL_DEC } else { 0 };
    val[v::FLAGS..v::FLAGS + 4].copy_from_slice(&flags.to_ne_bytes());
    Ok((key, val))
}

/// The forwarder's flow key of a cache key.
fn flow_key(key: &[u8; k::LEN]) -> FlowKey {
    let a = |at: usize| std::net::Ipv4Addr::new(key[at], key[at + 1], key[at + 2], key[at + 3]);
    let p = |at: usize| u16::from_be_bytes([key[at], key[at + 1]]);
    let proto = if key[k::PROTO] == 6 { Protocol::Tcp } else { Protocol::Udp };
    FlowKey::v4(proto, a(k::SRC), p(k::PORTS), a(k::DST), p(k::PORTS + 2))
}

/// Settings of the driver's flow cache upkeep.
#[derive(Clone, Copy, Debug)]
pub struct OffloadConfig {
    /// A cached flow is forgotten after this long even if it stays steady, and relearned from
    /// its next frame through user space, so that new neighbour MACs or routes take effect.
    pub max_age: Duration,
    /// Every cached flow is examined (its traffic reported, its session refreshed) at least
    /// this often; the driver shortens it to a quarter of the forwarder's shortest steady
    /// timeout (UDP, TCP established) if that is less. The rounds spread the flows evenly.
    pub cycle: Duration,
    /// Most cached flows examined per housekeeping round (each costs a map lookup).
    pub scan_budget: usize,
}

impl Default for OffloadConfig {
    fn default() -> Self {
        OffloadConfig {
            max_age: Duration::from_secs(30),
            cycle: Duration::from_secs(10),
            scan_budget: 4096,
        }
    }
}

/// Counters of the flow cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OffloadStats {
    /// Flows in the cache now.
    pub flows: u64,
    /// Flows cached.
    pub learned: u64,
    /// Flows forgotten (session changed or gone, or aged out).
    pub forgotten: u64,
    /// Steady frames whose rewrite was not cached (shape, change or checksum check).
    pub refused: u64,
    /// Flows not cached because the map was full or refused the update.
    pub full: u64,
    /// Packets the programs forwarded (as of the last scan).
    pub packets: u64,
    /// Their IP bytes.
    pub bytes: u64,
}

struct Tracked {
    key: [u8; k::LEN],
    packets: u64,
    bytes: u64,
    since: Instant,
}

/// The driver's side of the cache: learns flows from processed batches and keeps the cache in
/// step with the session table.
pub(crate) struct Offloader {
    cache: FlowOffload,
    /// The interface index of each port's link, if it has one.
    ifindex: Vec<Option<u32>>,
    cfg: OffloadConfig,
    flows: Vec<Tracked>,
    index: HashMap<[u8; k::LEN], usize>,
    cursor: usize,
    /// When the last scan round ran.
    last_scan: Option<Instant>,
    stats: OffloadStats,
}

impl Offloader {
    pub(crate) fn new(cache: FlowOffload, ifindex: Vec<Option<u32>>, cfg: OffloadConfig) -> Self {
        Offloader {
            cache,
            ifindex,
            cfg,
            flows: Vec::new(),
            index: HashMap::new(),
            cursor: 0,
            last_scan: None,
            stats: OffloadStats::default(),
        }
    }

    pub(crate) fn stats(&self) -> OffloadStats {
        OffloadStats { flows: self.flows.len() as u64, ..self.stats }
    }

    /// After a batch: caches the steady rewrites of flows not cached yet, and forgets cached
    /// flows that had a frame through user space that was not steady (SYN, FIN, RST, a new
    /// session on the same ports), reporting their last traffic first.
    pub(crate) fn observe(
        &mut self,
        fwd: &mut Forwarder,
        now: Instant,
        before: &[Snap],
        after: &[FrameBuf],
        verdicts: &[Verdict],
    ) {
        for ((b, f), v) in before.iter().zip(after).zip(verdicts) {
            let head = &b.head[..b.len.min(SNAP)];
            let Some(key) = key_of(head) else { continue };
            let cached = self.index.get(&key).copied();
            match (*v, f.meta.steady, cached) {
                (Verdict::Forward(out), true, None) => {
                    let Some(Some(ifindex)) = self.ifindex.get(usize::from(out.0)) else {
                        continue;
                    };
                    match derive(head, b.len, f.as_slice(), *ifindex) {
                        Ok((key, val)) => self.insert(now, key, &val),
                        Err(_) => self.stats.refused += 1,
                    }
                }
                (_, false, Some(i)) => {
                    self.report(fwd, now, i);
                    self.forget(i);
                }
                _ => {}
            }
        }
    }

    fn insert(&mut self, now: Instant, key: [u8; k::LEN], val: &[u8; v::LEN]) {
        if self.flows.len() >= self.cache.capacity as usize
            || self.cache.map.update(&key, val).is_err()
        {
            self.stats.full += 1;
            return;
        }
        self.index.insert(key, self.flows.len());
        self.flows.push(Tracked { key, packets: 0, bytes: 0, since: now });
        self.stats.learned += 1;
    }

    /// Reports the traffic of flow `i` since the last report to the forwarder; returns whether
    /// the flow is still in the map and the forwarder lets it stay there.
    fn report(&mut self, fwd: &mut Forwarder, now: Instant, i: usize) -> bool {
        let mut val = [0u8; v::LEN];
        let t = &mut self.flows[i];
        let present = self.cache.map.lookup(&t.key, &mut val).unwrap_or(false);
        let counter =
            |at: usize| u64::from_ne_bytes(val[at..at + 8].try_into().unwrap_or_default());
        let (packets, bytes) = (counter(v::PACKETS), counter(v::BYTES));
        let (dp, db) = (packets.saturating_sub(t.packets), bytes.saturating_sub(t.bytes));
        (t.packets, t.bytes) = (packets.max(t.packets), bytes.max(t.bytes));
        self.stats.packets += dp;
        self.stats.bytes += db;
        fwd.offload_refresh(now, &flow_key(&t.key), dp, db) && present
    }

    /// Removes flow `i` from the map and the table. Frames the program forwards between the
    /// last report and the removal are not counted.
    fn forget(&mut self, i: usize) {
        let t = self.flows.swap_remove(i);
        self.index.remove(&t.key);
        let _ = self.cache.map.delete(&t.key);
        if let Some(moved) = self.flows.get(i) {
            self.index.insert(moved.key, i);
        }
        self.stats.forgotten += 1;
    }

    /// One housekeeping round (before the session sweep): reports the traffic of the cached
    /// flows due (the share of a `cycle` since the last round; all of them with `all`) to the
    /// forwarder, and forgets those it no longer calls steady and those older than `max_age`.
    pub(crate) fn scan(&mut self, fwd: &mut Forwarder, now: Instant, all: bool) {
        let since = self.last_scan.map_or(self.cfg.cycle, |t| now.saturating_duration_since(t));
        self.last_scan = Some(now);
        let timeouts = &fwd.config().table.timeouts;
        let steady = timeouts.of(ConnState::Udp).min(timeouts.of(ConnState::Established));
        let cycle = self.cfg.cycle.min(steady / 4).max(Duration::from_millis(1));
        let share = (self.flows.len() as u128 * since.as_nanos()).div_ceil(cycle.as_nanos());
        let n = if all {
            self.flows.len()
        } else {
            (share as usize).min(self.cfg.scan_budget).min(self.flows.len())
        };
        for _ in 0..n {
            if self.cursor >= self.flows.len() {
                self.cursor = 0;
            }
            let i = self.cursor;
            let young = now.saturating_duration_since(self.flows[i].since) < self.cfg.max_age;
            if self.report(fwd, now, i) && young {
                self.cursor += 1;
            } else {
                // The last flow moves into this slot: the cursor stays to examine it.
                self.forget(i);
            }
        }
    }
}

#[cfg(test)]
mod tests;
