//! Wire formats: zero-copy parsing through smoltcp's checked views ([`parse`](mod@parse)), ARP
//! ([`arp`]) and IPv6 neighbour discovery ([`nd`]) in whole frames, checksum arithmetic
//! ([`csum`]), TCP options and TOA ([`toa`]).
//!
//! smoltcp's `wire` module is the one packet library of this crate: frames are parsed with its
//! `new_checked` views, and ARP / NDISC messages are parsed and emitted with its `Repr`s (wrapped
//! in [`arp::ArpRepr`] and [`nd::NdRepr`] / [`nd::NdFrame`], which every user of ARP and ND in
//! the crate goes through: the forwarder, the simulators, `craft`). What smoltcp does not offer
//! (incremental checksum updates, TOA insertion, MSS rewriting) is here.

pub mod arp;
pub mod csum;
pub mod nd;
pub mod parse;
pub mod toa;

use std::net::IpAddr;

pub use parse::{
    CommonV4, ETH_HDR, Frag, IpMeta, Kind, L3, Malformed, be16, parse, parse_common, proto, put16,
};
pub use toa::{parse_toa, parse_toa_any};

/// A MAC address.
pub type Mac = [u8; 6];

/// The broadcast MAC.
pub const BROADCAST: Mac = [0xff; 6];

/// Offset of the checksum field in a transport header of protocol `p`, if it has one.
#[inline]
pub fn l4_csum_offset(p: u8) -> Option<usize> {
    match p {
        proto::TCP => Some(16),
        proto::UDP => Some(6),
        proto::ICMP | proto::ICMPV6 => Some(2),
        _ => None,
    }
}

/// The pseudo-header sum (not complemented) for a transport segment of `len` bytes.
#[inline]
pub fn pseudo_sum(src: IpAddr, dst: IpAddr, p: u8, len: usize) -> u16 {
    let len = len as u32;
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let (s, d) = (u32::from(s), u32::from(d));
            csum::fold(
                (s >> 16) + (s & 0xffff) + (d >> 16) + (d & 0xffff) + u32::from(p) + (len & 0xffff),
            )
        }
        _ => {
            let (s, d) = (octets16(src), octets16(dst));
            csum::combine(&[
                csum::sum(&s),
                csum::sum(&d),
                csum::fold((len >> 16) + (len & 0xffff) + u32::from(p)),
            ])
        }
    }
}

fn octets16(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        IpAddr::V6(a) => a.octets(),
    }
}

/// Whether the transport checksum includes the IP pseudo-header.
fn has_pseudo(p: u8) -> bool {
    p != proto::ICMP
}

/// Recomputes the transport checksum of the IP packet `m` describes, fully.
/// UDP over IPv4 with checksum 0 (none) stays 0.
pub fn fill_l4_checksum(frame: &mut [u8], m: &IpMeta) {
    let Some(off) = l4_csum_offset(m.proto) else { return };
    let seg_len = m.end - m.l4;
    if seg_len < off + 2 {
        return;
    }
    let at = m.l4 + off;
    if m.proto == proto::UDP && !m.v6 && be16(frame, at) == 0 {
        return;
    }
    put16(frame, at, 0);
    let mut s = csum::sum(&frame[m.l4..m.end]);
    if has_pseudo(m.proto) {
        s = csum::combine(&[s, pseudo_sum(m.src, m.dst, m.proto, seg_len)]);
    }
    let mut c = !s;
    if m.proto == proto::UDP && c == 0 {
        c = 0xffff;
    }
    put16(frame, at, c);
}

/// The state of a transport checksum as found in a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CsumCheck {
    /// It verifies.
    Valid,
    /// It holds only the pseudo-header sum (left partial by a transmit offload).
    Partial,
    /// It is wrong (corrupted in transit, or a protocol without one).
    Invalid,
    /// UDP over IPv4 without a checksum (0).
    Absent,
}

/// Checks the transport checksum of the packet `m` describes.
pub fn check_l4_checksum(frame: &[u8], m: &IpMeta) -> CsumCheck {
    let Some(off) = l4_csum_offset(m.proto) else { return CsumCheck::Invalid };
    let seg = &frame[m.l4..m.end];
    if seg.len() < off + 2 {
        return CsumCheck::Invalid;
    }
    let field = be16(seg, off);
    if m.proto == proto::UDP && !m.v6 && field == 0 {
        return CsumCheck::Absent;
    }
    let pseudo = if has_pseudo(m.proto) { pseudo_sum(m.src, m.dst, m.proto, seg.len()) } else { 0 };
    if csum::combine(&[csum::sum(seg), pseudo]) == 0xffff {
        CsumCheck::Valid
    } else if has_pseudo(m.proto) && field == pseudo {
        CsumCheck::Partial
    } else {
        CsumCheck::Invalid
    }
}

/// Recomputes the IPv4 header checksum of the packet at `l3` (header length from the IHL).
pub fn fill_ipv4_checksum(frame: &mut [u8], l3: usize) {
    let ihl = usize::from(frame[l3] & 0x0f) * 4;
    put16(frame, l3 + 10, 0);
    let c = !csum::sum(&frame[l3..l3 + ihl]);
    put16(frame, l3 + 10, c);
}

/// True when the IPv4 header at `l3` has a valid checksum.
pub fn ipv4_checksum_ok(frame: &[u8], l3: usize) -> bool {
    let ihl = usize::from(frame[l3] & 0x0f) * 4;
    frame.len() >= l3 + ihl && csum::sum(&frame[l3..l3 + ihl]) == 0xffff
}
