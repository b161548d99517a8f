//! ICMP and ICMPv6: neighbour discovery, echo to virtual addresses, and relaying errors
//! (destination unreachable, fragmentation needed / packet too big, time exceeded, parameter
//! problem) to the flow they concern, with the embedded header rewritten as well.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use slb_core::flow::{FlowKey, Protocol};
use slb_core::session::Direction;
use slb_core::time::Instant;

use super::config::{Mode, PortId};
use super::process::src_mac;
use super::rewrite::{Hop, ip_bytes, set_macs};
use super::stats::DropReason;
use super::{Forwarder, Owned, Verdict};
use crate::frame::FrameBuf;
use crate::wire::csum::Update;
use crate::wire::nd::{NdFrame, NdRepr};
use crate::wire::{self, IpMeta, L3, be16, fill_ipv4_checksum, fill_l4_checksum, proto, put16};

/// ICMP message types.
const ECHO_REPLY_V4: u8 = 0;
const ECHO_REQUEST_V4: u8 = 8;
const ECHO_REQUEST_V6: u8 = 128;
const ECHO_REPLY_V6: u8 = 129;
const NS: u8 = 135;
const NA: u8 = 136;

fn is_error(v6: bool, ty: u8) -> bool {
    if v6 { matches!(ty, 1..=4) } else { matches!(ty, 3 | 11 | 12) }
}

/// The embedded packet of an ICMP error: offsets of its IP and transport headers, and its flow.
struct Embedded {
    l3: usize,
    l4: usize,
    key: FlowKey,
}

fn embedded(f: &[u8], m: &IpMeta) -> Option<Embedded> {
    let l3 = m.l4 + 8;
    let end = m.end;
    let (l4, p, src, dst) = if m.v6 {
        if l3 + 40 + 8 > end || f[l3] >> 4 != 6 {
            return None;
        }
        let s: [u8; 16] = f[l3 + 8..l3 + 24].try_into().ok()?;
        let d: [u8; 16] = f[l3 + 24..l3 + 40].try_into().ok()?;
        (l3 + 40, f[l3 + 6], IpAddr::V6(Ipv6Addr::from(s)), IpAddr::V6(Ipv6Addr::from(d)))
    } else {
        if l3 + 20 > end || f[l3] >> 4 != 4 {
            return None;
        }
        let ihl = usize::from(f[l3] & 0x0f) * 4;
        if ihl < 20 || l3 + ihl + 8 > end {
            return None;
        }
        let s = Ipv4Addr::new(f[l3 + 12], f[l3 + 13], f[l3 + 14], f[l3 + 15]);
        let d = Ipv4Addr::new(f[l3 + 16], f[l3 + 17], f[l3 + 18], f[l3 + 19]);
        (l3 + ihl, f[l3 + 9], IpAddr::V4(s), IpAddr::V4(d))
    };
    let proto = match p {
        proto::TCP => Protocol::Tcp,
        proto::UDP => Protocol::Udp,
        _ => return None,
    };
    let key = FlowKey { proto, src, dst, src_port: be16(f, l4), dst_port: be16(f, l4 + 2) };
    Some(Embedded { l3, l4, key })
}

impl Forwarder {
    pub(super) fn handle_icmp(
        &mut self,
        now: Instant,
        frame: &mut FrameBuf,
        port: PortId,
        m: IpMeta,
        unicast: bool,
    ) -> Verdict {
        let ty = frame.as_slice()[m.l4];
        if m.v6 && (ty == NS || ty == NA) {
            return self.handle_nd(frame, port, &m);
        }
        if !unicast {
            return self.host();
        }
        let owned = self.owned.get(&m.dst).copied();
        if is_error(m.v6, ty) {
            return self.relay_error(now, frame, &m);
        }
        let echo = if m.v6 { ECHO_REQUEST_V6 } else { ECHO_REQUEST_V4 };
        match owned {
            Some(Owned::Vip) if ty == echo && self.cfg.answer_ping => {
                self.echo_reply(frame, port, &m)
            }
            Some(_) => self.count_drop(DropReason::Unsupported, None),
            None => self.host(),
        }
    }

