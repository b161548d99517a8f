//! # slb: a load-balancing library with pluggable dataplanes
//!
//! The facade crate: it re-exports the workspace's crates behind features.
//!
//! | module | crate | feature |
//! |---|---|---|
//! | [`core`] | `slb-core`: backends, schedulers, session table, health (no I/O) | always |
//! | `l4` | `slb-l4`: the packet dataplane (NAT, FULLNAT + TOA, DR) | `l4` |
//! | `l7` | `slb-l7`: the HTTP/HTTPS proxy | `l7` |
//! | `sync` | `slb-sync`: session replication between L4 nodes | `sync` |
//! | `logging` | a log subscriber for programs: `RUST_LOG`, text or JSON lines on stderr | `logging` |
#![forbid(unsafe_code)]

pub use slb_core as core;
#[cfg(feature = "l4")]
pub use slb_l4 as l4;
#[cfg(feature = "l7")]
pub use slb_l7 as l7;
#[cfg(feature = "logging")]
pub mod logging;
#[cfg(feature = "sync")]
pub use slb_sync as sync;
