//! IPv6 neighbour discovery (RFC 4861): the neighbour solicitations and advertisements the
//! forwarder answers, sends and learns from.
//!
//! smoltcp's checked view [`Icmpv6Packet`] and its `NdiscRepr` parse and emit the ICMPv6
//! message (the checksum is verified on parse and filled on emit). [`NdRepr`] is that message
//! in slb's types; [`NdFrame`] adds the IPv6 header (hop limit 255, which receivers require)
//! and the Ethernet header around it. Untrusted bytes go through [`NdRepr::parse`].
//!
//! ```
//! use std::net::Ipv6Addr;
//! use slb_l4::wire::nd::{NdFrame, NdRepr};
//! use slb_l4::wire::{Kind, parse};
//!
//! let (mac, ours, target) = ([2, 0, 0, 0, 0, 1], "fd00::1".parse().unwrap(), "fd00::2".parse().unwrap());
//! let ns = NdFrame::solicit(mac, ours, target);
//! let frame = ns.to_frame();
//! let Ok(Kind::Ip(m)) = parse(&frame) else { panic!() };
//! assert_eq!(m.dst, "ff02::1:ff00:2".parse::<Ipv6Addr>().unwrap());
//! let got = NdRepr::parse(ours, "ff02::1:ff00:2".parse().unwrap(), &frame[m.l4..m.end]);
//! assert_eq!(got, Ok(NdRepr::Solicit { target, lladdr: Some(mac) }));
//! ```

use std::net::Ipv6Addr;

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, Icmpv6Repr, IpProtocol,
    Ipv6Packet, Ipv6Repr, NdiscRepr, RawHardwareAddress,
};
pub use smoltcp::wire::{Icmpv6Packet, NdiscNeighborFlags};

use super::{ETH_HDR, Mac, Malformed};

/// The hop limit of every neighbour discovery message (RFC 4861 section 7.1).
pub const ND_HOP_LIMIT: u8 = 255;

/// A neighbour solicitation or advertisement, validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NdRepr {
    /// Who has `target`? `lladdr`: the sender's MAC (source link-layer address option).
    Solicit {
        /// The address being resolved.
        target: Ipv6Addr,
        /// The sender's MAC, if the message carries it.
        lladdr: Option<Mac>,
    },
    /// `target` is at `lladdr` (target link-layer address option).
    Advert {
        /// Router, solicited, override.
        flags: NdiscNeighborFlags,
        /// The address advertised.
        target: Ipv6Addr,
        /// Its MAC, if the message carries it.
        lladdr: Option<Mac>,
    },
}

impl NdRepr {
    /// Parses the ICMPv6 message `icmp` sent from `src` to `dst` (the checksum covers them).
    /// Anything but a well-formed NS or NA with a valid checksum is [`Malformed`].
    pub fn parse(src: Ipv6Addr, dst: Ipv6Addr, icmp: &[u8]) -> Result<Self, Malformed> {
        let p = Icmpv6Packet::new_checked(icmp).map_err(|_| Malformed)?;
        let repr = Icmpv6Repr::parse(&src, &dst, &p, &ChecksumCapabilities::default())
            .map_err(|_| Malformed)?;
        let mac =
            |l: Option<RawHardwareAddress>| l.and_then(|l| <Mac>::try_from(l.as_bytes()).ok());
        match repr {
            Icmpv6Repr::Ndisc(NdiscRepr::NeighborSolicit { target_addr, lladdr }) => {
                Ok(NdRepr::Solicit { target: target_addr, lladdr: mac(lladdr) })
            }
            Icmpv6Repr::Ndisc(NdiscRepr::NeighborAdvert { flags, target_addr, lladdr }) => {
                Ok(NdRepr::Advert { flags, target: target_addr, lladdr: mac(lladdr) })
            }
            _ => Err(Malformed),
        }
    }

    fn icmp(&self) -> Icmpv6Repr<'static> {
        let ll = |m: Option<Mac>| m.map(|m| RawHardwareAddress::from(EthernetAddress(m)));
        Icmpv6Repr::Ndisc(match *self {
            NdRepr::Solicit { target, lladdr } => {
                NdiscRepr::NeighborSolicit { target_addr: target, lladdr: ll(lladdr) }
            }
            NdRepr::Advert { flags, target, lladdr } => {
                NdiscRepr::NeighborAdvert { flags, target_addr: target, lladdr: ll(lladdr) }
            }
        })
    }

    /// Length of the ICMPv6 message.
    pub fn buffer_len(&self) -> usize {
        self.icmp().buffer_len()
    }

    /// Writes the ICMPv6 message from `src` to `dst` into `icmp[..self.buffer_len()]`, checksum
    /// filled.
    ///
    /// # Panics
    /// When `icmp` is shorter than [`NdRepr::buffer_len`].
    pub fn emit(&self, src: Ipv6Addr, dst: Ipv6Addr, icmp: &mut [u8]) {
        let repr = self.icmp();
        let len = repr.buffer_len();
        repr.emit(
            &src,
            &dst,
            &mut Icmpv6Packet::new_unchecked(&mut icmp[..len]),
            &ChecksumCapabilities::default(),
        );
    }
}

/// The solicited-node multicast address of `ip` (`ff02::1:ffXX:XXXX`) and its Ethernet
/// multicast MAC (`33:33:` and the address's last four bytes).
pub fn solicited_node(ip: Ipv6Addr) -> (Ipv6Addr, Mac) {
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

/// The all-nodes multicast address and its MAC: where unsolicited advertisements go.
pub const ALL_NODES: (Ipv6Addr, Mac) =
    (Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1), [0x33, 0x33, 0, 0, 0, 1]);

