//! Rewriting a frame of a known flow per forwarding mode: addresses, ports, TTL, checksums,
//! TOA, MACs; and resolving the next hop.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use slb_core::backend::BackendId;
use slb_core::flow::FlowKey;
use slb_core::session::{Direction, EntryMut};
use slb_core::time::Instant;

use super::config::{Mac, Mode, PortId, UnknownCsum};
use super::neigh::Neighbours;
use super::service::Real;
use super::stats::DropReason;
use super::{Forwarder, SessionData, Verdict};
use crate::frame::{CsumState, FrameBuf};
use crate::wire::arp::ArpRepr;
use crate::wire::csum::{Update, fold};
use crate::wire::nd::NdFrame;
use crate::wire::{
    self, CsumCheck, IpMeta, L3, be16, fill_ipv4_checksum, fill_l4_checksum, proto, put16, toa,
};

/// Which TOA-related change a FULLNAT segment gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Toa {
    None,
    /// The client's SYN: MSS clamped, TOA inserted.
    Syn,
    /// The ACK completing the handshake: TOA inserted.
    Ack,
    /// The server's SYN-ACK: MSS clamped.
    SynAck,
}

/// Everything `forward` needs to know about the packet's session.
#[derive(Clone, Copy, Debug)]
pub(super) struct Plan {
    pub(super) dir: Direction,
    pub(super) mode: Mode,
    pub(super) backend: BackendId,
    pub(super) svc: u16,
    pub(super) ext: SessionData,
    /// The address changes.
    pub(super) ends: Ends,
    /// The client's address and port (the forward key's source).
    pub(super) client: Endpoint,
    pub(super) toa: Toa,
}

pub(super) type Endpoint = (IpAddr, u16);

/// The new source and destination (address, port) of a packet; `None`: unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Ends {
    pub(super) src: Option<Endpoint>,
    pub(super) dst: Option<Endpoint>,
}

impl Ends {
    pub(super) const NONE: Ends = Ends { src: None, dst: None };

    /// The changes of a packet in direction `dir` of a `mode` session with keys `fwd`, `rev`
    /// (inbound needs only `rev`, outbound only `fwd`).
    #[inline]
    pub(super) fn of(dir: Direction, mode: Mode, fwd: &FlowKey, rev: Option<&FlowKey>) -> Ends {
        let (src, dst) = match (dir, mode, rev) {
            (Direction::Inbound, Mode::Nat, Some(r)) => (None, Some((r.src, r.src_port))),
            (Direction::Inbound, Mode::FullNat, Some(r)) => {
                (Some((r.dst, r.dst_port)), Some((r.src, r.src_port)))
            }
            (Direction::Outbound, Mode::Nat, _) => (Some((fwd.dst, fwd.dst_port)), None),
            (Direction::Outbound, Mode::FullNat, _) => {
                (Some((fwd.dst, fwd.dst_port)), Some((fwd.src, fwd.src_port)))
            }
            _ => (None, None),
        };
        Ends { src, dst }
    }
}

/// [`SessionData::flags`] of a FULLNAT session whose inbound packets need no reverse key.
const FULLNAT_IN_DATA: u8 = super::REV_SRC_IS_REAL | super::LOCAL_IN_DATA;

