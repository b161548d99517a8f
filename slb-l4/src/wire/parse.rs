//! One pass over a frame's headers: offsets and fields the forwarder needs, through smoltcp's
//! checked views. After [`parse`] succeeds, every offset it returns lies inside the frame, so the
//! rewrite code may index the frame at those offsets without further length checks.

use std::net::IpAddr;

use smoltcp::wire::{
    EthernetFrame, EthernetProtocol, IpProtocol, Ipv4Packet, Ipv6Packet, TcpPacket, UdpPacket,
};

/// Length of an Ethernet header (no VLAN tag).
pub const ETH_HDR: usize = 14;
/// Offset of the IP header in a frame.
pub const L3: usize = ETH_HDR;

/// Transport protocol numbers.
pub mod proto {
    /// ICMP.
    pub const ICMP: u8 = 1;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// IPv6 fragment header.
    pub const FRAGMENT: u8 = 44;
    /// ICMPv6.
    pub const ICMPV6: u8 = 58;
}

/// Fragment status of an IP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frag {
    /// Not a fragment.
    No,
    /// A fragment (IPv4 with MF or an offset; IPv6 with a fragment header).
    Yes,
}

/// What [`parse`] found in an IP frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpMeta {
    /// IPv6 (else IPv4).
    pub v6: bool,
    /// Offset of the transport header (just past the IP header).
    pub l4: usize,
    /// End of the IP packet in the frame (Ethernet padding may follow).
    pub end: usize,
    /// Transport protocol (the fixed header's next header for IPv6).
    pub proto: u8,
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// TTL / hop limit.
    pub ttl: u8,
    /// Fragment status.
    pub frag: Frag,
    /// Source port (TCP/UDP), else 0.
    pub sport: u16,
    /// Destination port (TCP/UDP), else 0.
    pub dport: u16,
    /// TCP flags byte, else 0.
    pub tcp_flags: u8,
    /// TCP header length, else 0.
    pub tcp_hlen: usize,
}

impl IpMeta {
    /// Length of the transport segment (header + payload).
    pub fn l4_len(&self) -> usize {
        self.end - self.l4
    }
}

/// What kind of frame this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// ARP.
    Arp,
    /// IPv4 or IPv6 with valid headers.
    Ip(IpMeta),
    /// Another ethertype (including VLAN-tagged frames).
    Other,
}

/// The frame was too short or its headers inconsistent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Malformed;

/// The destination MAC and kind of `frame`.
#[inline]
pub fn parse(frame: &[u8]) -> Result<Kind, Malformed> {
    match parse_common(frame) {
        Some(c) => Ok(Kind::Ip(c.meta())),
        None => parse_views(frame),
    }
}

/// What [`parse_common`] reads from the common frame (IPv4 without options, not a fragment,
/// TCP or UDP with a complete header): the fields of its [`IpMeta`] that vary, in 20 bytes
/// (the batch step keeps one per frame).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommonV4 {
    /// Source address.
    pub src: u32,
    /// Destination address.
    pub dst: u32,
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// The IP total length (the packet ends at `L3 + total`).
    pub total: u16,
    /// [`proto::TCP`] or [`proto::UDP`].
    pub proto: u8,
    /// TTL.
    pub ttl: u8,
    /// TCP flags byte, else 0.
    pub tcp_flags: u8,
    /// TCP header length, else 0.
    pub tcp_hlen: u8,
}

impl CommonV4 {
    /// Offset of the transport header.
    pub const L4: usize = L3 + 20;

    /// End of the IP packet in the frame.
    #[inline(always)]
    pub fn end(&self) -> usize {
        L3 + usize::from(self.total)
    }

    /// The packet's [`IpMeta`]: what [`parse`] returns for the frame.
    #[inline]
    pub fn meta(&self) -> IpMeta {
        IpMeta {
            v6: false,
            l4: Self::L4,
            end: self.end(),
            proto: self.proto,
            src: IpAddr::V4(self.src.into()),
            dst: IpAddr::V4(self.dst.into()),
            ttl: self.ttl,
            frag: Frag::No,
            sport: self.sport,
            dport: self.dport,
            tcp_flags: self.tcp_flags,
            tcp_hlen: usize::from(self.tcp_hlen),
        }
    }
}

