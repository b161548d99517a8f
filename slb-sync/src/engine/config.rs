//! Engine configuration and its defaults.

use std::time::Duration;

use crate::trigger::TriggerConfig;
use crate::types::NodeId;
use crate::wire::{ClusterKey, HEADER_LEN, TAG_LEN};

/// Smallest datagram size accepted: room for the largest entry (IPv6 on both sides with every
/// extension) in a resync chunk, with margin.
pub const MIN_DATAGRAM: usize = 256;
/// Largest UDP payload.
pub const MAX_DATAGRAM: usize = 65_507;

/// Engine parameters. [`Config::new`] gives the defaults listed on each field.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Config {
    /// Cluster id: datagrams of other clusters are dropped (counted).
    pub cluster_id: u32,
    /// This node (non-zero, unique in the cluster: two nodes sharing an id drop each other's
    /// datagrams as their own, counted in `Stats::rx_own`).
    pub node: NodeId,
    /// This run of the node: must grow with every restart (e.g. seconds since the UNIX epoch
    /// at startup), or peers refuse its datagrams as replays until their windows forget it.
    pub epoch: u32,
    /// Cluster secret.
    pub key: ClusterKey,
    /// Largest datagram built, UDP payload (default 1472: Ethernet MTU 1500).
    pub max_datagram: usize,
    /// Longest an update waits for more entries before its datagram is sent (default 5 ms).
    pub flush_delay: Duration,
    /// Trigger for local events (`None`: sync every event handed in). Default IPVS "3 50".
    pub trigger: Option<TriggerConfig>,
    /// Heartbeat period (default 250 ms).
    pub heartbeat_interval: Duration,
    /// A peer is down after this many heartbeat periods without a datagram (default 4).
    pub peer_dead_after: u32,
    /// How long a gap may stay open (reordering) before it is NACKed (default 2 ms).
    pub nack_delay: Duration,
    /// Interval between NACKs for a gap that stays open (default 20 ms).
    pub nack_interval: Duration,
    /// NACKs sent for one gap before giving up on it and resyncing (default 8).
    pub max_nack_attempts: u32,
    /// Updates datagrams kept for retransmission (default 4096, about conntrackd's 131072
    /// entries).
    pub resend_capacity: usize,
    /// Largest distance ahead of the first missing datagram that a receiver tracks; beyond it
    /// the gap is abandoned and covered by a resync (default 4096).
    pub max_reorder: u64,
    /// Peers tracked at once (default 64).
    pub max_peers: usize,
    /// Session entries held per origin node, this node included (default 2^20). At most
    /// `max_peers + 1` origins are held, so the engine remembers at most
    /// `max_entries_per_origin * (max_peers + 1)` sessions.
    pub max_entries_per_origin: usize,
    /// Session keys to reserve room for up front (default 0: grow on demand). Growing a table
    /// of hundreds of thousands of keys rehashes it in one step (tens of milliseconds); a
    /// director that knows its size avoids those pauses.
    pub known_capacity: usize,
    /// Datagrams waiting in `poll_transmit` (default 4096).
    pub max_transmit_queue: usize,
    /// Events waiting in `poll_event` (default 65536).
    pub max_event_queue: usize,
    /// Ask peers for their tables at startup and report [`Event::Ready`](crate::Event::Ready)
    /// when done (default true; false: ready at once).
    pub resync_on_start: bool,
    /// At startup, how long to listen for peers before deciding who must answer (default
    /// 2 heartbeat periods).
    pub join_discovery: Duration,
    /// Resync chunks in flight without an ack (default 64).
    pub resync_window: u32,
    /// Resync chunks acked after this many new ones (default 16).
    pub resync_ack_every: u32,
    /// Longest delay before acking received chunks (default 5 ms).
    pub resync_ack_delay: Duration,
    /// Resend unacked resync chunks after this long without an ack (default 100 ms).
    pub resync_rto: Duration,
    /// A resync without progress for this long is retried or abandoned (default 1 s).
    pub resync_timeout: Duration,
    /// Requests for one resync before it fails (default 5).
    pub resync_attempts: u32,
    /// Snapshots served at once (default 4).
    pub max_resync_sessions: usize,
    /// Entries in one snapshot served (default 2^21; encoded about 48 B each).
    pub max_snapshot_entries: usize,
    /// How long a removal (tombstone) is remembered against late updates (default 10 s).
    pub tombstone_ttl: Duration,
}

