//! Simulated networks (feature `sim`): smoltcp hosts with real TCP and UDP sockets exchange
//! frames through forwarders ([`crate::fwd::Forwarder::process`]) on simulated Ethernet
//! segments, in simulated time. No root, no sockets, deterministic.
//!
//! - [`SimHost`] (`host.rs`): a smoltcp interface and its sockets on a queue device.
//! - [`SimNet`] (`net.rs`): hosts around one forwarder.
//!
//! [`crate::cluster::sim`] builds a simulated cluster (directors, a router, a sync fabric) from
//! the same hosts.

mod host;
mod net;

pub use host::{QueueDevice, SOCKET_BUFFER, SimHost, SimRx, SimTx, smol_time};
pub use net::{Emitted, SimNet};