/// The new ends of a packet of a known session, and the session's client, read from the one
/// key the packet's direction needs: inbound, the reverse key (the real server, and FULLNAT's
/// local address), or no key at all for a NAT session marked
/// [`REV_SRC_IS_REAL`](super::REV_SRC_IS_REAL) (the real server's record gives the
/// destination) or a FULLNAT one marked with it and [`LOCAL_IN_DATA`](super::LOCAL_IN_DATA)
/// (the session's own data gives the source); outbound, the forward key in the session's own
/// slot (the VIP, and FULLNAT's client). `key` is the packet's own flow key. `None` when the key
/// or the real server it needs is missing (inbound only).
#[inline]
pub(super) fn session_ends(
    e: &EntryMut<'_, SessionData>,
    reals: &[Real],
    (dir, mode): (Direction, Mode),
    ext: &SessionData,
    backend: BackendId,
    key: &FlowKey,
) -> Option<(Ends, Endpoint)> {
    let client = (key.src, key.src_port);
    match (dir, mode) {
        (_, Mode::Dr) => Some((Ends::NONE, client)),
        (Direction::Inbound, Mode::Nat) if ext.flags & super::REV_SRC_IS_REAL != 0 => {
            let real = reals.get(backend.0 as usize)?;
            Some((Ends { src: None, dst: Some(real_endpoint(real.addr, key.dst_port)) }, client))
        }
        (Direction::Inbound, Mode::FullNat) if ext.flags & FULLNAT_IN_DATA == FULLNAT_IN_DATA => {
            let real = reals.get(backend.0 as usize)?;
            let dst = Some(real_endpoint(real.addr, key.dst_port));
            Some((Ends { src: ext.local(), dst }, client))
        }
        (Direction::Inbound, _) => {
            Some((Ends::of(dir, mode, key, Some(&e.reverse_key()?)), client))
        }
        (Direction::Outbound, _) => {
            let fwd = e.forward_key();
            Some((Ends::of(dir, mode, &fwd, None), (fwd.src, fwd.src_port)))
        }
    }
}

/// Where a flow to destination port `dport` goes on real server `real`: its address, with its
/// port, or `dport` for a real of port 0 (the reverse key's source of a NAT or FULLNAT session
/// marked [`REV_SRC_IS_REAL`](super::REV_SRC_IS_REAL)).
#[inline]
pub(super) fn real_endpoint(real: SocketAddr, dport: u16) -> Endpoint {
    (real.ip(), if real.port() == 0 { dport } else { real.port() })
}

/// The next hop of a frame: a known MAC, or an address to resolve.
#[derive(Clone, Copy, Debug)]
pub(super) enum Hop {
    Mac(Mac),
    Ip(IpAddr),
}

impl Forwarder {
    /// Rewrites a packet of a known session and picks its port and next-hop MAC.
    pub(super) fn forward(
        &mut self,
        now: Instant,
        frame: &mut FrameBuf,
        m: &IpMeta,
        plan: Plan,
    ) -> Verdict {
        let Plan { dir, mode, backend, svc, ext, ends: Ends { src, dst }, client, toa } = plan;
        // Egress port and next hop.
        let (out, hop) = match dir {
            Direction::Inbound => {
                let Some((p, hop)) = self.reals.get(backend.0 as usize).and_then(|r| r.route)
                else {
                    return self.count_drop(DropReason::NoRoute, Some(svc));
                };
                (p, self.real_hop(backend, hop))
            }
            Direction::Outbound => match self.client_hop(&ext, client.0) {
                Some(x) => x,
                None => return self.count_drop(DropReason::NoRoute, Some(svc)),
            },
        };
        let full = self.needs_full_csum(frame, m);
        let bytes = m.end - L3;
        let dec_ttl = mode != Mode::Dr;
        let toa = if m.proto == proto::TCP { toa } else { Toa::None };
        let v4 = |e: Option<Endpoint>| match e {
            None => Some(None),
            Some((IpAddr::V4(a), p)) => Some(Some((a, p))),
            Some(_) => None,
        };
        if let (false, false, Toa::None, Some(src), Some(dst)) = (m.v6, full, toa, v4(src), v4(dst))
        {
            // The common case: IPv4, incremental checksums, no TOA.
            rewrite_v4(frame.as_mut_slice(), (m.l4, m.proto, m.end), src, dst, dec_ttl);
        } else {
            self.rewrite_general(frame, m, (src, dst), dec_ttl, full, toa, (out, client));
        }
        let inbound = dir == Direction::Inbound;
        if let Some(s) = self.services.list.get_mut(usize::from(svc)) {
            s.stats.packet(inbound, bytes);
        }
        if let Some(r) = self.reals.get_mut(backend.0 as usize) {
            r.stats.packet(inbound, bytes);
        }
        self.send_to(now, frame, out, hop, Some(svc))
    }

