//! Transports and the threaded driver: the only part of slb-sync that does I/O or reads a clock.
//!
//! A [`Transport`] sends datagrams to a [`Destination`] and hands out the sockets to read from.
//! [`spawn`] runs an [`Engine`](crate::Engine) on its own thread with one reader thread per
//! socket: readers push datagrams into a bounded channel (blocking when it is full, so the
//! kernel's socket buffer absorbs bursts and drops the excess), the engine thread drains it,
//! calls `handle_timeout` when `poll_timeout` passes, sends every `poll_transmit`, and hands
//! every event to the owner's callback (which may call back into the engine, e.g. to answer a
//! snapshot request). The dataplane feeds local session events through a [`SyncHandle`]; when
//! the channel is full they are shed and counted rather than blocking the dataplane.

mod driver;
mod udp;

use std::io;
use std::net::UdpSocket;

pub use driver::{DriverStatus, SyncHandle, spawn};
pub use udp::{MulticastConfig, MulticastTransport, UnicastTransport};

use crate::engine::Destination;

/// A way to move datagrams between nodes.
pub trait Transport: Send + 'static {
    /// Sends one datagram.
    fn send(&self, dest: &Destination, bytes: &[u8]) -> io::Result<()>;
    /// The sockets to read datagrams from (one reader thread each).
    fn receivers(&self) -> io::Result<Vec<UdpSocket>>;
}
