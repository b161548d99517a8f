//! The session table: every flow the director has scheduled, keyed both ways.
//!
//! A session is found by its forward key (client -> virtual service) and, when it has one, by
//! its reverse key (real server -> client in NAT, real server -> local address in FULLNAT), so
//! the replies of a flow find it too. Each session records its backend, TCP/UDP state, packet
//! counts, creation time and expiry: each packet moves the expiry to now + the idle timeout of
//! its state (IPVS's defaults, [`Timeouts`]), as IPVS does; no separate last-seen time is kept,
//! so that an IPv4 session leaves 16 bytes of its cache line to the dataplane. Expiry is driven by `now`: lazily on lookup, and by a bounded
//! incremental sweep ([`SessionTable::expire`]) that a driver calls regularly.
//!
//! ## Capacity and eviction order
//! The table holds at most `capacity` sessions and at most `max_half_open` half-open ones. When
//! an insert finds no room it frees one slot, in this order, and never goes further:
//! 1. an expired session (found by the sweep);
//! 2. the oldest half-open session (SYN_RECV / SYN_SENT): what a SYN flood creates;
//! 3. the oldest finished session (TIME_WAIT, CLOSE, LAST_ACK).
//!
//! Established, half-closed (FIN_WAIT, CLOSE_WAIT) and UDP sessions are never evicted: when only
//! they remain the insert fails with [`InsertError::Full`] and the new flow is refused. A flood of
//! SYNs therefore only ever displaces other half-open entries, and a new half-open entry beyond
//! `max_half_open` displaces the oldest half-open one even when the table is not full.
//!
//! Per-backend active/inactive connection counters (IPVS `activeconns`/`inactconns`) are kept in
//! the shared [`RuntimeRegistry`](crate::backend::RuntimeRegistry), where the load-aware schedulers
//! read them.

mod concurrent;
mod key;
mod persist;
mod state;
mod table;

pub use concurrent::ConcurrentSessionTable;
pub use persist::{PersistKey, PersistTable};
pub use state::{ConnState, Direction, TcpFlags, Timeouts, Visibility, tcp_transition};
pub use table::{EntryMut, Prepared, SessionTable, SessionView, TableStats};

use crate::backend::BackendId;
use crate::flow::HashKey;
use crate::time::Instant;

/// One scheduled flow. `X` is the dataplane's own per-session data (e.g. slb-l4's forwarding
/// details); keep it small, it is stored once per session (at most 16 bytes with 2-byte
/// alignment, or 8 with 8-byte, keep an IPv4 session and its key in one cache line).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session<X = ()> {
    backend: BackendId,
    state: ConnState,
    /// Free bits for the dataplane and sync (e.g. "synced", "installed by a peer").
    pub flags: u8,
    /// Packets from the client side (IPVS counts these for the sync threshold).
    pub packets_in: u32,
    /// Packets from the server side.
    pub packets_out: u32,
    created: Instant,
    expires: Instant,
    /// The dataplane's data.
    pub ext: X,
}

impl<X> Session<X> {
    /// A new session in `state`, created at `now`. Its expiry is set when it is
    /// inserted (now + the state's timeout) unless [`Session::with_expiry`] sets it.
    pub fn new(backend: BackendId, state: ConnState, now: Instant, ext: X) -> Self {
        Session {
            backend,
            state,
            flags: 0,
            packets_in: 0,
            packets_out: 0,
            created: now,
            expires: Instant::ZERO,
            ext,
        }
    }

    /// Sets an explicit expiry (e.g. the remaining timeout a peer synced).
    pub fn with_expiry(mut self, expires: Instant) -> Self {
        self.expires = expires;
        self
    }

    /// The backend the flow is bound to.
    pub fn backend(&self) -> BackendId {
        self.backend
    }

    /// The connection state.
    pub fn state(&self) -> ConnState {
        self.state
    }

    /// When the session was created.
    pub fn created(&self) -> Instant {
        self.created
    }

    /// When the session expires unless refreshed.
    pub fn expires(&self) -> Instant {
        self.expires
    }
}

/// Session table parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TableConfig {
    /// Most sessions held at once.
    pub capacity: usize,
    /// Most half-open (SYN_RECV / SYN_SENT) sessions held at once.
    pub max_half_open: usize,
    /// Idle timeout per state.
    pub timeouts: Timeouts,
    /// Key for the table's internal hash (choose it randomly per process against hash flooding).
    pub hash_key: HashKey,
    /// Reserve storage for `capacity` IPv4 sessions up front (a director does; tests need not).
    pub preallocate: bool,
}

impl Default for TableConfig {
    fn default() -> Self {
        TableConfig {
            capacity: 1 << 20,
            max_half_open: 1 << 19,
            timeouts: Timeouts::default(),
            hash_key: HashKey::default(),
            preallocate: false,
        }
    }
}

/// Why a session was not inserted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InsertError {
    /// A session with this forward key exists.
    #[error("a session with this key exists")]
    Exists,
    /// Another session already owns this reverse key.
    #[error("another session owns this reverse key")]
    ReverseExists,
    /// The forward and reverse keys are of different address families.
    #[error("forward and reverse keys differ in address family")]
    FamilyMismatch,
    /// The table is full of sessions that may not be evicted.
    #[error("session table full")]
    Full,
}