    fn handle_nd(&mut self, frame: &mut FrameBuf, port: PortId, m: &IpMeta) -> Verdict {
        let (IpAddr::V6(src), IpAddr::V6(dst)) = (m.src, m.dst) else { return self.host() };
        let f = frame.as_slice();
        match NdRepr::parse(src, dst, &f[m.l4..m.end]) {
            Ok(NdRepr::Solicit { target, lladdr }) => {
                let ours = self.answers_for(port, IpAddr::V6(target));
                let mac = lladdr.unwrap_or_else(|| src_mac(f));
                if !src.is_unspecified() {
                    self.neigh.learn(IpAddr::V6(src), mac, ours);
                }
                if ours && !src.is_unspecified() {
                    let our = self.ports[usize::from(port.0)].cfg.mac;
                    let na = NdFrame::advert(our, target, mac, src);
                    frame.build(na.buffer_len(), |f| na.emit(f));
                    self.stats.replied += 1;
                    return Verdict::Reply(port);
                }
                self.host()
            }
            Ok(NdRepr::Advert { target, lladdr: Some(mac), .. }) => {
                self.neigh.learn(IpAddr::V6(target), mac, false);
                self.host()
            }
            _ => self.host(),
        }
    }

    /// Answers an echo request to a VIP in place.
    fn echo_reply(&mut self, frame: &mut FrameBuf, port: PortId, m: &IpMeta) -> Verdict {
        let our = self.ports[usize::from(port.0)].cfg.mac;
        let f = frame.as_mut_slice();
        let peer = src_mac(f);
        set_macs(f, peer, our);
        let (a, b, n) = if m.v6 { (L3 + 8, L3 + 24, 16) } else { (L3 + 12, L3 + 16, 4) };
        for i in 0..n {
            f.swap(a + i, b + i);
        }
        let c = be16(f, m.l4 + 2);
        let old = be16(f, m.l4);
        let reply = if m.v6 { ECHO_REPLY_V6 } else { ECHO_REPLY_V4 };
        f[m.l4] = reply;
        // Swapping the addresses leaves every sum unchanged; only the type word changes.
        put16(f, m.l4 + 2, Update::new(c).word(old, be16(f, m.l4)).finish());
        if m.v6 {
            f[L3 + 7] = 64;
        } else {
            f[L3 + 8] = 64;
            fill_ipv4_checksum(f, L3);
        }
        self.stats.replied += 1;
        Verdict::Reply(port)
    }

