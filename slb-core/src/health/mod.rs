//! Health: a pure tracker per backend, the probe trait, passive outlier detection.
//!
//! ```text
//!   HealthProbe (I/O, implemented in slb-l4 / slb-l7)  --result-->  HealthTracker (pure)
//!                                                                      | rise/fall, next probe time
//!   live traffic errors  -->  OutlierDetector (pure): eject with growing backoff, bounded share
//! ```
//! The owner of a pool runs the probes when [`HealthTracker::poll_timeout`] says, feeds results
//! back, and rebuilds the pool's [`BackendSet`](crate::backend::BackendSet) when a backend's status
//! flips (a down or ejected backend is given `BackendState::Down`). Slow start for recovered
//! backends is in [`SetOptions::slow_start`](crate::backend::SetOptions).

mod outlier;
mod probe;
mod tracker;

pub use outlier::{OutlierConfig, OutlierDetector, OutlierEvent};
pub use probe::{HealthProbe, ProbeFuture, ProbeResult};
pub use tracker::{HealthConfig, HealthStatus, HealthTracker, Transition};