    /// Any rewrite other than [`rewrite_v4`]'s: IPv6, full checksums, TOA.
    #[allow(clippy::too_many_arguments)] // one call site, all at hand there
    fn rewrite_general(
        &mut self,
        frame: &mut FrameBuf,
        m: &IpMeta,
        (src, dst): (Option<Endpoint>, Option<Endpoint>),
        dec_ttl: bool,
        full: bool,
        toa: Toa,
        (out, client): (PortId, Endpoint),
    ) {
        let mut m2 = rewrite_ip(frame.as_mut_slice(), m, src, dst, dec_ttl, full);
        if toa != Toa::None {
            let mtu = self.ports.get(usize::from(out.0)).map_or(1500, |p| p.cfg.mtu);
            self.apply_toa(frame, &mut m2, toa, SocketAddr::new(client.0, client.1), mtu);
        } else if full {
            self.stats.csum_full += 1;
        }
    }

    /// Sets the MACs of a rewritten frame for `hop` on `out` and forwards it, or holds it and
    /// solicits the hop when its MAC is unknown.
    pub(super) fn send_to(
        &mut self,
        now: Instant,
        frame: &mut FrameBuf,
        out: PortId,
        hop: Hop,
        svc: Option<u16>,
    ) -> Verdict {
        let our = self.ports[usize::from(out.0)].cfg.mac;
        let mac = match hop {
            Hop::Mac(mac) => mac,
            Hop::Ip(ip) => match self.neigh.get(&ip) {
                Some(mac) => mac,
                None => {
                    set_macs(frame.as_mut_slice(), [0; 6], our);
                    return self.hold_and_solicit(now, frame, out, ip, svc);
                }
            },
        };
        set_macs(frame.as_mut_slice(), mac, our);
        self.stats.forwarded += 1;
        Verdict::Forward(out)
    }

    /// The next hop `hop` of real server `backend`: its MAC, cached in the server's record
    /// while the neighbour table is unchanged, or the address to resolve.
    #[inline]
    fn real_hop(&mut self, backend: BackendId, hop: IpAddr) -> Hop {
        match self.reals.get_mut(backend.0 as usize) {
            Some(r) => real_hop(&self.neigh, r, hop),
            None => Hop::Ip(hop),
        }
    }

    /// Where frames to the client of a session go: the learned next hop, else the routes.
    pub(super) fn client_hop(&self, ext: &SessionData, client: IpAddr) -> Option<(PortId, Hop)> {
        if ext.client_mac != [0; 6] && usize::from(ext.client_port) < self.ports.len() {
            return Some((PortId(ext.client_port), Hop::Mac(ext.client_mac)));
        }
        self.route(client).map(|(p, hop)| (p, Hop::Ip(hop)))
    }

    /// Whether the transport checksum must be recomputed rather than updated.
    #[inline]
    fn needs_full_csum(&self, frame: &FrameBuf, m: &IpMeta) -> bool {
        match frame.meta.csum {
            CsumState::Complete => false,
            CsumState::Partial => true,
            CsumState::Unknown => {
                self.cfg.unknown_csum == UnknownCsum::Detect
                    && wire::check_l4_checksum(frame.as_slice(), m) == CsumCheck::Partial
            }
        }
    }

    /// Holds the frame until `hop` resolves (or drops it, counted, when the hold queues are
    /// full) and, unless rate limited, turns the buffer into a solicitation for `hop`.
    fn hold_and_solicit(
        &mut self,
        now: Instant,
        frame: &mut FrameBuf,
        port: PortId,
        hop: IpAddr,
        svc: Option<u16>,
    ) -> Verdict {
        let held = self.neigh.hold(hop, now, port.0, frame.as_slice());
        let v = if held {
            self.stats.held += 1;
            Verdict::Held
        } else {
            self.count_drop(DropReason::NoNeighbour, svc)
        };
        if !self.neigh.may_solicit(hop, now, self.cfg.resolve_interval) {
            return v;
        }
        let Some(p) = self.ports.get(usize::from(port.0)) else { return v };
        let mac = p.cfg.mac;
        match hop {
            IpAddr::V4(t) => {
                let src = p
                    .cfg
                    .addrs
                    .iter()
                    .find_map(|c| match c.addr {
                        IpAddr::V4(a) => Some(a),
                        IpAddr::V6(_) => None,
                    })
                    .unwrap_or(Ipv4Addr::UNSPECIFIED);
                let r = ArpRepr::request(mac, src, t);
                frame.build(r.buffer_len(), |f| r.emit(f));
            }
            IpAddr::V6(t) => {
                let Some(src) = p.cfg.addrs.iter().find_map(|c| match c.addr {
                    IpAddr::V6(a) => Some(a),
                    IpAddr::V4(_) => None,
                }) else {
                    return v;
                };
                let ns = NdFrame::solicit(mac, src, t);
                frame.build(ns.buffer_len(), |f| ns.emit(f));
            }
        }
        self.stats.solicits += 1;
        Verdict::Solicit(port)
    }

