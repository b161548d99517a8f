//! Compact in-table key representations: 16 bytes for IPv4, 38 for IPv6.
//!
//! The public [`FlowKey`] holds two `IpAddr`s (40 bytes). The table stores keys per family in a
//! packed form so that an IPv4 session, with its forward and reverse key, fits in well under
//! 128 bytes.

use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::flow::{FlowKey, Protocol};

/// A packed key of one address family.
pub(crate) trait PackedKey: Copy + Eq + Hash + std::fmt::Debug {
    /// Packs `k` if it is of this family.
    fn pack(k: &FlowKey) -> Option<Self>;
    /// Unpacks.
    fn unpack(&self) -> FlowKey;
    /// Words fed to the table's hash.
    fn words(&self) -> (u64, u64, u64);
    /// The key's first four bytes (a burst lookup reads them to fetch the key's cache line).
    fn word0(&self) -> u32;
    /// A value no [`PackedKey::pack`] returns (protocol number 0): marks "no key" in the
    /// table's reverse-key array.
    const NONE: Self;
    /// True for [`PackedKey::NONE`].
    fn is_none(&self) -> bool;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(C)]
pub(crate) struct K4 {
    src: u32,
    dst: u32,
    src_port: u16,
    dst_port: u16,
    proto: u8,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(C)]
pub(crate) struct K6 {
    src: [u8; 16],
    dst: [u8; 16],
    src_port: u16,
    dst_port: u16,
    proto: u8,
}

impl PackedKey for K4 {
    #[inline]
    fn pack(k: &FlowKey) -> Option<Self> {
        match (k.src, k.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => Some(K4 {
                src: u32::from(s),
                dst: u32::from(d),
                src_port: k.src_port,
                dst_port: k.dst_port,
                proto: k.proto.number(),
            }),
            _ => None,
        }
    }

    #[inline]
    fn unpack(&self) -> FlowKey {
        FlowKey {
            proto: proto(self.proto),
            src: IpAddr::V4(Ipv4Addr::from(self.src)),
            dst: IpAddr::V4(Ipv4Addr::from(self.dst)),
            src_port: self.src_port,
            dst_port: self.dst_port,
        }
    }

    #[inline]
    fn words(&self) -> (u64, u64, u64) {
        (
            u64::from(self.src) << 32 | u64::from(self.dst),
            u64::from(self.src_port) << 16 | u64::from(self.dst_port),
            u64::from(self.proto),
        )
    }

    #[inline(always)]
    fn word0(&self) -> u32 {
        self.src
    }

    const NONE: Self = K4 { src: 0, dst: 0, src_port: 0, dst_port: 0, proto: 0 };

    #[inline(always)]
    fn is_none(&self) -> bool {
        self.proto == 0
    }
}

impl PackedKey for K6 {
    #[inline]
    fn pack(k: &FlowKey) -> Option<Self> {
        match (k.src, k.dst) {
            (IpAddr::V6(s), IpAddr::V6(d)) => Some(K6 {
                src: s.octets(),
                dst: d.octets(),
                src_port: k.src_port,
                dst_port: k.dst_port,
                proto: k.proto.number(),
            }),
            _ => None,
        }
    }

    fn unpack(&self) -> FlowKey {
        FlowKey {
            proto: proto(self.proto),
            src: IpAddr::V6(Ipv6Addr::from(self.src)),
            dst: IpAddr::V6(Ipv6Addr::from(self.dst)),
            src_port: self.src_port,
            dst_port: self.dst_port,
        }
    }

    #[inline]
    fn words(&self) -> (u64, u64, u64) {
        let s = u128::from_be_bytes(self.src);
        let d = u128::from_be_bytes(self.dst);
        let x = s ^ d.rotate_left(64);
        (
            (x >> 64) as u64 ^ u64::from(self.proto),
            x as u64,
            u64::from(self.src_port) << 16 | u64::from(self.dst_port) | ((d as u64) << 32),
        )
    }

    #[inline(always)]
    fn word0(&self) -> u32 {
        u32::from_ne_bytes([self.src[0], self.src[1], self.src[2], self.src[3]])
    }

    const NONE: Self = K6 { src: [0; 16], dst: [0; 16], src_port: 0, dst_port: 0, proto: 0 };

    #[inline(always)]
    fn is_none(&self) -> bool {
        self.proto == 0
    }
}

#[inline]
fn proto(n: u8) -> Protocol {
    // Keys are only built from `FlowKey`s, whose protocol numbers are all known.
    Protocol::from_number(n).unwrap_or(Protocol::Tcp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_round_trip() {
        assert_eq!(size_of::<K4>(), 16);
        assert!(size_of::<K6>() <= 38);
        let k =
            FlowKey::v4(Protocol::Udp, Ipv4Addr::new(1, 2, 3, 4), 5, Ipv4Addr::new(6, 7, 8, 9), 10);
        assert_eq!(K4::pack(&k).unwrap().unpack(), k);
        assert!(K6::pack(&k).is_none());
        let k6 = FlowKey::new(
            Protocol::Tcp,
            "[2001:db8::1]:443".parse().unwrap(),
            "[2001:db8::2]:80".parse().unwrap(),
        );
        assert_eq!(K6::pack(&k6).unwrap().unpack(), k6);
        assert!(K4::pack(&k6).is_none());
        assert!(!K4::pack(&k).unwrap().is_none() && K4::NONE.is_none());
        assert!(!K6::pack(&k6).unwrap().is_none() && K6::NONE.is_none());
    }
}