/// Why a configuration is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// Node id 0 is reserved.
    #[error("node id 0 is reserved")]
    ZeroNode,
    /// `max_datagram` outside 256..=65507.
    #[error("max_datagram must be within {MIN_DATAGRAM}..={MAX_DATAGRAM}")]
    DatagramSize,
    /// A bound or period is zero.
    #[error("{0} must be non-zero")]
    Zero(&'static str),
    /// Trigger threshold not below a non-zero period.
    #[error("trigger threshold must be below its period")]
    Trigger,
}

impl Config {
    /// A configuration with the defaults.
    pub fn new(cluster_id: u32, node: NodeId, epoch: u32, key: ClusterKey) -> Self {
        let heartbeat = Duration::from_millis(250);
        Config {
            cluster_id,
            node,
            epoch,
            key,
            max_datagram: 1472,
            flush_delay: Duration::from_millis(5),
            trigger: Some(TriggerConfig::default()),
            heartbeat_interval: heartbeat,
            peer_dead_after: 4,
            nack_delay: Duration::from_millis(2),
            nack_interval: Duration::from_millis(20),
            max_nack_attempts: 8,
            resend_capacity: 4096,
            max_reorder: 4096,
            max_peers: 64,
            max_entries_per_origin: 1 << 20,
            known_capacity: 0,
            max_transmit_queue: 4096,
            max_event_queue: 1 << 16,
            resync_on_start: true,
            join_discovery: heartbeat * 2,
            resync_window: 64,
            resync_ack_every: 16,
            resync_ack_delay: Duration::from_millis(5),
            resync_rto: Duration::from_millis(100),
            resync_timeout: Duration::from_secs(1),
            resync_attempts: 5,
            max_resync_sessions: 4,
            max_snapshot_entries: 1 << 21,
            tombstone_ttl: Duration::from_secs(10),
        }
    }

    /// Checks the values.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.node == NodeId::ALL {
            return Err(ConfigError::ZeroNode);
        }
        if !(MIN_DATAGRAM..=MAX_DATAGRAM).contains(&self.max_datagram) {
            return Err(ConfigError::DatagramSize);
        }
        let nonzero = [
            ("heartbeat_interval", self.heartbeat_interval.is_zero()),
            ("peer_dead_after", self.peer_dead_after == 0),
            ("nack_interval", self.nack_interval.is_zero()),
            ("resend_capacity", self.resend_capacity == 0),
            ("max_reorder", self.max_reorder == 0),
            ("max_peers", self.max_peers == 0),
            ("max_entries_per_origin", self.max_entries_per_origin == 0),
            ("max_transmit_queue", self.max_transmit_queue == 0),
            ("max_event_queue", self.max_event_queue == 0),
            ("resync_window", self.resync_window == 0),
            ("resync_ack_every", self.resync_ack_every == 0),
            ("resync_rto", self.resync_rto.is_zero()),
            ("resync_timeout", self.resync_timeout.is_zero()),
            ("max_resync_sessions", self.max_resync_sessions == 0),
        ];
        if let Some((name, _)) = nonzero.iter().find(|(_, z)| *z) {
            return Err(ConfigError::Zero(name));
        }
        if let Some(t) = &self.trigger {
            if t.period != 0 && t.threshold >= t.period {
                return Err(ConfigError::Trigger);
            }
        }
        Ok(())
    }

    /// Room for entries in an updates datagram.
    pub(crate) fn update_room(&self) -> usize {
        self.max_datagram - HEADER_LEN - TAG_LEN
    }

    /// How long without a datagram before a peer is down.
    pub(crate) fn dead_after(&self) -> Duration {
        self.heartbeat_interval.saturating_mul(self.peer_dead_after)
    }
}
