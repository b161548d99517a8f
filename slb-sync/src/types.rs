//! The data a node replicates: who sent it and which session it describes.
//!
//! A [`SessionRecord`] is everything another node needs to forward both directions of a flow it
//! never saw being scheduled: the client, the virtual service, the real server (by address: each
//! node maps addresses to its own backend ids), the FULLNAT local address, the forwarding mode,
//! the TCP state and remaining timeout, TCP sequence adjustments and the next hops on both sides.

use core::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use slb_core::flow::Protocol;
use slb_core::session::ConnState;

/// A node of a sync cluster. Unique within the cluster; 0 is reserved ("every node" in requests).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub u32);

impl NodeId {
    /// The reserved id meaning "every node" in addressed requests.
    pub const ALL: NodeId = NodeId(0);
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node{}", self.0)
    }
}

/// How the director forwards the flow to its real server (the wire code is the `repr(u8)` value).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
#[non_exhaustive]
pub enum ForwardMode {
    /// Destination NAT: the real server routes replies back through the director.
    Nat = 1,
    /// Full NAT: source rewritten to a local address of the director as well.
    FullNat = 2,
    /// Direct routing: the real server answers the client directly.
    Dr = 3,
    /// IP-in-IP (or other) tunnel to the real server.
    Tunnel = 4,
}

impl ForwardMode {
    /// The wire code.
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// The mode with wire code `c`.
    pub const fn from_code(c: u8) -> Option<ForwardMode> {
        match c {
            1 => Some(ForwardMode::Nat),
            2 => Some(ForwardMode::FullNat),
            3 => Some(ForwardMode::Dr),
            4 => Some(ForwardMode::Tunnel),
            _ => None,
        }
    }
}

/// Which session an entry is about: the forward key (protocol, client, virtual service), the
/// same tuple IPVS identifies a connection by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionKey {
    /// Transport protocol.
    pub proto: Protocol,
    /// The client's address and port.
    pub client: SocketAddr,
    /// The virtual service's address and port.
    pub virt: SocketAddr,
}

impl fmt::Display for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} -> {}", self.proto, self.client, self.virt)
    }
}

/// Flags of a synced entry. Bits 0-7 are defined by slb-sync; bits 8-15 are free for the
/// dataplane and are carried unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct EntryFlags(pub u16);

impl EntryFlags {
    /// The session was removed at its origin (a tombstone): peers drop it.
    pub const REMOVED: u16 = 0x0001;
    /// A persistence template (client -> backend affinity), not a connection.
    pub const TEMPLATE: u16 = 0x0002;
    /// The director sees only the client's direction of the flow (DR, tunnels).
    pub const INBOUND_ONLY: u16 = 0x0004;
    /// Bits reserved for slb-sync; everything else belongs to the dataplane.
    pub const RESERVED_MASK: u16 = 0x00ff;

    /// True when every bit of `bits` is set.
    pub const fn contains(self, bits: u16) -> bool {
        self.0 & bits == bits
    }

    /// Sets or clears `bits`.
    pub fn set(&mut self, bits: u16, on: bool) {
        if on {
            self.0 |= bits;
        } else {
            self.0 &= !bits;
        }
    }
}

/// TCP sequence translation of one direction (SYNPROXY, TOA): the director adds `delta` to
/// sequence numbers after `init_seq`, and `prev_delta` to those before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct SeqDelta {
    /// First sequence number the current delta applies to.
    pub init_seq: u32,
    /// Current delta (two's complement).
    pub delta: u32,
    /// Delta for sequence numbers before `init_seq`.
    pub prev_delta: u32,
}

/// TCP sequence translation of both directions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct SeqAdjust {
    /// Client-to-server direction.
    pub inbound: SeqDelta,
    /// Server-to-client direction.
    pub outbound: SeqDelta,
}

/// An Ethernet address of a next hop.
pub type MacAddr = [u8; 6];

/// Everything a node needs to forward a session it learned from a peer.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SessionRecord {
    /// Protocol, client and virtual service.
    pub key: SessionKey,
    /// The real server, by address (each node maps it to its own backend id).
    pub real: SocketAddr,
    /// The director's local address and port towards the real server (FULLNAT), if any.
    /// Must be of the same family as `real`.
    pub local: Option<SocketAddr>,
    /// Forwarding mode.
    pub mode: ForwardMode,
    /// Connection state (IPVS states; UDP for datagram protocols).
    pub state: ConnState,
    /// Time left before the session expires at its origin (millisecond resolution on the wire,
    /// at most `u32::MAX` ms).
    pub timeout: Duration,
    /// Entry flags.
    pub flags: EntryFlags,
    /// TCP sequence translation, if the origin translates sequence numbers.
    pub seq_adjust: Option<SeqAdjust>,
    /// Next hop towards the client (so the new node can send replies without an ARP round).
    pub client_next_hop: Option<MacAddr>,
    /// Next hop towards the real server.
    pub real_next_hop: Option<MacAddr>,
    /// Firewall mark of the virtual service, if it is mark-based.
    pub fwmark: Option<u32>,
}

impl SessionRecord {
    /// A record with no optional data: flags empty, no local address, no extensions.
    pub fn new(
        key: SessionKey,
        real: SocketAddr,
        mode: ForwardMode,
        state: ConnState,
        timeout: Duration,
    ) -> Self {
        SessionRecord {
            key,
            real,
            local: None,
            mode,
            state,
            timeout,
            flags: EntryFlags::default(),
            seq_adjust: None,
            client_next_hop: None,
            real_next_hop: None,
            fwmark: None,
        }
    }

    /// True when this record is a tombstone.
    pub fn is_removed(&self) -> bool {
        self.flags.contains(EntryFlags::REMOVED)
    }
}

/// A record as it travels between nodes: the node whose traffic produced it and its stamp.
///
/// `stamp` is a Lamport timestamp: every node stamps its local updates with a counter that is
/// kept above every stamp it has received, so an update made after seeing another is always
/// ordered after it, on every node. Ties break on `origin`. See [`crate::conflict`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SyncedRecord {
    /// The node whose local traffic produced this version of the record.
    pub origin: NodeId,
    /// Lamport stamp of this version.
    pub stamp: u64,
    /// The session.
    pub record: SessionRecord,
}
