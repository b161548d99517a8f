//! The engine's inputs and outputs besides raw datagrams.

use std::net::SocketAddr;

use slb_core::session::ConnState;

use crate::types::{NodeId, SessionKey, SessionRecord, SyncedRecord};

/// A local session changed (fed by the dataplane that owns the session table).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionEvent {
    /// The session as it is now.
    pub record: SessionRecord,
    /// Client-to-VIP packets of the session so far (the trigger's packet count).
    pub packets_in: u32,
    /// The state before this change (`None` for a new session).
    pub previous_state: Option<ConnState>,
    /// Sync regardless of the trigger (the dataplane evaluated it already, or wants a sync).
    pub force: bool,
}

impl SessionEvent {
    /// An event the engine's trigger evaluates.
    pub fn new(record: SessionRecord, packets_in: u32, previous_state: Option<ConnState>) -> Self {
        SessionEvent { record, packets_in, previous_state, force: false }
    }

    /// An event synced unconditionally.
    pub fn forced(record: SessionRecord) -> Self {
        SessionEvent { record, packets_in: 0, previous_state: None, force: true }
    }
}

/// Where a datagram goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Destination {
    /// Every peer: the multicast group, or each peer of a unicast list.
    Group,
    /// One peer, at the address its datagrams came from.
    Peer(SocketAddr),
}

/// A datagram to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Where to.
    pub dest: Destination,
    /// The signed datagram.
    pub bytes: Vec<u8>,
}

/// A snapshot request handed to the owner, who answers with
/// [`Engine::provide_snapshot`](crate::Engine::provide_snapshot).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SnapshotRequest {
    /// The peer that asked.
    pub peer: NodeId,
    /// The peer's request id.
    pub id: u32,
}

/// What the engine tells its owner.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// Install or update a session learned from a peer.
    Upsert(SyncedRecord),
    /// A peer removed a session (tombstone): remove it unless it is live locally (the engine
    /// has already applied the conflict rules against what it knows).
    Remove {
        /// The session.
        key: SessionKey,
        /// Who removed it.
        origin: NodeId,
    },
    /// A peer was heard for the first time, after being down, or after a restart.
    PeerUp {
        /// The peer.
        node: NodeId,
        /// Its address.
        addr: SocketAddr,
        /// Its epoch.
        epoch: u32,
    },
    /// A peer missed its heartbeats.
    PeerDown {
        /// The peer.
        node: NodeId,
    },
    /// A peer wants this node's table: answer with `Engine::provide_snapshot`.
    SnapshotRequested(SnapshotRequest),
    /// A snapshot from `peer` arrived complete.
    ResyncComplete {
        /// The peer.
        peer: NodeId,
    },
    /// A snapshot from `peer` could not be completed (retries exhausted).
    ResyncFailed {
        /// The peer.
        peer: NodeId,
    },
    /// The startup resync finished (every live peer answered, failed or went down): the node
    /// may take traffic.
    Ready,
}
