//! # slb-sync: authenticated, reliable session replication between L4 nodes
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
//! Compared with IPVS's sync daemon this adds sequence numbers with NACK-driven retransmission,
//! heartbeats and peer liveness, bulk resync for nodes that (re)join (with a "ready" signal so a
//! node can hold back traffic until it has the table), datagram authentication and replay
//! protection, unicast peers for networks without multicast, and FULLNAT fields (local address,
//! next hops, TCP sequence adjustment).
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
//!
//! ## Example: two engines, no sockets
//! ```
//! use std::time::Duration;
//! use slb_core::{flow::Protocol, session::ConnState, time::Instant};
//! use slb_sync::{
//!     ClusterKey, Config, Engine, Event, ForwardMode, NodeId, SessionEvent, SessionKey,
//!     SessionRecord,
//! };
//!
//! let key = ClusterKey::derive(b"cluster secret");
//! let mk = |node| {
//!     let mut cfg = Config::new(7, NodeId(node), 1, key.clone());
//!     cfg.resync_on_start = false;
//!     Engine::new(cfg, Instant::ZERO).unwrap()
//! };
//! let (mut a, mut b) = (mk(1), mk(2));
//!
//! // Node 1's dataplane saw the third client packet of a connection.
//! let record = SessionRecord::new(
//!     SessionKey {
//!         proto: Protocol::Tcp,
//!         client: "192.0.2.7:40000".parse().unwrap(),
//!         virt: "198.51.100.1:80".parse().unwrap(),
//!     },
//!     "10.0.2.11:8080".parse().unwrap(),
//!     ForwardMode::Nat,
//!     ConnState::Established,
//!     Duration::from_secs(900),
//! );
//! assert!(a.handle_local(Instant::ZERO, SessionEvent::new(record.clone(), 3, Some(ConnState::SynRecv))));
//!
//! // 5 ms later the batch is flushed; carry every datagram to node 2.
//! let now = Instant::from_millis(5);
//! a.handle_timeout(now);
//! let from = "127.0.0.1:8848".parse().unwrap();
//! while let Some(t) = a.poll_transmit() {
//!     b.handle_datagram(now, from, &t.bytes);
//! }
//! let upserts: Vec<_> = std::iter::from_fn(|| b.poll_event())
//!     .filter_map(|e| match e { Event::Upsert(s) => Some(s), _ => None })
//!     .collect();
//! assert_eq!(upserts.len(), 1);
//! assert_eq!(upserts[0].record, record);
//! assert_eq!(upserts[0].origin, NodeId(1));
//! ```
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
