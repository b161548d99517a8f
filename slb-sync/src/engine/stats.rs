//! Counters: every datagram, entry and event the engine drops is counted by reason.

/// Engine counters. All monotonic.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Datagrams handed to `handle_datagram`.
    pub rx_datagrams: u64,
    /// Dropped: shorter than header + tag.
    pub rx_truncated: u64,
    /// Dropped: not an slb-sync datagram.
    pub rx_bad_magic: u64,
    /// Dropped: another wire version.
    pub rx_wrong_version: u64,
    /// Dropped: another cluster id.
    pub rx_wrong_cluster: u64,
    /// Dropped: our own datagram (multicast loopback).
    pub rx_own: u64,
    /// Dropped: authentication tag mismatch.
    pub rx_bad_mac: u64,
    /// Dropped: replayed (sequence number seen, too old, or an old epoch).
    pub rx_replayed: u64,
    /// Dropped: authenticated but malformed body.
    pub rx_malformed: u64,
    /// Dropped: unknown message type.
    pub rx_unknown_type: u64,
    /// Dropped: a new peer beyond `max_peers`.
    pub rx_too_many_peers: u64,
    /// Addressed to another node (ignored).
    pub rx_not_for_us: u64,
    /// Updates datagrams whose data sequence number was already received.
    pub rx_duplicate_data: u64,
    /// Entries received (updates and resync).
    pub rx_entries: u64,
    /// Entries skipped: malformed or with an unknown critical extension.
    pub rx_bad_entries: u64,
    /// Entries applied (upserts and removals emitted).
    pub entries_applied: u64,
    /// Entries ignored as older than what is held.
    pub entries_stale: u64,
    /// Entries refused because a live local session conflicts.
    pub conflicts_local_kept: u64,
    /// Entries shed: the origin's entry limit, or the limit on origins, was reached.
    pub peer_entries_shed: u64,
    /// Local session events handled.
    pub local_events: u64,
    /// Local events the trigger filtered out.
    pub local_filtered: u64,
    /// Local events that could not be encoded (mixed address families).
    pub local_unencodable: u64,
    /// Local sessions synced but not tracked (local entry limit reached).
    pub local_untracked: u64,
    /// Datagrams queued for sending.
    pub tx_datagrams: u64,
    /// Updates datagrams built.
    pub tx_updates: u64,
    /// Entries sent in updates.
    pub tx_entries: u64,
    /// Heartbeats sent.
    pub tx_heartbeats: u64,
    /// Datagrams dropped because the transmit queue was full.
    pub tx_queue_full: u64,
    /// Updates datagrams retransmitted after a NACK.
    pub tx_retransmits: u64,
    /// NACKs sent.
    pub nacks_sent: u64,
    /// NACKs received for this node.
    pub nacks_received: u64,
    /// NACKed sequence numbers no longer in the resend queue.
    pub nack_unavailable: u64,
    /// Gaps detected in peers' streams.
    pub gaps_detected: u64,
    /// Gaps given up on (recovered by a resync instead).
    pub gaps_unrecoverable: u64,
    /// Snapshots requested from peers.
    pub resync_requested: u64,
    /// Snapshots received complete.
    pub resync_completed: u64,
    /// Snapshots that failed.
    pub resync_failed: u64,
    /// Snapshots served to peers completely.
    pub resync_served: u64,
    /// Snapshot requests refused (too many at once).
    pub resync_refused: u64,
    /// Snapshots being served that timed out.
    pub resync_abandoned: u64,
    /// Snapshot entries dropped: more than `max_snapshot_entries`.
    pub snapshot_truncated: u64,
    /// Resync chunks sent (retransmissions included).
    pub resync_chunks_sent: u64,
    /// New resync chunks received.
    pub resync_chunks_received: u64,
    /// Events dropped because the event queue was full.
    pub events_dropped: u64,
    /// Peers that came up.
    pub peers_up: u64,
    /// Peers that went down.
    pub peers_down: u64,
}
