//! Links: where frames come from and go to, behind one batch-shaped trait.
//!
//! ```text
//!   Link::recv_batch(&mut [FrameBuf]) -> n      (never blocks; 0 when nothing is queued)
//!   Link::send_batch(&[FrameBuf])     -> sent   (frames beyond `sent` were dropped, counted)
//! ```
//! Implementations: [`MemoryLink`] (in-process pairs, for tests and benches), the smoltcp
//! adapter in `slb_l4::sim` (feature `sim`), pnet's AF_PACKET channel, a batched AF_PACKET
//! socket and an AF_XDP socket (feature `io`). Middlewares wrap any link: [`FaultInjector`] (seeded loss,
//! duplication, corruption) and [`PcapWriter`] (a pcap trace of both directions).

#[cfg(feature = "io")]
mod afpacket;
mod fault;
mod memory;
#[cfg(feature = "io")]
pub mod offload;
mod pcap;
#[cfg(feature = "io")]
mod pnet;
#[cfg(feature = "io")]
pub(crate) mod sys;
#[cfg(feature = "io")]
mod transit;
#[cfg(feature = "io")]
mod xdp;
#[cfg(feature = "io")]
pub(crate) mod xdp_prog;

#[cfg(feature = "io")]
pub use afpacket::AfPacketLink;
pub use fault::{FaultConfig, FaultInjector};
pub use memory::MemoryLink;
#[cfg(feature = "io")]
pub use offload::{FlowOffload, OffloadConfig, OffloadStats};
pub use pcap::PcapWriter;
#[cfg(feature = "io")]
pub use pnet::PnetLink;
#[cfg(feature = "io")]
pub use transit::TransitFilter;
#[cfg(feature = "io")]
pub use xdp::{XdpConfig, XdpLink};

use std::io;

use crate::frame::FrameBuf;

/// Advises the kernel to back `regions` (start, length in bytes) with transparent huge pages,
/// e.g. a session table's [`memory_regions`](slb_core::session::SessionTable::memory_regions)
/// right after the table is created: a lookup in a big table then misses the TLB far less
/// often. Takes effect for pages not yet touched (and, later, through `khugepaged`) when the
/// system's THP mode is `always` or `madvise`. Returns the bytes advised.
#[cfg(feature = "io")]
pub fn advise_huge_pages(regions: &[(*const u8, usize)]) -> usize {
    sys::advise_huge_pages(regions)
}

/// Counters every link keeps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Frames received.
    pub rx_frames: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Of `rx_frames`, those that came through a kernel-bypass fast path (`XdpLink`'s AF_XDP
    /// socket rather than its packet socket); 0 for the other links.
    pub rx_fast: u64,
    /// Frames sent.
    pub tx_frames: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Received frames larger than the buffers (e.g. GSO super-frames), dropped.
    pub rx_oversize: u64,
    /// Frames the receive side lost before we read them (kernel queue overflow), if known.
    pub rx_dropped: u64,
    /// Frames that could not be sent (queue full, errors).
    pub tx_dropped: u64,
}

impl LinkStats {
    /// Counts a received batch: `bufs[..n]` were filled.
    pub fn count_rx(&mut self, bufs: &[FrameBuf], n: usize) {
        self.rx_frames += n as u64;
        self.rx_bytes += bufs[..n].iter().map(|b| b.len() as u64).sum::<u64>();
    }

    /// Counts a sent batch: `frames[..sent]` went out, the rest were dropped.
    pub fn count_tx(&mut self, frames: &[FrameBuf], sent: usize) {
        self.tx_frames += sent as u64;
        self.tx_bytes += frames[..sent].iter().map(|b| b.len() as u64).sum::<u64>();
        self.tx_dropped += (frames.len() - sent) as u64;
    }
}

/// A source and sink of Ethernet frames, in batches.
pub trait Link {
    /// Receives up to `bufs.len()` frames into `bufs` (each overwritten from its start, with
    /// its metadata set) without blocking; returns how many were filled.
    fn recv_batch(&mut self, bufs: &mut [FrameBuf]) -> io::Result<usize>;

    /// Sends `frames`; returns how many were sent. Frames not sent were dropped and counted in
    /// [`LinkStats::tx_dropped`].
    fn send_batch(&mut self, frames: &[FrameBuf]) -> io::Result<usize>;

    /// Counters.
    fn stats(&self) -> LinkStats;

    /// A file descriptor that polls readable when frames are waiting, if the link has one
    /// (drivers wait on it instead of spinning).
    #[cfg(unix)]
    fn poll_fd(&self) -> Option<std::os::fd::RawFd> {
        None
    }

    /// The index of the network interface the link sends on, if it is one (a flow cache
    /// redirects frames there; see `FlowOffload`, feature `io`).
    fn ifindex(&self) -> Option<u32> {
        None
    }
}

impl<L: Link + ?Sized> Link for Box<L> {
    fn recv_batch(&mut self, bufs: &mut [FrameBuf]) -> io::Result<usize> {
        (**self).recv_batch(bufs)
    }
    fn send_batch(&mut self, frames: &[FrameBuf]) -> io::Result<usize> {
        (**self).send_batch(frames)
    }
    fn stats(&self) -> LinkStats {
        (**self).stats()
    }
    #[cfg(unix)]
    fn poll_fd(&self) -> Option<std::os::fd::RawFd> {
        (**self).poll_fd()
    }
    fn ifindex(&self) -> Option<u32> {
        (**self).ifindex()
    }
}
