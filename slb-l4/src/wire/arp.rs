//! ARP for Ethernet and IPv4 (RFC 826) in a whole Ethernet frame: what the forwarder answers,
//! sends and learns from, and what the simulators' router and hosts read.
//!
//! smoltcp's checked view [`ArpPacket`] and its `ArpRepr` parse and emit the 28-byte message.
//! [`ArpRepr`] here is that message in slb's types, framed: the Ethernet source is the sender's
//! MAC, a request goes to the broadcast address and a reply to the target's MAC, and the frame
//! is zero-padded to the 60-byte Ethernet minimum. Untrusted bytes go through
//! [`ArpRepr::parse`], which checks every length before reading.
//!
//! ```
//! use std::net::Ipv4Addr;
//! use slb_l4::wire::arp::{ArpOperation, ArpRepr};
//!
//! let who_has = ArpRepr::request([2, 0, 0, 0, 0, 1], [10, 0, 0, 1].into(), [10, 0, 0, 2].into());
//! let frame = who_has.to_frame();
//! assert_eq!(frame.len(), 60);
//! let got = ArpRepr::parse(&frame).unwrap();
//! assert_eq!(got, who_has);
//! let answer = got.reply([2, 0, 0, 0, 0, 2]);
//! assert_eq!(answer.op, ArpOperation::Reply);
//! assert_eq!((answer.sender_ip, answer.target_ip), (Ipv4Addr::new(10, 0, 0, 2), got.sender_ip));
//! assert_eq!(answer.eth_dst(), [2, 0, 0, 0, 0, 1]);
//! ```

use std::net::Ipv4Addr;

pub use smoltcp::wire::{ArpOperation, ArpPacket};
use smoltcp::wire::{EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr};

use super::{BROADCAST, ETH_HDR, Mac, Malformed};

/// Length of an Ethernet/IPv4 ARP message.
pub const ARP_LEN: usize = 28;
/// The minimum Ethernet frame without FCS; ARP frames are zero-padded to it.
pub const MIN_FRAME_LEN: usize = 60;

/// An Ethernet/IPv4 ARP message, validated (see the module docs for its framing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArpRepr {
    /// Request, reply (or an operation code this crate does not act on).
    pub op: ArpOperation,
    /// Sender hardware address (also the frame's source MAC when emitted).
    pub sender_mac: Mac,
    /// Sender protocol address.
    pub sender_ip: Ipv4Addr,
    /// Target hardware address (zero in a request).
    pub target_mac: Mac,
    /// Target protocol address.
    pub target_ip: Ipv4Addr,
}

impl ArpRepr {
    /// A request from `(mac, ip)`: who has `target`?
    pub fn request(mac: Mac, ip: Ipv4Addr, target: Ipv4Addr) -> Self {
        ArpRepr {
            op: ArpOperation::Request,
            sender_mac: mac,
            sender_ip: ip,
            target_mac: [0; 6],
            target_ip: target,
        }
    }

    /// A gratuitous ARP for `ip` at `mac` (a broadcast request with sender = target, as
    /// `arping -U`): neighbours that know `ip` move it to `mac`.
    pub fn gratuitous(mac: Mac, ip: Ipv4Addr) -> Self {
        Self::request(mac, ip, ip)
    }

    /// The reply to this request from the owner of its target address, at `mac`.
    pub fn reply(&self, mac: Mac) -> Self {
        ArpRepr {
            op: ArpOperation::Reply,
            sender_mac: mac,
            sender_ip: self.target_ip,
            target_mac: self.sender_mac,
            target_ip: self.sender_ip,
        }
    }

    /// True for an announcement: the sender asks for (or answers) its own address.
    pub fn is_gratuitous(&self) -> bool {
        self.sender_ip == self.target_ip
    }

    /// The frame's destination MAC: the target's for a reply, else broadcast.
    pub fn eth_dst(&self) -> Mac {
        match self.op {
            ArpOperation::Reply => self.target_mac,
            _ => BROADCAST,
        }
    }