    /// Relays an ICMP error to the real server or client of the flow whose packet it quotes.
    fn relay_error(&mut self, now: Instant, frame: &mut FrameBuf, m: &IpMeta) -> Verdict {
        let owned = self.owned.contains_key(&m.dst);
        let Some(emb) = embedded(frame.as_slice(), m) else {
            return if owned { self.count_drop(DropReason::Malformed, None) } else { self.host() };
        };
        // The quoted packet travelled away from us; its flow seen from the other end is ours.
        let Some(e) = self.table.lookup(&emb.key.reversed(), now) else {
            return if owned {
                self.count_drop(DropReason::IcmpNoSession, None)
            } else {
                self.host()
            };
        };
        let dir = e.direction();
        let (backend, ext) = (e.session().backend(), e.session().ext);
        let (fwd, rev) = e.keys();
        let Some(mode) = self.services.list.get(usize::from(ext.svc)).map(|s| s.mode()) else {
            return self.count_drop(DropReason::IcmpNoSession, None);
        };
        if mode != Mode::Dr && m.ttl <= 1 {
            return self.count_drop(DropReason::TtlExceeded, Some(ext.svc));
        }
        // New (embedded src, embedded dst, outer src, outer dst); None = unchanged.
        type Ep = Option<(IpAddr, u16)>;
        let (esrc, edst, osrc, odst): (Ep, Ep, Option<IpAddr>, Option<IpAddr>) =
            match (dir, mode, rev) {
                // From the client side about a reply we sent: goes to the real server.
                (Direction::Inbound, Mode::Nat, Some(r)) => {
                    (Some((r.src, r.src_port)), None, None, Some(r.src))
                }
                (Direction::Inbound, Mode::FullNat, Some(r)) => {
                    (Some((r.src, r.src_port)), Some((r.dst, r.dst_port)), Some(r.dst), Some(r.src))
                }
                // From the server side about a packet we sent to it: goes to the client.
                (Direction::Outbound, Mode::Nat, _) => (
                    Some((fwd.src, fwd.src_port)),
                    Some((fwd.dst, fwd.dst_port)),
                    Some(fwd.dst),
                    None,
                ),
                (Direction::Outbound, Mode::FullNat, _) => (
                    Some((fwd.src, fwd.src_port)),
                    Some((fwd.dst, fwd.dst_port)),
                    Some(fwd.dst),
                    Some(fwd.src),
                ),
                _ => (None, None, None, None),
            };
        let (out, hop) = match dir {
            Direction::Inbound => {
                let Some((p, hop)) = self.reals.get(backend.0 as usize).and_then(|r| r.route)
                else {
                    return self.count_drop(DropReason::NoRoute, Some(ext.svc));
                };
                (p, Hop::Ip(hop))
            }
            Direction::Outbound => match self.client_hop(&ext, fwd.src) {
                Some(x) => x,
                None => return self.count_drop(DropReason::NoRoute, Some(ext.svc)),
            },
        };
        let f = frame.as_mut_slice();
        rewrite_embedded(f, m, &emb, esrc, edst);
        let mut outer = *m;
        let (sa, da, n) = if m.v6 { (L3 + 8, L3 + 24, 16) } else { (L3 + 12, L3 + 16, 4) };
        for (new, at, slot) in [(osrc, sa, &mut outer.src), (odst, da, &mut outer.dst)] {
            if let Some(ip) = new {
                f[at..at + n].copy_from_slice(&ip_bytes(ip)[16 - n..]);
                *slot = ip;
            }
        }
        if mode != Mode::Dr {
            let ttl_at = if m.v6 { L3 + 7 } else { L3 + 8 };
            f[ttl_at] = f[ttl_at].saturating_sub(1);
        }
        if !m.v6 {
            fill_ipv4_checksum(f, L3);
        }
        fill_l4_checksum(f, &outer);
        self.stats.icmp_relayed += 1;
        self.send_to(now, frame, out, hop, Some(ext.svc))
    }
}

/// Rewrites the quoted packet's addresses and ports, fixing its IPv4 header checksum and, when
/// the quote is long enough to hold it, its transport checksum (incrementally: the quote is
/// usually truncated, so a full recompute is impossible).
fn rewrite_embedded(
    f: &mut [u8],
    m: &IpMeta,
    e: &Embedded,
    src: Option<(IpAddr, u16)>,
    dst: Option<(IpAddr, u16)>,
) {
    let v6 = m.v6;
    let (sa, da, n) = if v6 { (e.l3 + 8, e.l3 + 24, 16) } else { (e.l3 + 12, e.l3 + 16, 4) };
    let csum_off =
        wire::l4_csum_offset(if e.key.proto == Protocol::Tcp { proto::TCP } else { proto::UDP })
            .map(|o| e.l4 + o)
            .filter(|&a| a + 2 <= m.end);
    let udp_none = e.key.proto == Protocol::Udp && !v6 && csum_off.is_some_and(|a| be16(f, a) == 0);
    let mut l4 = csum_off.filter(|_| !udp_none).map(|a| Update::new(be16(f, a)));
    let mut ip = (!v6).then(|| Update::new(be16(f, e.l3 + 10)));
    for (new, at, port_at) in [(src, sa, e.l4), (dst, da, e.l4 + 2)] {
        let Some((addr, port)) = new else { continue };
        let b = ip_bytes(addr);
        let nb = &b[16 - n..];
        if let Some(u) = ip.as_mut() {
            *u = u.bytes(&f[at..at + n], nb);
        }
        if let Some(u) = l4.as_mut() {
            *u = u.bytes(&f[at..at + n], nb).word(be16(f, port_at), port);
        }
        f[at..at + n].copy_from_slice(nb);
        put16(f, port_at, port);
    }
    if let Some(u) = ip {
        put16(f, e.l3 + 10, u.finish());
    }
    if let (Some(a), Some(u)) = (csum_off, l4) {
        let mut c = u.finish();
        if e.key.proto == Protocol::Udp && c == 0 {
            c = 0xffff;
        }
        put16(f, a, c);
    }
}
