//! What the engine knows about each peer.

use std::net::SocketAddr;

use slb_core::time::Instant;

use super::recv::RecvStream;
use super::resync::IncomingResync;
use crate::replay::ReplayWindow;

/// One peer's state at this node.
#[derive(Debug, Clone)]
pub(crate) struct Peer {
    /// Where its datagrams come from (unicast replies go there).
    pub(crate) addr: SocketAddr,
    pub(crate) epoch: u32,
    pub(crate) replay: ReplayWindow,
    pub(crate) stream: RecvStream,
    pub(crate) last_heard: Instant,
    pub(crate) alive: bool,
    /// Its last header said it is still joining.
    pub(crate) joining: bool,
    /// A snapshot being received from it.
    pub(crate) incoming: Option<IncomingResync>,
    /// The last request whose snapshot arrived complete (to re-ack a lost "complete").
    pub(crate) last_completed: Option<u32>,
    /// It no longer holds up this node's startup resync.
    pub(crate) join_done: bool,
}

impl Peer {
    pub(crate) fn new(addr: SocketAddr, now: Instant) -> Self {
        Peer {
            addr,
            epoch: 0,
            replay: ReplayWindow::new(),
            stream: RecvStream::new(),
            last_heard: now,
            alive: false,
            joining: false,
            incoming: None,
            last_completed: None,
            join_done: false,
        }
    }

    /// Forgets the previous run of a peer that restarted.
    pub(crate) fn restarted(&mut self, epoch: u32) {
        self.epoch = epoch;
        self.stream = RecvStream::new();
        self.incoming = None;
        self.last_completed = None;
    }
}

/// A read-only summary of a peer, for operators and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerInfo {
    /// The peer.
    pub node: crate::NodeId,
    /// Its address.
    pub addr: SocketAddr,
    /// Its epoch.
    pub epoch: u32,
    /// Heard within the liveness timeout.
    pub alive: bool,
    /// It says it is still joining.
    pub joining: bool,
    /// Lowest data sequence number of its stream not yet received.
    pub next_data_seq: u64,
    /// A gap in its stream is open.
    pub gap: bool,
    /// A snapshot from it is being received.
    pub resyncing: bool,
}
