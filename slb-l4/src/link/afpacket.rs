//! [`AfPacketLink`]: a batched AF_PACKET link (feature `io`): `recvmmsg`/`sendmmsg` of up to a
//! batch of frames per system call, straight into and out of the [`FrameBuf`]s (one copy each
//! way, no allocation per frame), with the checksum status of every frame from
//! `PACKET_AUXDATA`, its own transmissions ignored (`PACKET_IGNORE_OUTGOING`) and oversize
//! frames (GSO/TSO super-frames) detected with `MSG_TRUNC` and counted. Transmissions skip the
//! qdisc layer (`PACKET_QDISC_BYPASS`): the forwarder is the only sender on its ports.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use super::sys::{self, Mmsg, RxRing, SocketOpts};
use super::{Link, LinkStats};
use crate::frame::FrameBuf;

/// A batched AF_PACKET socket bound to one interface.
#[derive(Debug)]
pub struct AfPacketLink {
    // Field order matters for drop: the ring is unmapped before the socket closes.
    ring: Option<RxRing>,
    fd: OwnedFd,
    rx: Mmsg,
    tx: Mmsg,
    stats: LinkStats,
}

impl AfPacketLink {
    /// Opens interface `ifname` with batches of up to `batch` frames and `buffer` bytes of
    /// socket buffer each way.
    pub fn open(ifname: &str, batch: usize, buffer: usize) -> io::Result<Self> {
        let idx = sys::if_index(ifname)?;
        let fd = sys::packet_socket(
            idx,
            SocketOpts { bind: true, auxdata: true, buffer, qdisc_bypass: true },
        )?;
        Ok(AfPacketLink {
            ring: None,
            fd,
            rx: Mmsg::new(batch),
            tx: Mmsg::new(batch),
            stats: LinkStats::default(),
        })
    }

    /// Like [`AfPacketLink::open`], but frames are received through a TPACKET_V3 ring
    /// (`ring_bytes` of shared memory in 256 KB blocks, a block handed over when full or after
    /// 1 ms): no system call per received batch while frames keep coming, and the checksum
    /// status read from each frame's ring header. Sending is `sendmmsg` as before.
    pub fn open_ring(
        ifname: &str,
        batch: usize,
        buffer: usize,
        ring_bytes: usize,
    ) -> io::Result<Self> {
        let idx = sys::if_index(ifname)?;
        let opts = SocketOpts { bind: false, auxdata: false, buffer, qdisc_bypass: true };
        let fd = sys::packet_socket(idx, opts)?;
        const BLOCK: usize = 256 << 10;
        let ring = RxRing::new(fd.as_raw_fd(), BLOCK, (ring_bytes / BLOCK).max(2), 2048, 1)?;
        sys::bind_to(fd.as_raw_fd(), idx)?;
        Ok(AfPacketLink {
            ring: Some(ring),
            fd,
            rx: Mmsg::new(batch),
            tx: Mmsg::new(batch),
            stats: LinkStats::default(),
        })
    }
}

impl Link for AfPacketLink {
    fn recv_batch(&mut self, bufs: &mut [FrameBuf]) -> io::Result<usize> {
        let (n, oversize) = match self.ring.as_mut() {
            Some(r) => r.recv(bufs),
            None => self.rx.recv(self.fd.as_raw_fd(), bufs, true)?,
        };
        self.stats.rx_oversize += oversize as u64;
        self.stats.count_rx(bufs, n);
        Ok(n)
    }

    fn send_batch(&mut self, frames: &[FrameBuf]) -> io::Result<usize> {
        let sent = self.tx.send(self.fd.as_raw_fd(), frames)?;
        self.stats.count_tx(frames, sent);
        Ok(sent)
    }

    fn stats(&self) -> LinkStats {
        let mut s = self.stats;
        s.rx_dropped = sys::packet_drops(self.fd.as_raw_fd());
        s
    }

    fn poll_fd(&self) -> Option<RawFd> {
        Some(self.fd.as_raw_fd())
    }
}
