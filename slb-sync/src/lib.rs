#![doc = include_str!("../README.md")]
//!
//! ## Layout
//!
//! ```text
//!   dataplane (slb-l4)  --SessionEvent-->  Engine  --Transmit-->  transport (UDP)  --> peers
//!   session table      <--Event::Upsert--  Engine  <--datagram--  transport (UDP)  <-- peers
//!
//!   types      SessionRecord / SyncedRecord / SessionKey / NodeId: what is replicated
//!   wire       versioned, MACed datagrams: zero-copy views + owned reprs (no I/O)
//!   trigger    IPVS's "3 50" sync rule as a pure function (no I/O)
//!   conflict   which version of a session wins: Lamport stamps, local ownership (no I/O)
//!   replay     per-sender sliding sequence window (no I/O)
//!   engine     the sans-IO state machine: batching, NACKs, heartbeats, resync (no I/O, no clock)
//!   transport  UDP multicast / unicast sockets and a threaded driver (the only I/O and clock)
//!   sim        (feature `sim`) a simulated fabric: loss, delay, reordering, duplication
//! ```
//!
//! Real servers travel by address, not by backend id: each node maps addresses to its own
//! [`slb_core::backend::BackendId`]s.
//!
//! ## Integrating a dataplane (what slb-l4 does with its `SessionTable<X>`)
//! - Identity: a [`NodeId`] per node, one cluster id and [`ClusterKey`] per cluster, and an
//!   `epoch` that grows with every restart (seconds since the UNIX epoch at startup will do).
//! - Local changes: on the fast path call [`sync_needed`] with the session's state change and
//!   client-to-VIP packet count, and hand the passing ones over as
//!   [`SessionEvent::forced`] (or hand every change to the engine and let its trigger filter).
//!   The record carries the *remaining* timeout.
//! - [`Event::Upsert`]: map `record.real` to a backend id by address, insert or update the
//!   session with expiry `now + record.timeout`, the synced state, the FULLNAT local address
//!   (reserved in the node's local-address pool) and the next hops; mark it as peer-installed.
//!   [`Event::Remove`]: remove it unless local traffic owns it.
//! - [`Event::SnapshotRequested`]: walk the table, turn sessions into records (remaining
//!   timeout = expiry - now) and answer with [`Engine::provide_snapshot`] (or
//!   [`transport::SyncHandle::provide_snapshot`] from another thread).
//! - [`Event::Ready`] / [`Engine::is_ready`]: until then, do not attract traffic (no VIP
//!   announcement, no gratuitous ARP): the table is still arriving.
#![forbid(unsafe_code)]

pub mod conflict;
pub mod engine;
#[cfg(feature = "sim")]
pub mod fuzzing;
pub mod replay;
#[cfg(feature = "sim")]
pub mod sim;
pub mod transport;
pub mod trigger;
pub mod types;
pub mod wire;

pub use engine::{
    Config, ConfigError, Destination, Engine, Event, PeerInfo, SessionEvent, SnapshotRequest,
    Stats, Transmit,
};
pub use trigger::{TriggerConfig, sync_needed};
pub use types::{
    EntryFlags, ForwardMode, MacAddr, NodeId, SeqAdjust, SeqDelta, SessionKey, SessionRecord,
    SyncedRecord,
};
pub use wire::ClusterKey;
