//! Neighbours: the IP -> MAC table the forwarder keeps from the ARP and NDISC traffic it sees
//! (plus static entries), and the frames it emits for them: ARP replies and requests, gratuitous
//! ARP, neighbour advertisements and solicitations.
//!
//! Learning follows RFC 826: the sender of an ARP packet is learned when the packet targets one
//! of our addresses, or when the sender is already in the table (refresh, also from gratuitous
//! ARP). Static entries are never overwritten. Entries do not age: a MAC change is learned from
//! the new owner's gratuitous ARP or its next ARP exchange with us.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hashbrown::HashMap;
use slb_core::time::Instant;
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    EthernetRepr, Icmpv6Packet, Icmpv6Repr, IpProtocol, Ipv6Packet, Ipv6Repr, NdiscNeighborFlags,
    NdiscRepr, RawHardwareAddress,
};

use super::config::{BROADCAST, Mac};
use crate::frame::FrameBuf;
use crate::wire::ETH_HDR;

#[derive(Clone, Copy, Debug)]
struct Entry {
    mac: Mac,
    is_static: bool,
}

/// Frames held per unresolved neighbour while it is being resolved (Linux holds up to
/// `unres_qlen_bytes`, about 200 KB, per neighbour; a bounded frame count is enough here: the
/// first packets of new flows).
pub(crate) const HOLD_PER_NEIGHBOUR: usize = 16;
/// Frames held for all unresolved neighbours together.
pub(crate) const HOLD_TOTAL: usize = 256;
/// How long a held frame waits for its neighbour.
pub(crate) const HOLD_TIME: std::time::Duration = std::time::Duration::from_secs(3);

/// A frame waiting for its next hop's MAC.
#[derive(Debug)]
struct Held {
    since: Instant,
    port: u8,
    frame: Vec<u8>,
}

/// The neighbour table.
#[derive(Debug, Default)]
pub(crate) struct Neighbours {
    map: HashMap<IpAddr, Entry>,
    /// Last solicitation per unresolved address.
    pending: HashMap<IpAddr, Instant>,
    /// Frames waiting for a neighbour, and how many in all.
    held: HashMap<IpAddr, Vec<Held>>,
    n_held: usize,
    /// Frames whose neighbour resolved, ready to send (port, frame).
    released: std::collections::VecDeque<(u8, Vec<u8>)>,
    /// Held frames dropped because they waited too long.
    pub(crate) expired: u64,
    /// Changes to `map` so far: a MAC cached elsewhere is good while this is unchanged.
    changes: u64,
}

impl Neighbours {
    #[inline]
    pub(crate) fn get(&self, ip: &IpAddr) -> Option<Mac> {
        self.map.get(ip).map(|e| e.mac)
    }

    /// Counts changes to the table (see [`Neighbours::get`] callers that cache a MAC).
    #[inline]
    pub(crate) fn generation(&self) -> u64 {
        self.changes
    }

    pub(crate) fn set_static(&mut self, ip: IpAddr, mac: Mac) {
        self.changes += 1;
        self.map.insert(ip, Entry { mac, is_static: true });
        self.pending.remove(&ip);
        self.release(ip, mac);
    }

    /// Holds `frame` (fully rewritten but for its destination MAC) until `ip` resolves; false
    /// when the queues are full.
    pub(crate) fn hold(&mut self, ip: IpAddr, now: Instant, port: u8, frame: &[u8]) -> bool {
        let q = self.held.entry(ip).or_default();
        if q.len() >= HOLD_PER_NEIGHBOUR || self.n_held >= HOLD_TOTAL {
            return false;
        }
        q.push(Held { since: now, port, frame: frame.to_vec() });
        self.n_held += 1;
        true
    }

    /// Moves the frames held for `ip` to the release queue with their destination MAC set.
    fn release(&mut self, ip: IpAddr, mac: Mac) {
        if let Some(q) = self.held.remove(&ip) {
            self.n_held -= q.len();
            for mut h in q {
                h.frame[0..6].copy_from_slice(&mac);
                self.released.push_back((h.port, h.frame));
            }
        }
    }

    /// The next released frame.
    pub(crate) fn pop_released(&mut self) -> Option<(u8, Vec<u8>)> {
        self.released.pop_front()
    }

    /// Drops held frames older than [`HOLD_TIME`]; returns how many.
    pub(crate) fn expire_held(&mut self, now: Instant) -> usize {
        let before = self.n_held;
        self.held.retain(|_, q| {
            q.retain(|h| now < h.since + HOLD_TIME);
            !q.is_empty()
        });
        self.n_held = self.held.values().map(Vec::len).sum();
        let n = before - self.n_held;
        self.expired += n as u64;
        n
    }