/// A neighbour discovery message with its IPv6 and Ethernet headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NdFrame {
    /// Ethernet source.
    pub eth_src: Mac,
    /// Ethernet destination.
    pub eth_dst: Mac,
    /// IPv6 source.
    pub src: Ipv6Addr,
    /// IPv6 destination.
    pub dst: Ipv6Addr,
    /// The message.
    pub nd: NdRepr,
}

impl NdFrame {
    /// A solicitation for `target` from `(mac, ip)`, to the target's solicited-node group.
    pub fn solicit(mac: Mac, ip: Ipv6Addr, target: Ipv6Addr) -> Self {
        let (dst, eth_dst) = solicited_node(target);
        let nd = NdRepr::Solicit { target, lladdr: Some(mac) };
        NdFrame { eth_src: mac, eth_dst, src: ip, dst, nd }
    }

    /// The solicited advertisement of `target` at `mac`, to the soliciting `(to_mac, to)`.
    pub fn advert(mac: Mac, target: Ipv6Addr, to_mac: Mac, to: Ipv6Addr) -> Self {
        let flags = NdiscNeighborFlags::SOLICITED | NdiscNeighborFlags::OVERRIDE;
        let nd = NdRepr::Advert { flags, target, lladdr: Some(mac) };
        NdFrame { eth_src: mac, eth_dst: to_mac, src: target, dst: to, nd }
    }

    /// An unsolicited advertisement of `target` at `mac` to all nodes (IPv6's gratuitous ARP).
    pub fn unsolicited_advert(mac: Mac, target: Ipv6Addr) -> Self {
        let nd = NdRepr::Advert { flags: NdiscNeighborFlags::OVERRIDE, target, lladdr: Some(mac) };
        let (dst, eth_dst) = ALL_NODES;
        NdFrame { eth_src: mac, eth_dst, src: target, dst, nd }
    }

    fn ip(&self) -> Ipv6Repr {
        Ipv6Repr {
            src_addr: self.src,
            dst_addr: self.dst,
            next_header: IpProtocol::Icmpv6,
            payload_len: self.nd.buffer_len(),
            hop_limit: ND_HOP_LIMIT,
        }
    }

    /// Length of the emitted frame.
    pub fn buffer_len(&self) -> usize {
        ETH_HDR + self.ip().buffer_len() + self.nd.buffer_len()
    }

    /// Writes the frame into `frame[..self.buffer_len()]`.
    ///
    /// # Panics
    /// When `frame` is shorter than [`NdFrame::buffer_len`].
    pub fn emit(&self, frame: &mut [u8]) {
        let ip = self.ip();
        let l4 = ETH_HDR + ip.buffer_len();
        let frame = &mut frame[..self.buffer_len()];
        EthernetRepr {
            src_addr: EthernetAddress(self.eth_src),
            dst_addr: EthernetAddress(self.eth_dst),
            ethertype: EthernetProtocol::Ipv6,
        }
        .emit(&mut EthernetFrame::new_unchecked(&mut frame[..]));
        ip.emit(&mut Ipv6Packet::new_unchecked(&mut frame[ETH_HDR..]));
        self.nd.emit(self.src, self.dst, &mut frame[l4..]);
    }

    /// The frame in a new vector.
    pub fn to_frame(&self) -> Vec<u8> {
        let mut f = vec![0u8; self.buffer_len()];
        self.emit(&mut f);
        f
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::wire::{Kind, parse};

    fn v6() -> impl Strategy<Value = Ipv6Addr> {
        any::<[u8; 16]>().prop_map(Ipv6Addr::from)
    }

    fn nd() -> impl Strategy<Value = NdRepr> {
        let mac = prop::option::of(any::<Mac>());
        prop_oneof![
            (v6(), mac.clone()).prop_map(|(target, lladdr)| NdRepr::Solicit { target, lladdr }),
            (0u8..8, v6(), mac).prop_map(|(f, target, lladdr)| NdRepr::Advert {
                flags: NdiscNeighborFlags::from_bits_truncate(f << 5),
                target,
                lladdr,
            }),
        ]
    }

    proptest! {
        #[test]
        fn emit_then_parse_is_identity(
            nd in nd(), src in v6(), dst in v6(), es in any::<Mac>(), ed in any::<Mac>(),
        ) {
            let f = NdFrame { eth_src: es, eth_dst: ed, src, dst, nd }.to_frame();
            let Ok(Kind::Ip(m)) = parse(&f) else { panic!("not IPv6") };
            prop_assert_eq!((m.src, m.dst, m.ttl), (src.into(), dst.into(), ND_HOP_LIMIT));
            prop_assert_eq!(&f[0..12], &[ed, es].concat()[..]);
            prop_assert_eq!(NdRepr::parse(src, dst, &f[m.l4..m.end]), Ok(nd));
        }

        #[test]
        fn arbitrary_bytes_never_panic(b in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = NdRepr::parse(Ipv6Addr::LOCALHOST, Ipv6Addr::LOCALHOST, &b);
        }
    }

    #[test]
    fn a_bad_checksum_is_malformed() {
        let ours: Ipv6Addr = "fd00::1".parse().unwrap();
        let f = NdFrame::solicit([2, 0, 0, 0, 0, 1], ours, "fd00::2".parse().unwrap());
        let mut b = f.to_frame();
        let l4 = ETH_HDR + 40;
        assert!(NdRepr::parse(f.src, f.dst, &b[l4..]).is_ok());
        b[l4 + 2] ^= 1;
        assert_eq!(NdRepr::parse(f.src, f.dst, &b[l4..]), Err(Malformed));
        assert_eq!(
            solicited_node("fd00::12:3456".parse().unwrap()).1,
            [0x33, 0x33, 0xff, 0x12, 0x34, 0x56]
        );
    }
}