    /// MSS clamp and TOA insertion (FULLNAT); always ends with a full checksum recompute.
    fn apply_toa(
        &mut self,
        frame: &mut FrameBuf,
        m: &mut IpMeta,
        what: Toa,
        client: SocketAddr,
        mtu: usize,
    ) {
        let toa_len = if client.is_ipv4() { toa::TOA_LEN_V4 } else { toa::TOA_LEN_V6 };
        if matches!(what, Toa::Syn | Toa::SynAck) {
            let f = frame.as_mut_slice();
            if toa::clamp_mss(&mut f[m.l4 + 20..m.l4 + m.tcp_hlen], toa_len as u16).is_some() {
                self.stats.mss_clamped += 1;
            }
        }
        if matches!(what, Toa::Syn | Toa::Ack) && self.cfg.toa {
            if insert_toa(frame, m, client, mtu) {
                self.stats.toa_inserted += 1;
            } else {
                self.stats.toa_skipped += 1;
            }
        }
        fill_l4_checksum(frame.as_mut_slice(), m);
        self.stats.csum_full += 1;
    }
}

/// [`Forwarder::real_hop`] of real server `r` (a function of the fields it needs, so that a
/// caller holding a session entry may use it).
#[inline]
pub(super) fn real_hop(neigh: &Neighbours, r: &mut Real, hop: IpAddr) -> Hop {
    let gen_ = neigh.generation();
    match r.hop_mac {
        Some((g, ip, mac)) if g == gen_ && ip == hop => Hop::Mac(mac),
        _ => match neigh.get(&hop) {
            Some(mac) => {
                r.hop_mac = Some((gen_, hop, mac));
                Hop::Mac(mac)
            }
            None => Hop::Ip(hop),
        },
    }
}

