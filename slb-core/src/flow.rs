//! Flows and the stable keyed hash every node of a cluster agrees on.
//!
//! A [`FlowKey`] names one direction of a transport flow (protocol, addresses, ports) for IPv4 or
//! IPv6. [`HashKey`] is a 128-bit cluster secret; [`HashKey::hash_flow`] and
//! [`HashKey::hash_bytes`] are fixed functions of the key and the input, identical on every node,
//! every run and every version of slb (a test pins reference outputs), so consistent schedulers on
//! different nodes map the same flow to the same backend. The hash is keyed so that an outsider
//! cannot aim many flows at one backend or one hash bucket; it is not a cryptographic MAC.

use core::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// Transport protocol of a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Protocol {
    /// TCP (IP protocol 6).
    Tcp,
    /// UDP (IP protocol 17).
    Udp,
    /// ICMP (IP protocol 1).
    Icmp,
    /// ICMPv6 (IP protocol 58).
    Icmpv6,
}

impl Protocol {
    /// The IP protocol number.
    pub const fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Icmp => 1,
            Protocol::Icmpv6 => 58,
        }
    }

    /// The protocol with IP protocol number `n`, if slb knows it.
    pub const fn from_number(n: u8) -> Option<Protocol> {
        match n {
            6 => Some(Protocol::Tcp),
            17 => Some(Protocol::Udp),
            1 => Some(Protocol::Icmp),
            58 => Some(Protocol::Icmpv6),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Icmp => "ICMP",
            Protocol::Icmpv6 => "ICMPv6",
        })
    }
}

/// One direction of a transport flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    /// Transport protocol.
    pub proto: Protocol,
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Source port (0 for protocols without ports).
    pub src_port: u16,
    /// Destination port (0 for protocols without ports).
    pub dst_port: u16,
}

impl FlowKey {
    /// A flow from `src` to `dst`.
    pub fn new(proto: Protocol, src: SocketAddr, dst: SocketAddr) -> Self {
        FlowKey { proto, src: src.ip(), dst: dst.ip(), src_port: src.port(), dst_port: dst.port() }
    }

    /// An IPv4 flow, the common case, without building socket addresses.
    pub fn v4(proto: Protocol, src: Ipv4Addr, src_port: u16, dst: Ipv4Addr, dst_port: u16) -> Self {
        FlowKey { proto, src: IpAddr::V4(src), dst: IpAddr::V4(dst), src_port, dst_port }
    }

    /// The source as a socket address.
    pub fn src_addr(&self) -> SocketAddr {
        SocketAddr::new(self.src, self.src_port)
    }

    /// The destination as a socket address.
    pub fn dst_addr(&self) -> SocketAddr {
        SocketAddr::new(self.dst, self.dst_port)
    }

    /// The same flow seen from the other end.
    pub fn reversed(&self) -> FlowKey {
        FlowKey {
            proto: self.proto,
            src: self.dst,
            dst: self.src,
            src_port: self.dst_port,
            dst_port: self.src_port,
        }
    }

    /// True when both addresses are IPv4.
    pub fn is_ipv4(&self) -> bool {
        self.src.is_ipv4() && self.dst.is_ipv4()
    }
}

impl fmt::Display for FlowKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} -> {}", self.proto, self.src_addr(), self.dst_addr())
    }
}

/// A 128-bit hashing key shared by every node of a cluster.
///
/// Nodes that must agree on flow placement (consistent schedulers, session sync) use the same
/// key; the default key is a fixed public constant, fine for a single node or a trusted cluster.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct HashKey {
    k0: u64,
    k1: u64,
}

impl fmt::Debug for HashKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HashKey(..)")
    }
}

impl Default for HashKey {
    fn default() -> Self {
        HashKey::new(0x736c_622d_6861_7368, 0x6b65_792d_7630_3031)
    }
}

const P0: u64 = 0xa076_1d64_78bd_642f;
const P1: u64 = 0xe703_7ed1_a0b4_28db;
const P2: u64 = 0x8ebc_6af0_9c88_c6e3;

/// 64x64 -> 128 multiply, folded to 64 bits by xor of the halves.
#[inline(always)]
fn fold_mul(a: u64, b: u64) -> u64 {
    let r = u128::from(a) * u128::from(b);
    (r as u64) ^ ((r >> 64) as u64)
}

impl HashKey {
    /// A key from two 64-bit halves.
    pub const fn new(k0: u64, k1: u64) -> Self {
        HashKey { k0, k1 }
    }

    /// A key from 16 bytes (little endian halves), e.g. read from a configuration secret.
    pub fn from_bytes(b: [u8; 16]) -> Self {
        let (lo, hi) = b.split_at(8);
        HashKey::new(
            u64::from_le_bytes(lo.try_into().unwrap_or([0; 8])),
            u64::from_le_bytes(hi.try_into().unwrap_or([0; 8])),
        )
    }

