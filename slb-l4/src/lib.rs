#![doc = include_str!("../README.md")]
//!
//! ## Layout
//!
//! ```text
//!   links (I/O)          pnet AF_PACKET | batched AF_PACKET | memory | smoltcp sim   [link, sim]
//!       | recv_batch / send_batch of FrameBuf
//!   driver (I/O, clock)  director loop: poll links, expire sessions, health probes  [driver]
//!       | process(now, &mut frame, port) -> Verdict
//!   Forwarder (pure)     ARP/ND, sessions (slb-core), schedulers, NAT / FULLNAT+TOA / DR  [fwd]
//!       | zero-copy views, checksums, TCP options
//!   wire (pure)          smoltcp::wire views, ARP / ND reprs, RFC 1624 updates, TOA [wire]
//! ```
//!
//! [`fwd::Forwarder::process`] is a pure function of `now`, the frame and the forwarder's state:
//! no sockets, no clock. Links and the driver are the only parts that do I/O (features `io`
//! for real links, `sim` for smoltcp-simulated hosts, `lab` for the namespace toolkit).
#![deny(unsafe_code)]

#[cfg(feature = "sync")]
pub mod cluster;
#[cfg(feature = "sim")]
pub mod craft;
#[cfg(feature = "io")]
pub mod driver;
pub mod frame;
pub mod fwd;
pub mod health;
pub mod link;
#[cfg(feature = "sim")]
pub mod sim;
pub mod wire;

// The lab toolkit is a driver for root-only tests: it waits on real processes with deadlines.
#[allow(clippy::disallowed_methods)]
#[cfg(feature = "lab")]
pub mod lab;