/// Sets the Ethernet destination and source.
#[inline]
pub(super) fn set_macs(f: &mut [u8], dst: Mac, src: Mac) {
    f[0..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
}

/// Rewrites source and/or destination address and port, decrements the TTL / hop limit if asked,
/// and fixes the checksums (incrementally, or the transport one fully when `full`). Returns the
/// packet's metadata after the change.
pub(super) fn rewrite_ip(
    f: &mut [u8],
    m: &IpMeta,
    src: Option<Endpoint>,
    dst: Option<Endpoint>,
    dec_ttl: bool,
    full: bool,
) -> IpMeta {
    let mut out = *m;
    let ports = matches!(m.proto, proto::TCP | proto::UDP);
    let csum_at = wire::l4_csum_offset(m.proto).map(|o| m.l4 + o).filter(|&a| a + 2 <= m.end);
    let udp_none = m.proto == proto::UDP && !m.v6 && csum_at.is_some_and(|a| be16(f, a) == 0);
    let pseudo = m.proto != proto::ICMP;
    let mut l4 = csum_at.map(|a| Update::new(be16(f, a)));
    let (src_at, dst_at, alen) = if m.v6 { (L3 + 8, L3 + 24, 16) } else { (L3 + 12, L3 + 16, 4) };
    let mut ip = (!m.v6).then(|| Update::new(be16(f, L3 + 10)));
    for (new, addr_at, port_at, slot) in
        [(src, src_at, m.l4, &mut out.src), (dst, dst_at, m.l4 + 2, &mut out.dst)]
    {
        let Some((addr, port)) = new else { continue };
        let new_bytes = ip_bytes(addr);
        let new_bytes = &new_bytes[16 - alen..];
        if pseudo && let Some(u) = l4.as_mut() {
            *u = u.bytes(&f[addr_at..addr_at + alen], new_bytes);
        }
        if let Some(u) = ip.as_mut() {
            *u = u.bytes(&f[addr_at..addr_at + alen], new_bytes);
        }
        f[addr_at..addr_at + alen].copy_from_slice(new_bytes);
        *slot = addr;
        if ports {
            let old = be16(f, port_at);
            if let Some(u) = l4.as_mut() {
                *u = u.word(old, port);
            }
            put16(f, port_at, port);
        }
    }
    if dec_ttl {
        if m.v6 {
            f[L3 + 7] = f[L3 + 7].saturating_sub(1);
        } else {
            let old = be16(f, L3 + 8);
            f[L3 + 8] = f[L3 + 8].saturating_sub(1);
            if let Some(u) = ip.as_mut() {
                *u = u.word(old, be16(f, L3 + 8));
            }
        }
        out.ttl = out.ttl.saturating_sub(1);
    }
    if let Some(u) = ip {
        put16(f, L3 + 10, u.finish());
    }
    if full {
        fill_l4_checksum(f, &out);
    } else if let (Some(a), Some(u)) = (csum_at, l4)
        && !udp_none
    {
        let mut c = u.finish();
        if m.proto == proto::UDP && c == 0 {
            c = 0xffff;
        }
        put16(f, a, c);
    }
    out
}

/// [`rewrite_ip`] of an IPv4 TCP or UDP packet with incremental checksums: the common case,
/// in 32-bit arithmetic (every changed 16-bit word's `!old + new` summed, folded once).
///
/// Always inlined, and the two endpoints rewritten by two calls of one inlined helper, so that
/// the arguments and sums stay in registers: a loop over an array of endpoints would be built
/// on the stack and read back at once, and in some code layouts the step then stalls on those
/// stack round trips.
#[inline(always)]
pub(super) fn rewrite_v4(
    f: &mut [u8],
    (l4, l4_proto, end): (usize, u8, usize),
    src: Option<(Ipv4Addr, u16)>,
    dst: Option<(Ipv4Addr, u16)>,
    dec_ttl: bool,
) {
    let csum_at = l4 + if l4_proto == proto::TCP { 16 } else { 6 };
    let has_l4 = csum_at + 2 <= end;
    let udp_none = l4_proto == proto::UDP && has_l4 && be16(f, csum_at) == 0;
    let (mut ip_acc, mut l4_acc) = (0u32, 0u32);
    if let Some((addr, port)) = src {
        rewrite_endpoint_v4(f, (L3 + 12, l4), addr, port, &mut ip_acc, &mut l4_acc);
    }
    if let Some((addr, port)) = dst {
        rewrite_endpoint_v4(f, (L3 + 16, l4 + 2), addr, port, &mut ip_acc, &mut l4_acc);
    }
    if dec_ttl {
        let old = be16(f, L3 + 8);
        f[L3 + 8] = f[L3 + 8].saturating_sub(1);
        ip_acc += word_delta(old, be16(f, L3 + 8));
    }
    let c = be16(f, L3 + 10);
    put16(f, L3 + 10, !fold(u32::from(!c) + ip_acc));
    if has_l4 && !udp_none {
        let mut c = !fold(u32::from(!be16(f, csum_at)) + l4_acc);
        if l4_proto == proto::UDP && c == 0 {
            c = 0xffff;
        }
        put16(f, csum_at, c);
    }
}

/// One 16-bit word's change in a one's complement sum: `!old + new`.
#[inline(always)]
fn word_delta(old: u16, new: u16) -> u32 {
    u32::from(!old) + u32::from(new)
}

/// Writes one endpoint of [`rewrite_v4`] (the address at `addr_at`, the port at `port_at`) and
/// adds its changes to the IP and transport sums.
#[inline(always)]
fn rewrite_endpoint_v4(
    f: &mut [u8],
    (addr_at, port_at): (usize, usize),
    addr: Ipv4Addr,
    port: u16,
    ip_acc: &mut u32,
    l4_acc: &mut u32,
) {
    let new = addr.octets();
    let (o0, o1) = (be16(f, addr_at), be16(f, addr_at + 2));
    let (n0, n1) = (u16::from_be_bytes([new[0], new[1]]), u16::from_be_bytes([new[2], new[3]]));
    let delta = word_delta(o0, n0) + word_delta(o1, n1);
    *ip_acc += delta;
    *l4_acc += delta + word_delta(be16(f, port_at), port);
    f[addr_at..addr_at + 4].copy_from_slice(&new);
    put16(f, port_at, port);
}

/// An address as 16 bytes (IPv4 in the last 4).
#[inline]
pub(super) fn ip_bytes(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(a) => {
            let mut b = [0u8; 16];
            b[12..].copy_from_slice(&a.octets());
            b
        }
        IpAddr::V6(a) => a.octets(),
    }
}

