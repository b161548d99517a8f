//! # slb-l4: an LVS-class packet dataplane
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
//!
//! ```
//! use slb_core::flow::Protocol;
//! use slb_core::sched::{SchedulerConfig, SchedulerKind};
//! use slb_core::time::Instant;
//! use slb_l4::frame::FrameBuf;
//! use slb_l4::fwd::{Forwarder, ForwarderConfig, Mode, PortConfig, ServiceConfig, Verdict};
//!
//! let mut fwd = Forwarder::new(ForwarderConfig::default());
//! let client_side = fwd
//!     .add_port(PortConfig::new([2, 0, 0, 0, 1, 1]).with_addr("10.0.1.1/24".parse().unwrap()))
//!     .unwrap();
//! fwd.add_port(PortConfig::new([2, 0, 0, 0, 2, 1]).with_addr("10.0.2.1/24".parse().unwrap()))
//!     .unwrap();
//! let svc = ServiceConfig::new(
//!     Protocol::Tcp,
//!     "10.0.0.100".parse().unwrap(),
//!     80,
//!     Mode::Nat,
//!     SchedulerConfig::new(SchedulerKind::RoundRobin),
//! )
//! .with_real("10.0.2.11:80".parse().unwrap());
//! fwd.add_service(svc).unwrap();
//! // A frame that is not addressed to us is left to the host.
//! let mut frame = FrameBuf::from_slice(&[0u8; 60]);
//! assert_eq!(fwd.process(Instant::ZERO, &mut frame, client_side), Verdict::Host);
//! ```
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
