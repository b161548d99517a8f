//! Rewriting a frame of a known flow per forwarding mode: addresses, ports, TTL, checksums,
//! TOA, MACs; and resolving the next hop.

use std::net::{IpAddr, SocketAddr};

use slb_core::backend::BackendId;
use slb_core::flow::FlowKey;
use slb_core::session::Direction;
use slb_core::time::Instant;

use super::config::{Mac, Mode, PortId, UnknownCsum};
use super::neigh;
use super::stats::DropReason;
use super::{Forwarder, SessionData, Verdict};
use crate::frame::{CsumState, FrameBuf};
use crate::wire::csum::Update;
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
    pub(super) fwd: FlowKey,
    pub(super) rev: Option<FlowKey>,
    pub(super) toa: Toa,
}

type Endpoint = (IpAddr, u16);

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
        let Plan { dir, mode, backend, svc, ext, fwd, rev, toa } = plan;
        // Address changes.
        let (src, dst): (Option<Endpoint>, Option<Endpoint>) = match (dir, mode, rev) {
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
        // Egress port and next hop.
        let (out, hop) = match dir {
            Direction::Inbound => {
                let Some((p, hop)) = self.reals.get(backend.0 as usize).and_then(|r| r.route)
                else {
                    return self.count_drop(DropReason::NoRoute, Some(svc));
                };
                (p, Hop::Ip(hop))
            }
            Direction::Outbound => match self.client_hop(&ext, fwd.src) {
                Some(x) => x,
                None => return self.count_drop(DropReason::NoRoute, Some(svc)),
            },
        };
        let full = self.needs_full_csum(frame, m);
        let bytes = m.end - L3;
        let mut m2 = rewrite_ip(frame.as_mut_slice(), m, src, dst, mode != Mode::Dr, full);
        if toa != Toa::None && m.proto == proto::TCP {
            let mtu = self.ports.get(usize::from(out.0)).map_or(1500, |p| p.cfg.mtu);
            self.apply_toa(frame, &mut m2, toa, SocketAddr::new(fwd.src, fwd.src_port), mtu);
        } else if full {
            self.stats.csum_full += 1;
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
                    .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED);
                neigh::arp_request(frame, mac, src, t);
            }
            IpAddr::V6(t) => {
                let Some(src) = p.cfg.addrs.iter().find_map(|c| match c.addr {
                    IpAddr::V6(a) => Some(a),
                    IpAddr::V4(_) => None,
                }) else {
                    return v;
                };
                neigh::neighbor_solicit(frame, mac, src, t);
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