/// Inserts the TOA option for `client` first among the TCP options (so that an end-of-list
/// option in the existing ones cannot hide it), growing the frame into its headroom. Updates
/// lengths and the IPv4 header checksum; the caller recomputes the TCP checksum. False when the
/// option does not fit in the TCP header (60 bytes) or the MTU.
fn insert_toa(frame: &mut FrameBuf, m: &mut IpMeta, client: SocketAddr, mtu: usize) -> bool {
    let (opt, n) = toa::toa_option(client);
    if m.tcp_hlen + n > 60 || m.end - L3 + n > mtu {
        return false;
    }
    let at = m.l4 + 20;
    if !frame.insert_gap(at, n) {
        return false;
    }
    let f = frame.as_mut_slice();
    f[at..at + n].copy_from_slice(&opt[..n]);
    m.tcp_hlen += n;
    f[m.l4 + 12] = (((m.tcp_hlen / 4) as u8) << 4) | (f[m.l4 + 12] & 0x0f);
    m.end += n;
    if m.v6 {
        let pl = be16(f, L3 + 4).wrapping_add(n as u16);
        put16(f, L3 + 4, pl);
    } else {
        let tl = be16(f, L3 + 2).wrapping_add(n as u16);
        put16(f, L3 + 2, tl);
        fill_ipv4_checksum(f, L3);
    }
    true
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// An IPv4 TCP or UDP frame with arbitrary addresses, ports, TTL and checksum fields.
    fn v4_frame() -> impl Strategy<Value = Vec<u8>> {
        (any::<bool>(), any::<[u8; 16]>(), prop::sample::select(vec![0u16, 0xffff, 1, 0x1234]))
            .prop_map(|(tcp, b, udp_csum)| {
                let mut f = vec![0u8; 14 + 20 + if tcp { 20 } else { 8 } + 6];
                f[12] = 0x08;
                f[14] = 0x45;
                let total = (f.len() - 14) as u16;
                f[16..18].copy_from_slice(&total.to_be_bytes());
                f[22] = b[0];
                f[23] = if tcp { proto::TCP } else { proto::UDP };
                f[24..26].copy_from_slice(&b[1..3]);
                f[26..38].copy_from_slice(&b[3..15]);
                if tcp {
                    f[46] = 0x50;
                    f[47] = b[15];
                    f[50..52].copy_from_slice(&b[5..7]);
                } else {
                    f[38..40].copy_from_slice(&14u16.to_be_bytes());
                    f[40..42].copy_from_slice(&udp_csum.to_be_bytes());
                }
                f
            })
    }

    fn endpoint() -> impl Strategy<Value = Option<(Ipv4Addr, u16)>> {
        prop::option::of((any::<u32>(), any::<u16>()).prop_map(|(a, p)| (Ipv4Addr::from(a), p)))
    }

    proptest! {
        /// The IPv4 fast path writes exactly the bytes of the general rewrite.
        #[test]
        fn rewrite_v4_agrees_with_rewrite_ip(
            f in v4_frame(), src in endpoint(), dst in endpoint(), dec_ttl in any::<bool>(),
        ) {
            let Ok(wire::Kind::Ip(m)) = wire::parse(&f) else {
                return Err(TestCaseError::fail("the strategy builds valid frames"));
            };
            let (mut a, mut b) = (f.clone(), f);
            let ep = |e: Option<(Ipv4Addr, u16)>| e.map(|(a, p)| (IpAddr::V4(a), p));
            rewrite_ip(&mut a, &m, ep(src), ep(dst), dec_ttl, false);
            rewrite_v4(&mut b, (m.l4, m.proto, m.end), src, dst, dec_ttl);
            prop_assert_eq!(a, b);
        }
    }
}