    /// Learns `ip` at `mac` if `force` (the packet was for us) or the entry exists already.
    pub(crate) fn learn(&mut self, ip: IpAddr, mac: Mac, force: bool) {
        if mac == [0; 6] || mac[0] & 1 == 1 || ip.is_unspecified() {
            return;
        }
        match self.map.get_mut(&ip) {
            Some(e) if e.is_static || e.mac == mac => {}
            Some(e) => {
                e.mac = mac;
                self.changes += 1;
            }
            None if force || self.pending.contains_key(&ip) => {
                self.changes += 1;
                self.map.insert(ip, Entry { mac, is_static: false });
                self.pending.remove(&ip);
                self.release(ip, mac);
            }
            None => {}
        }
    }

    /// True when a solicitation for `ip` may be sent at `now` (rate limited per address).
    pub(crate) fn may_solicit(
        &mut self,
        ip: IpAddr,
        now: Instant,
        every: std::time::Duration,
    ) -> bool {
        match self.pending.get(&ip) {
            Some(&t) if now < t + every => false,
            _ => {
                if self.pending.len() > 4096 {
                    self.pending.clear();
                }
                self.pending.insert(ip, now);
                true
            }
        }
    }

    pub(crate) fn entries(&self) -> impl Iterator<Item = (IpAddr, Mac, bool)> + '_ {
        self.map.iter().map(|(ip, e)| (*ip, e.mac, e.is_static))
    }
}

/// A parsed ARP packet (Ethernet/IPv4 only).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Arp {
    pub(crate) op: ArpOperation,
    pub(crate) sha: Mac,
    pub(crate) spa: Ipv4Addr,
    pub(crate) tpa: Ipv4Addr,
}

pub(crate) fn parse_arp(frame: &[u8]) -> Option<Arp> {
    let p = ArpPacket::new_checked(frame.get(ETH_HDR..)?).ok()?;
    match ArpRepr::parse(&p).ok()? {
        ArpRepr::EthernetIpv4 {
            operation,
            source_hardware_addr,
            source_protocol_addr,
            target_protocol_addr,
            ..
        } => Some(Arp {
            op: operation,
            sha: source_hardware_addr.0,
            spa: source_protocol_addr,
            tpa: target_protocol_addr,
        }),
        #[allow(unreachable_patterns)] // smoltcp's Repr is non-exhaustive
        _ => None,
    }
}

fn emit_arp(buf: &mut FrameBuf, eth_dst: Mac, src_mac: Mac, repr: ArpRepr) {
    buf.reset();
    let len = ETH_HDR + repr.buffer_len();
    // 60 bytes: the minimum Ethernet frame without FCS (zero padding).
    buf.resize(len.max(60));
    let f = buf.as_mut_slice();
    f.fill(0);
    let mut eth = EthernetFrame::new_unchecked(&mut f[..]);
    EthernetRepr {
        src_addr: EthernetAddress(src_mac),
        dst_addr: EthernetAddress(eth_dst),
        ethertype: EthernetProtocol::Arp,
    }
    .emit(&mut eth);
    repr.emit(&mut ArpPacket::new_unchecked(&mut f[ETH_HDR..len]));
}

/// Writes an ARP reply for `req` (who asked for `req.tpa`, which we own at `our_mac`).
pub(crate) fn arp_reply(buf: &mut FrameBuf, req: &Arp, our_mac: Mac) {
    let repr = ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Reply,
        source_hardware_addr: EthernetAddress(our_mac),
        source_protocol_addr: req.tpa,
        target_hardware_addr: EthernetAddress(req.sha),
        target_protocol_addr: req.spa,
    };
    emit_arp(buf, req.sha, our_mac, repr);
}

/// Writes a broadcast ARP request for `target` from `(our_mac, our_ip)`.
pub(crate) fn arp_request(buf: &mut FrameBuf, our_mac: Mac, our_ip: Ipv4Addr, target: Ipv4Addr) {
    let repr = ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Request,
        source_hardware_addr: EthernetAddress(our_mac),
        source_protocol_addr: our_ip,
        target_hardware_addr: EthernetAddress([0; 6]),
        target_protocol_addr: target,
    };
    emit_arp(buf, BROADCAST, our_mac, repr);
}

/// Writes a gratuitous ARP (a broadcast request with sender = target = `ip`), as `arping -U`.
pub(crate) fn gratuitous_arp(buf: &mut FrameBuf, our_mac: Mac, ip: Ipv4Addr) {
    arp_request(buf, our_mac, ip, ip);
}

/// The solicited-node multicast address of `ip` and its Ethernet multicast MAC.
fn solicited_node(ip: Ipv6Addr) -> (Ipv6Addr, Mac) {
    let o = ip.octets();
    let addr = Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(o[13]),
        u16::from_be_bytes([o[14], o[15]]),
    );
    let a = addr.octets();
    (addr, [0x33, 0x33, a[12], a[13], a[14], a[15]])
}