/// The common frame, read at fixed offsets: IPv4 without options, not a fragment, TCP or UDP
/// with a complete header. `None` for anything else (then `parse_views` decides); accepts
/// only what `parse_views` accepts, with the same result (a property test checks both).
#[inline(always)]
pub fn parse_common(frame: &[u8]) -> Option<CommonV4> {
    const L4: usize = CommonV4::L4;
    if frame.len() < L4 || frame[12..14] != [0x08, 0x00] || frame[L3] != 0x45 {
        return None;
    }
    let total = be16(frame, L3 + 2);
    let end = L3 + usize::from(total);
    if total < 20 || end > frame.len() || be16(frame, L3 + 6) & 0x3fff != 0 {
        return None;
    }
    let proto = frame[L3 + 9];
    let seg = &frame[L4..end];
    let (tcp_flags, tcp_hlen) = match proto {
        proto::TCP if seg.len() >= 20 => {
            let hlen = (seg[12] >> 4) * 4;
            if hlen < 20 || seg.len() < usize::from(hlen) {
                return None;
            }
            (seg[13], hlen)
        }
        proto::UDP if seg.len() >= 8 => {
            let len = usize::from(be16(seg, 4));
            if len < 8 || seg.len() < len {
                return None;
            }
            (0, 0)
        }
        _ => return None,
    };
    let addr =
        |at: usize| u32::from_be_bytes([frame[at], frame[at + 1], frame[at + 2], frame[at + 3]]);
    Some(CommonV4 {
        src: addr(L3 + 12),
        dst: addr(L3 + 16),
        sport: be16(seg, 0),
        dport: be16(seg, 2),
        total,
        proto,
        ttl: frame[L3 + 8],
        tcp_flags,
        tcp_hlen,
    })
}

/// [`parse`] through smoltcp's checked views: every frame.
pub(crate) fn parse_views(frame: &[u8]) -> Result<Kind, Malformed> {
    let eth = EthernetFrame::new_checked(frame).map_err(|_| Malformed)?;
    match eth.ethertype() {
        EthernetProtocol::Arp => Ok(Kind::Arp),
        EthernetProtocol::Ipv4 => parse_v4(frame).map(Kind::Ip),
        EthernetProtocol::Ipv6 => parse_v6(frame).map(Kind::Ip),
        _ => Ok(Kind::Other),
    }
}

fn parse_v4(frame: &[u8]) -> Result<IpMeta, Malformed> {
    let ip = Ipv4Packet::new_checked(&frame[L3..]).map_err(|_| Malformed)?;
    if ip.version() != 4 {
        return Err(Malformed);
    }
    let l4 = L3 + usize::from(ip.header_len());
    let end = L3 + usize::from(ip.total_len());
    let frag = if ip.more_frags() || ip.frag_offset() != 0 { Frag::Yes } else { Frag::No };
    let mut m = IpMeta {
        v6: false,
        l4,
        end,
        proto: u8::from(ip.next_header()),
        src: IpAddr::V4(ip.src_addr()),
        dst: IpAddr::V4(ip.dst_addr()),
        ttl: ip.hop_limit(),
        frag,
        sport: 0,
        dport: 0,
        tcp_flags: 0,
        tcp_hlen: 0,
    };
    if frag == Frag::No {
        transport(frame, &mut m)?;
    }
    Ok(m)
}

