//! The slb-sync wire format, version 1.
//!
//! Every datagram is one message: a fixed header, a body whose shape depends on the message type,
//! and a 16-byte authentication tag. All integers are big-endian. Untrusted bytes only ever go
//! through the `new_checked` constructors of the views ([`Datagram`], [`EntryView`]); after
//! that no accessor can panic. The owned forms ([`HeaderRepr`], [`EntryRepr`], [`Message`]) have
//! `parse`, `emit` and `buffer_len`.
//!
//! ## Header (40 bytes)
//! | offset | size | field |
//! |---:|---:|---|
//! | 0 | 4 | magic `"SLBS"` |
//! | 4 | 1 | version (1); a receiver drops other versions |
//! | 5 | 1 | message type (table below) |
//! | 6 | 2 | flags: bit 0 retransmission, bit 1 sender is joining (resync not complete), bit 2 resync ack "complete"; others 0, ignored |
//! | 8 | 4 | cluster id |
//! | 12 | 4 | sender node id (non-zero) |
//! | 16 | 4 | sender epoch (grows with every restart of the sender) |
//! | 20 | 8 | sequence number: unique per datagram within (sender, epoch); the replay window's input |
//! | 28 | 8 | stream number: type-specific (below) |
//! | 36 | 2 | count: entries or ranges in the body |
//! | 38 | 2 | reserved (sent as 0, ignored) |
//! | 40 | n | body |
//! | 40+n | 16 | tag: keyed BLAKE3 of bytes `0 .. 40+n` under the cluster key, first 16 bytes |
//!
//! ## Message types
//! | type | name | stream number | body |
//! |---:|---|---|---|
//! | 1 | updates | data sequence number of this datagram (1, 2, ... per epoch) | `count` entries |
//! | 2 | heartbeat | last data sequence number sent (0: none) | oldest data sequence number still in the resend queue (8) |
//! | 3 | nack | 0 | target node (4), target epoch (4), `count` x (first (8), last (8)) inclusive ranges of data sequence numbers |
//! | 4 | resync request | 0 | target node (4; 0 = every node), request id (4) |
//! | 5 | resync chunk | chunk index (0, 1, ...) | target node (4), request id (4), `count` entries |
//! | 6 | resync done | data sequence number the snapshot is as of | target node (4), request id (4), number of chunks (4) |
//! | 7 | resync ack | 0 | target node (4), request id (4), next missing chunk (4), `count` x (first (4), last (4)) missing chunk ranges |
//!
//! Bodies of types 2, 3, 4, 6 and 7 may be followed by bytes a version-1 receiver ignores;
//! entries of types 1 and 5 must fill the body exactly. A receiver counts and drops unknown types.
//!
//! ## Entry (48 bytes for IPv4, 96 for IPv6, plus extensions)
//! `A` is 4 (IPv4) or 16 (IPv6) for the client side, `B` likewise for the server side.
//!
//! | offset | size | field |
//! |---:|---:|---|
//! | 0 | 2 | entry length, extensions included |
//! | 2 | 1 | families: bit 0 client/virtual are IPv6, bit 1 real/local are IPv6; other bits 0 |
//! | 3 | 1 | IP protocol number (6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6) |
//! | 4 | 1 | forwarding mode: 1 NAT, 2 FULLNAT, 3 DR, 4 tunnel |
//! | 5 | 1 | state: `slb_core::session::ConnState` code (1 SYN_RECV .. 8 CLOSE, 9 UDP) |
//! | 6 | 2 | flags: bit 0 removed (tombstone), bit 1 template, bit 2 inbound-only, bit 3 has local address; bits 8-15 dataplane's own |
//! | 8 | 4 | origin node |
//! | 12 | 8 | stamp (Lamport timestamp, see [`crate::conflict`]) |
//! | 20 | 4 | remaining timeout, milliseconds |
//! | 24 | 2 | client port |
//! | 26 | 2 | virtual port |
//! | 28 | 2 | real port |
//! | 30 | 2 | local port (0 without a local address) |
//! | 32 | A | client address |
//! | 32+A | A | virtual address |
//! | 32+2A | B | real address |
//! | 32+2A+B | B | local address (zeros without one) |
//! | 32+2A+2B | .. | extensions |
//!
//! ## Extensions (TLV)
//! Type (1), length of the value (1), value. Bit 7 of the type marks a *critical* extension: a
//! receiver that does not know it must skip the whole entry; it skips unknown non-critical ones.
//!
//! | type | size | value |
//! |---:|---:|---|
//! | 1 | 24 | TCP sequence adjustment: inbound (init seq, delta, previous delta), outbound (same), 4 bytes each |
//! | 2 | 6 | next-hop MAC towards the client |
//! | 3 | 6 | next-hop MAC towards the real server |
//! | 4 | 4 | firewall mark |
//!
//! A full 1472-byte datagram carries 29 IPv4 entries (IPVS v1: about 40, without origin, stamp,
//! local address or authentication).

mod auth;
mod entry;
mod header;
mod message;
mod tlv;

pub use auth::{ClusterKey, TAG_LEN};
pub use entry::{ENTRY_FIXED_LEN, EntryRepr, EntryView, entry_len};
pub use header::{Datagram, HEADER_LEN, HeaderRepr, MAGIC, VERSION};
pub use message::{
    Entries, MAX_NACK_RANGES_PER_MSG, Message, MessageType, NackRange, ResyncAckRange,
    decode_verified,
};
pub use tlv::{Tlv, TlvIter};

/// Header flag: this datagram retransmits data sent before.
pub const FLAG_RETRANSMIT: u16 = 0x0001;
/// Header flag: the sender has not finished its startup resync (it holds back traffic).
pub const FLAG_JOINING: u16 = 0x0002;
/// Header flag on a resync ack: the requester has the whole snapshot.
pub const FLAG_COMPLETE: u16 = 0x0004;

/// Why bytes are not a valid message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Shorter than its fixed part or than a length field says.
    #[error("truncated")]
    Truncated,
    /// Not an slb-sync datagram.
    #[error("bad magic")]
    BadMagic,
    /// A version this implementation does not speak.
    #[error("unsupported version {0}")]
    Version(u8),
    /// A message type this implementation does not know.
    #[error("unknown message type {0}")]
    UnknownType(u8),
    /// A field holds a value outside its range, or lengths disagree.
    #[error("malformed")]
    Malformed,
    /// An entry carries a critical extension this implementation does not know.
    #[error("unknown critical extension {0}")]
    UnknownCritical(u8),
    /// The authentication tag does not match.
    #[error("bad authentication tag")]
    BadMac,
    /// The buffer given to `emit` is too small.
    #[error("buffer too small")]
    Exhausted,
}

/// Result of wire operations.
pub type Result<T> = core::result::Result<T, Error>;

pub(crate) fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

pub(crate) fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

pub(crate) fn be64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

pub(crate) fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

pub(crate) fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

pub(crate) fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_be_bytes());
}