    /// Parses an ARP frame (Ethernet header included). Anything but a well-formed Ethernet/IPv4
    /// ARP message (another ethertype, short, other address types) is [`Malformed`].
    pub fn parse(frame: &[u8]) -> Result<Self, Malformed> {
        let eth = EthernetFrame::new_checked(frame).map_err(|_| Malformed)?;
        if eth.ethertype() != EthernetProtocol::Arp {
            return Err(Malformed);
        }
        let packet = ArpPacket::new_checked(eth.payload()).map_err(|_| Malformed)?;
        match smoltcp::wire::ArpRepr::parse(&packet).map_err(|_| Malformed)? {
            smoltcp::wire::ArpRepr::EthernetIpv4 {
                operation,
                source_hardware_addr,
                source_protocol_addr,
                target_hardware_addr,
                target_protocol_addr,
            } => Ok(ArpRepr {
                op: operation,
                sender_mac: source_hardware_addr.0,
                sender_ip: source_protocol_addr,
                target_mac: target_hardware_addr.0,
                target_ip: target_protocol_addr,
            }),
            #[allow(unreachable_patterns)] // smoltcp's ArpRepr is non-exhaustive
            _ => Err(Malformed),
        }
    }

    /// Length of the emitted frame (padding included).
    pub fn buffer_len(&self) -> usize {
        (ETH_HDR + ARP_LEN).max(MIN_FRAME_LEN)
    }

    /// Writes the frame into `frame[..self.buffer_len()]`, padding zeroed.
    ///
    /// # Panics
    /// When `frame` is shorter than [`ArpRepr::buffer_len`] (a caller's sizing bug, as with
    /// smoltcp's `emit`).
    pub fn emit(&self, frame: &mut [u8]) {
        let frame = &mut frame[..self.buffer_len()];
        frame.fill(0);
        EthernetRepr {
            src_addr: EthernetAddress(self.sender_mac),
            dst_addr: EthernetAddress(self.eth_dst()),
            ethertype: EthernetProtocol::Arp,
        }
        .emit(&mut EthernetFrame::new_unchecked(&mut frame[..]));
        smoltcp::wire::ArpRepr::EthernetIpv4 {
            operation: self.op,
            source_hardware_addr: EthernetAddress(self.sender_mac),
            source_protocol_addr: self.sender_ip,
            target_hardware_addr: EthernetAddress(self.target_mac),
            target_protocol_addr: self.target_ip,
        }
        .emit(&mut ArpPacket::new_unchecked(&mut frame[ETH_HDR..ETH_HDR + ARP_LEN]));
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

    fn op() -> impl Strategy<Value = ArpOperation> {
        prop_oneof![Just(ArpOperation::Request), Just(ArpOperation::Reply)]
    }

    proptest! {
        #[test]
        fn emit_then_parse_is_identity(
            op in op(),
            sm in any::<Mac>(),
            si in any::<[u8; 4]>(),
            tm in any::<Mac>(),
            ti in any::<[u8; 4]>(),
        ) {
            let r = ArpRepr {
                op, sender_mac: sm, sender_ip: si.into(), target_mac: tm, target_ip: ti.into(),
            };
            let f = r.to_frame();
            prop_assert_eq!(&f[0..6], &r.eth_dst());
            prop_assert_eq!(&f[6..12], &sm);
            prop_assert_eq!(ArpRepr::parse(&f), Ok(r));
        }

        #[test]
        fn arbitrary_bytes_never_panic(f in prop::collection::vec(any::<u8>(), 0..80)) {
            let _ = ArpRepr::parse(&f);
        }
    }

    #[test]
    fn other_frames_are_malformed() {
        let r = ArpRepr::gratuitous([2, 0, 0, 0, 0, 1], [10, 0, 0, 1].into());
        assert!(r.is_gratuitous());
        let mut f = r.to_frame();
        assert_eq!(&f[0..6], &BROADCAST);
        assert!(ArpRepr::parse(&f[..ETH_HDR + ARP_LEN - 1]).is_err(), "short");
        f[ETH_HDR + 4] = 16; // hardware address length
        assert!(ArpRepr::parse(&f).is_err(), "not Ethernet/IPv4");
        f = r.to_frame();
        f[13] = 0x00; // ethertype 0x0800
        assert!(ArpRepr::parse(&f).is_err(), "not ARP");
    }
}