    #[inline(always)]
    fn absorb(&self, h: u64, a: u64, b: u64) -> u64 {
        fold_mul(a ^ h ^ self.k0, b ^ P1 ^ self.k1)
    }

    #[inline(always)]
    fn finish(&self, h: u64, len: u64) -> u64 {
        fold_mul(h ^ len ^ P2, self.k1 ^ P0)
    }

    /// Hash of a flow key (all five fields).
    #[inline]
    pub fn hash_flow(&self, k: &FlowKey) -> u64 {
        let head = u64::from(k.proto.number())
            | u64::from(k.src_port) << 8
            | u64::from(k.dst_port) << 24
            | u64::from(k.src.is_ipv6()) << 40
            | u64::from(k.dst.is_ipv6()) << 41;
        let (s0, s1) = ip_words(k.src);
        let (d0, d1) = ip_words(k.dst);
        let mut h = self.absorb(P0, head, s0);
        h = self.absorb(h, s1, d0);
        h = self.absorb(h, d1, head);
        self.finish(h, 37)
    }

    /// Hash of three words (the session table's packed keys).
    #[inline(always)]
    pub(crate) fn hash_words(&self, a: u64, b: u64, c: u64) -> u64 {
        let h = self.absorb(P0, a, b);
        self.finish(self.absorb(h, c, a), 24)
    }

    /// Hash of an address alone (source-hash and destination-hash scheduling).
    #[inline]
    pub fn hash_ip(&self, ip: IpAddr) -> u64 {
        let (a, b) = ip_words(ip);
        let h = self.absorb(P0, a, b ^ u64::from(ip.is_ipv6()));
        self.finish(h, 16)
    }

    /// Hash of arbitrary bytes (an HTTP header, cookie or URI; a backend's name).
    pub fn hash_bytes(&self, bytes: &[u8]) -> u64 {
        let mut h = P0;
        let mut chunks = bytes.chunks_exact(16);
        for c in &mut chunks {
            let (a, b) = c.split_at(8);
            h = self.absorb(h, le64(a), le64(b));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let (a, b) = rest.split_at(rest.len().min(8));
            h = self.absorb(h, le64(a), le64(b));
        }
        self.finish(h, bytes.len() as u64)
    }
}

/// Little-endian value of up to 8 bytes (shorter slices are zero-extended).
#[inline(always)]
fn le64(b: &[u8]) -> u64 {
    let mut buf = [0u8; 8];
    let n = b.len().min(8);
    buf[..n].copy_from_slice(&b[..n]);
    u64::from_le_bytes(buf)
}

#[inline(always)]
fn ip_words(ip: IpAddr) -> (u64, u64) {
    match ip {
        IpAddr::V4(a) => (u64::from(u32::from(a)), 0),
        IpAddr::V6(a) => {
            let v = u128::from(a);
            ((v >> 64) as u64, v as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow() -> FlowKey {
        FlowKey::v4(
            Protocol::Tcp,
            Ipv4Addr::new(10, 0, 1, 2),
            40000,
            Ipv4Addr::new(10, 0, 0, 100),
            80,
        )
    }

    #[test]
    fn hash_is_pinned_across_versions() {
        // These values are part of the cluster contract: nodes running different slb versions must
        // place flows identically. Changing the function is a wire-incompatible change.
        let k = HashKey::default();
        assert_eq!(k.hash_flow(&flow()), 0xa5a7_6ea2_dc3e_5aea, "{:#x}", k.hash_flow(&flow()));
        assert_eq!(
            k.hash_bytes(b"10.0.2.11:80"),
            0x04e3_0746_e603_502e,
            "{:#x}",
            k.hash_bytes(b"10.0.2.11:80")
        );
    }

    #[test]
    fn hash_depends_on_every_field_and_key() {
        let k = HashKey::default();
        let base = k.hash_flow(&flow());
        let mut f = flow();
        f.src_port += 1;
        assert_ne!(k.hash_flow(&f), base);
        let mut f = flow();
        f.dst_port += 1;
        assert_ne!(k.hash_flow(&f), base);
        let mut f = flow();
        f.proto = Protocol::Udp;
        assert_ne!(k.hash_flow(&f), base);
        assert_ne!(k.hash_flow(&flow().reversed()), base);
        assert_ne!(HashKey::new(1, 2).hash_flow(&flow()), base);
        assert_ne!(k.hash_bytes(b"a"), k.hash_bytes(b"a\0"));
        assert_ne!(k.hash_bytes(b""), k.hash_bytes(b"\0"));
    }
}
