#![doc = include_str!("../README.md")]
//!
//! ## Layout
//!
//! ```text
//!   listener ── TLS (rustls, SNI, ALPN) ──┬── HTTP/1.1 (own parser: http::request, proxy::h1)
//!                                         └── HTTP/2 (hyper, h2 by ALPN or h2c prior knowledge)
//!        │
//!        ▼  route::Router: virtual host (Host/SNI) → location (exact, regex, longest prefix)
//!   pool::Pool: slb-core scheduler (rr, swrr, mh, ... or your own), health (active probes,
//!        │      passive ejection), retry policy + budget, idle keep-alive connections
//!        ▼
//!   upstream HTTP/1.1 (TCP or TLS), response relayed back as it arrives
//! ```
//!
//! What does I/O: `listener`, `proxy`, `upstream`, `health` (probes and the tasks driving the
//! trackers), `status`. What does not: `http` (heads, chunked coding, header rewriting: pure
//! functions over byte slices, fuzzed), `config`, `route`; health decisions (rise/fall, ejection)
//! are slb-core's sans-IO trackers, fed with results here.
//!
//! Build a proxy from a [`config::Config`] (TOML or code), optionally through
//! [`ProxyBuilder`] to plug in your own [`HealthProbe`](slb_core::health::HealthProbe),
//! [`SchedulerFactory`](pool::SchedulerFactory), [`Discovery`](health::Discovery) or
//! certificates, then [`Proxy::start`] it on your tokio runtime, or [`Proxy::start_workers`] it on
//! its own threads (one current-thread runtime per worker, SO_REUSEPORT listeners: the fastest
//! way to run it standalone). [`ProxyHandle`] changes backends at runtime.
// Unsafe code only in `upgrade::sys` (taking ownership of descriptors received by SCM_RIGHTS).
#![deny(unsafe_code)]

pub mod admin;
pub mod config;
#[doc(hidden)]
pub mod fuzzing;
pub mod health;
pub mod http;
mod listener;
mod metrics;
pub mod pool;
pub mod process;
mod proxy;
pub mod proxy_protocol;
pub mod route;
mod server;
mod status;
pub mod sticky;
pub mod tls;
pub mod upgrade;
mod upstream;

pub use metrics::BackendStats;
pub use server::{
    ListenerStats, Proxy, ProxyBuilder, ProxyHandle, ReloadSummary, RunningProxy, Serving, Workers,
};
