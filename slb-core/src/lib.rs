//! # slb-core: the model and policies of slb, without I/O
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
//!
//! ```
//! use std::net::SocketAddr;
//! use slb_core::backend::{Backend, BackendId, SetOptions};
//! use slb_core::sched::{Balancer, PickContext, SchedulerConfig, SchedulerKind};
//!
//! let backends = vec![
//!     Backend::new(BackendId(1), "10.0.0.1:80".parse::<SocketAddr>().unwrap()).with_weight(5),
//!     Backend::new(BackendId(2), "10.0.0.2:80".parse::<SocketAddr>().unwrap()),
//! ];
//! let pool = Balancer::new(
//!     SchedulerConfig::new(SchedulerKind::SmoothWeighted),
//!     SetOptions::default(),
//!     backends,
//! )
//! .unwrap();
//! let picked = pool.scheduler().pick(&PickContext::default()).unwrap().id();
//! assert_eq!(picked, BackendId(1));
//! ```
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
