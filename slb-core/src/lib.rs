#![doc = include_str!("../README.md")]
//!
//! ## Layout
//!
//! ```text
//!   backend   Backend, BackendSet (immutable snapshot), BackendRuntime (survives snapshots)
//!   flow      FlowKey, HashKey (stable keyed hash shared by a cluster)
//!   sched     Scheduler trait + 15 schedulers (rr ... maglev, ketama); Balancer swaps them
//!   session   SessionTable (+ concurrent), IPVS states and timeouts, persistence templates
//!   health    HealthTracker, outlier detection, the HealthProbe trait
//!   rng       SplitMix64 (plain and atomic): the one seeded generator of every slb crate
//!   testing   (feature) session-table operation language + model, for tests and fuzzing
//!   time      Instant: time is an argument, never read from a clock here
//! ```
//!
//! Nothing in this crate opens a socket or reads a clock: drivers in `slb-l4`, `slb-l7` and
//! `slb-sync` do. Everything here is therefore deterministic given its inputs and seeds. Its
//! only `unsafe` block is a prefetch hint (module `sys`), which reads and writes nothing.
#![deny(unsafe_code)]

pub mod backend;
pub mod flow;
pub mod health;
pub mod rng;
pub mod sched;
pub mod session;
mod sys;
#[cfg(feature = "testing")]
pub mod testing;
pub mod time;