fn emit_ndisc(
    buf: &mut FrameBuf,
    eth_dst: Mac,
    src_mac: Mac,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    nd: NdiscRepr<'_>,
) {
    let icmp = Icmpv6Repr::Ndisc(nd);
    let ip = Ipv6Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: IpProtocol::Icmpv6,
        payload_len: icmp.buffer_len(),
        hop_limit: 255,
    };
    buf.reset();
    let len = ETH_HDR + ip.buffer_len() + icmp.buffer_len();
    buf.resize(len);
    let f = buf.as_mut_slice();
    EthernetRepr {
        src_addr: EthernetAddress(src_mac),
        dst_addr: EthernetAddress(eth_dst),
        ethertype: EthernetProtocol::Ipv6,
    }
    .emit(&mut EthernetFrame::new_unchecked(&mut f[..]));
    ip.emit(&mut Ipv6Packet::new_unchecked(&mut f[ETH_HDR..]));
    let l4 = ETH_HDR + ip.buffer_len();
    icmp.emit(
        &src,
        &dst,
        &mut Icmpv6Packet::new_unchecked(&mut f[l4..len]),
        &ChecksumCapabilities::default(),
    );
}

/// A neighbour solicitation found in a frame.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Nd {
    /// Who has `target`? (from `src`, whose MAC may be given)
    Solicit { src: Ipv6Addr, target: Ipv6Addr, lladdr: Option<Mac> },
    /// `target` is at `lladdr`.
    Advert { target: Ipv6Addr, lladdr: Option<Mac> },
}

/// Parses an NDISC NS/NA from the ICMPv6 message at `l4..end` of `frame`.
pub(crate) fn parse_nd(
    frame: &[u8],
    src: Ipv6Addr,
    dst: Ipv6Addr,
    l4: usize,
    end: usize,
) -> Option<Nd> {
    let p = Icmpv6Packet::new_checked(frame.get(l4..end)?).ok()?;
    let repr = Icmpv6Repr::parse(&src, &dst, &p, &ChecksumCapabilities::default()).ok()?;
    let mac =
        |l: Option<RawHardwareAddress>| l.and_then(|l| <[u8; 6]>::try_from(l.as_bytes()).ok());
    match repr {
        Icmpv6Repr::Ndisc(NdiscRepr::NeighborSolicit { target_addr, lladdr }) => {
            Some(Nd::Solicit { src, target: target_addr, lladdr: mac(lladdr) })
        }
        Icmpv6Repr::Ndisc(NdiscRepr::NeighborAdvert { target_addr, lladdr, .. }) => {
            Some(Nd::Advert { target: target_addr, lladdr: mac(lladdr) })
        }
        _ => None,
    }
}

/// Writes a solicited neighbour advertisement for `target` to `(dst_mac, dst)`.
pub(crate) fn neighbor_advert(
    buf: &mut FrameBuf,
    our_mac: Mac,
    target: Ipv6Addr,
    dst_mac: Mac,
    dst: Ipv6Addr,
) {
    let flags = NdiscNeighborFlags::SOLICITED | NdiscNeighborFlags::OVERRIDE;
    let nd = NdiscRepr::NeighborAdvert {
        flags,
        target_addr: target,
        lladdr: Some(RawHardwareAddress::from(EthernetAddress(our_mac))),
    };
    emit_ndisc(buf, dst_mac, our_mac, target, dst, nd);
}

/// Writes an unsolicited neighbour advertisement (IPv6's gratuitous ARP) for `target`.
pub(crate) fn unsolicited_advert(buf: &mut FrameBuf, our_mac: Mac, target: Ipv6Addr) {
    let nd = NdiscRepr::NeighborAdvert {
        flags: NdiscNeighborFlags::OVERRIDE,
        target_addr: target,
        lladdr: Some(RawHardwareAddress::from(EthernetAddress(our_mac))),
    };
    let all_nodes = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
    emit_ndisc(buf, [0x33, 0x33, 0, 0, 0, 1], our_mac, target, all_nodes, nd);
}

/// Writes a neighbour solicitation for `target` from `(our_mac, our_ip)`.
pub(crate) fn neighbor_solicit(
    buf: &mut FrameBuf,
    our_mac: Mac,
    our_ip: Ipv6Addr,
    target: Ipv6Addr,
) {
    let (dst, dst_mac) = solicited_node(target);
    let nd = NdiscRepr::NeighborSolicit {
        target_addr: target,
        lladdr: Some(RawHardwareAddress::from(EthernetAddress(our_mac))),
    };
    emit_ndisc(buf, dst_mac, our_mac, our_ip, dst, nd);
}
