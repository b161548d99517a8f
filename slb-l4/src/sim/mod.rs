//! Simulated networks (feature `sim`): smoltcp hosts with real TCP and UDP sockets exchange
//! frames through forwarders ([`crate::fwd::Forwarder::process`]) on simulated Ethernet
//! segments, in simulated time. No root, no sockets, deterministic.
//!
//! - [`SimHost`] (`host.rs`): a smoltcp interface and its sockets on a queue device.
//! - [`Ether`] (`ether.rs`): the one event loop: the clock, the hosts and the frames in flight
//!   on the segments; it steps to the next wakeup of any participant, never by a fixed tick.
//!   What else sits on the segments plugs in as its [`Devices`].
//! - [`Net`] (`net.rs`): an ether and its devices, the type every simulator is.
//! - [`SimNet`] (`forwarder.rs`): hosts around one forwarder.
//! - [`crate::cluster::sim::ClusterNet`]: hosts, several directors, a router and a sync fabric.

mod ether;
mod forwarder;
mod host;
mod net;

pub(crate) use ether::mac_at;
pub use ether::{Context, Devices, Ether, EtherStats, Origin};
#[cfg(feature = "sync")]
pub(crate) use forwarder::forward;
pub use forwarder::{Emitted, SimForwarder, SimNet};
pub use host::{QueueDevice, SOCKET_BUFFER, SimHost, SimRx, SimTx, smol_time};
pub use net::Net;
