//! Conflict rules: what a node does with a peer's entry for a session it already knows.
//!
//! Every version of a session record carries its origin (the node whose traffic produced it) and
//! a Lamport stamp. Each node's engine starts its counter at `epoch << 32` (so a restarted node
//! stamps above its previous life), adds one for every local update it sends, and raises the
//! counter to any stamp it receives. Hence an update made after a node learned another version
//! is ordered after that version on every node.
//!
//! For an incoming entry, in order:
//! 1. Nothing held for the key, or the held version expired: **apply**.
//! 2. `(stamp, origin)` of the incoming entry is not greater than the held one's: **stale**,
//!    ignored (retransmissions, resync copies and reordered datagrams land here).
//! 3. The held version is owned here (this node's own traffic produced it and it has not
//!    expired) and the incoming entry is a tombstone or points the flow elsewhere (another
//!    forwarding mode, real server or local address): **keep local**. This node is forwarding
//!    the connection to a server that holds its state; switching would break it. The next local
//!    sync of the session re-announces it with a newer stamp.
//! 4. Otherwise **apply**. If the held version was owned here and the incoming one has the same
//!    target, the flow moved to the peer (ECMP change): the peer's newer state is taken and
//!    ownership passes to it until local traffic claims it again.
//!
//! A peer going down removes nothing: its sessions are what keeps its flows alive elsewhere.
//! They expire with their remaining timeout unless refreshed.

use std::net::SocketAddr;

use slb_core::flow::{FlowKey, HashKey, Protocol};

use crate::types::{ForwardMode, NodeId, SessionRecord, SyncedRecord};

/// Where a record sends the flow: mode, real server and local address, hashed for compact
/// storage (collisions are 2^-64 events and only relax rule 3; the inputs are the operator's
/// configuration, not client-chosen).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Target(u64);

impl Target {
    /// The target of `r`.
    pub fn of(r: &SessionRecord) -> Target {
        Target::new(r.mode, r.real, r.local)
    }

    /// The target of a flow forwarded in `mode` to `real` from `local`.
    pub fn new(mode: ForwardMode, real: SocketAddr, local: Option<SocketAddr>) -> Target {
        let local = local.unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
        let f = FlowKey::new(Protocol::Tcp, real, local);
        let h = HashKey::new(0x736c_622d_7379_6e63, u64::from(mode.code())).hash_flow(&f);
        Target(h)
    }
}

/// What a node holds for a session key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Held {
    /// Origin of the held version.
    pub origin: NodeId,
    /// Its stamp.
    pub stamp: u64,
    /// Produced by this node's own traffic (not learned from a peer).
    pub owned_here: bool,
    /// Its expiry has passed.
    pub expired: bool,
    /// Where it sends the flow.
    pub target: Target,
}

/// The decision for an incoming entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Install (or remove, for a tombstone) the incoming version.
    Apply,
    /// Older than or equal to what is held: ignore.
    Stale,
    /// Conflicts with a live session owned here: keep ours.
    KeepLocal,
}

/// Applies the rules of the module documentation.
pub fn resolve(held: Option<&Held>, incoming: &SyncedRecord) -> Decision {
    let Some(h) = held.filter(|h| !h.expired) else {
        return Decision::Apply;
    };
    if (incoming.stamp, incoming.origin) <= (h.stamp, h.origin) {
        return Decision::Stale;
    }
    if h.owned_here && (incoming.record.is_removed() || Target::of(&incoming.record) != h.target) {
        return Decision::KeepLocal;
    }
    Decision::Apply
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{EntryFlags, SessionKey};
    use slb_core::flow::Protocol;
    use slb_core::session::ConnState;
    use std::time::Duration;

    fn rec(origin: u32, stamp: u64, real: &str) -> SyncedRecord {
        SyncedRecord {
            origin: NodeId(origin),
            stamp,
            record: SessionRecord::new(
                SessionKey {
                    proto: Protocol::Tcp,
                    client: "192.0.2.1:1000".parse().unwrap(),
                    virt: "198.51.100.1:80".parse().unwrap(),
                },
                real.parse().unwrap(),
                ForwardMode::Nat,
                ConnState::Established,
                Duration::from_secs(900),
            ),
        }
    }

    fn held(of: &SyncedRecord, owned_here: bool) -> Held {
        Held {
            origin: of.origin,
            stamp: of.stamp,
            owned_here,
            expired: false,
            target: Target::of(&of.record),
        }
    }

    #[test]
    fn newer_stamp_wins_ties_break_on_origin() {
        let a = rec(1, 10, "10.0.0.1:80");
        assert_eq!(resolve(None, &a), Decision::Apply);
        let h = held(&a, false);
        assert_eq!(resolve(Some(&h), &a), Decision::Stale, "duplicate");
        assert_eq!(resolve(Some(&h), &rec(2, 9, "10.0.0.1:80")), Decision::Stale);
        assert_eq!(
            resolve(Some(&h), &rec(2, 10, "10.0.0.2:80")),
            Decision::Apply,
            "tie: higher origin"
        );
        assert_eq!(resolve(Some(&h), &rec(0, 10, "10.0.0.2:80")), Decision::Stale);
        assert_eq!(resolve(Some(&h), &rec(1, 11, "10.0.0.2:80")), Decision::Apply);
        let expired = Held { expired: true, stamp: 99, ..h };
        assert_eq!(resolve(Some(&expired), &a), Decision::Apply);
    }

    #[test]
    fn local_live_sessions_are_kept_against_other_targets_and_tombstones() {
        let mine = rec(1, 10, "10.0.0.1:80");
        let h = held(&mine, true);
        assert_eq!(resolve(Some(&h), &rec(2, 11, "10.0.0.2:80")), Decision::KeepLocal);
        let mut tomb = rec(2, 11, "10.0.0.1:80");
        tomb.record.flags.set(EntryFlags::REMOVED, true);
        assert_eq!(resolve(Some(&h), &tomb), Decision::KeepLocal);
        let moved = rec(2, 11, "10.0.0.1:80");
        assert_eq!(resolve(Some(&h), &moved), Decision::Apply, "same target: the flow moved");
        let not_mine = held(&mine, false);
        assert_eq!(resolve(Some(&not_mine), &tomb), Decision::Apply);
    }
}