fn parse_v6(frame: &[u8]) -> Result<IpMeta, Malformed> {
    let ip = Ipv6Packet::new_checked(&frame[L3..]).map_err(|_| Malformed)?;
    if ip.version() != 6 {
        return Err(Malformed);
    }
    let l4 = L3 + ip.header_len();
    let end = L3 + ip.total_len();
    let proto = u8::from(ip.next_header());
    let mut m = IpMeta {
        v6: true,
        l4,
        end,
        proto,
        src: IpAddr::V6(ip.src_addr()),
        dst: IpAddr::V6(ip.dst_addr()),
        ttl: ip.hop_limit(),
        frag: if proto == proto::FRAGMENT { Frag::Yes } else { Frag::No },
        sport: 0,
        dport: 0,
        tcp_flags: 0,
        tcp_hlen: 0,
    };
    transport(frame, &mut m)?;
    Ok(m)
}

/// Fills ports and flags for TCP and UDP; checks that ICMP headers are present.
fn transport(frame: &[u8], m: &mut IpMeta) -> Result<(), Malformed> {
    let seg = &frame[m.l4..m.end];
    match m.proto {
        proto::TCP => {
            let t = TcpPacket::new_checked(seg).map_err(|_| Malformed)?;
            m.sport = t.src_port();
            m.dport = t.dst_port();
            m.tcp_flags = seg[13];
            m.tcp_hlen = usize::from(t.header_len());
        }
        proto::UDP => {
            let u = UdpPacket::new_checked(seg).map_err(|_| Malformed)?;
            m.sport = u.src_port();
            m.dport = u.dst_port();
        }
        proto::ICMP | proto::ICMPV6 if seg.len() < 8 => return Err(Malformed),
        _ => {}
    }
    Ok(())
}

/// Reads a big-endian u16 at `at` (callers index only inside parsed headers).
#[inline(always)]
pub fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Writes a big-endian u16 at `at`.
#[inline(always)]
pub fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

/// The protocol number as smoltcp's type.
pub fn ip_protocol(p: u8) -> IpProtocol {
    IpProtocol::from(p)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Valid IPv4 TCP and UDP frames, then some of their header bytes overwritten.
    fn mutated_frames() -> impl Strategy<Value = Vec<u8>> {
        let base = (any::<bool>(), 0usize..40, any::<[u8; 8]>()).prop_map(|(tcp, pay, b)| {
            let mut f = vec![0u8; 14 + 20 + if tcp { 20 } else { 8 } + pay];
            f[12] = 0x08;
            f[14] = 0x45;
            let total = (f.len() - 14) as u16;
            f[16..18].copy_from_slice(&total.to_be_bytes());
            f[22] = b[0];
            f[23] = if tcp { 6 } else { 17 };
            f[26..34].copy_from_slice(&b);
            if tcp {
                f[46] = 0x50;
                f[47] = b[1];
            } else {
                f[38..40].copy_from_slice(&(8 + pay as u16).to_be_bytes());
            }
            f
        });
        (base, prop::collection::vec((0usize..64, any::<u8>()), 0..4), 0usize..8).prop_map(
            |(mut f, edits, cut)| {
                for (at, v) in edits {
                    if at < f.len() {
                        f[at] = v;
                    }
                }
                f.truncate(f.len().saturating_sub(cut));
                f
            },
        )
    }

    proptest! {
        #[test]
        fn the_fixed_offset_parse_agrees_with_the_views(f in mutated_frames()) {
            if let Some(c) = parse_common(&f) {
                prop_assert_eq!(parse_views(&f), Ok(Kind::Ip(c.meta())));
            }
        }
    }

    #[test]
    fn short_and_inconsistent_frames_are_malformed() {
        assert_eq!(parse(&[0u8; 10]), Err(Malformed));
        let mut f = vec![0u8; 14 + 20];
        f[12] = 0x08;
        f[14] = 0x45;
        f[16..18].copy_from_slice(&100u16.to_be_bytes()); // total length beyond the frame
        assert_eq!(parse(&f), Err(Malformed));
        f[16..18].copy_from_slice(&20u16.to_be_bytes());
        f[23] = 6; // TCP, but no TCP header
        assert_eq!(parse(&f), Err(Malformed));
        f[23] = 99;
        assert!(matches!(parse(&f), Ok(Kind::Ip(m)) if m.proto == 99 && m.l4 == 34));
    }
}
