//! [`PcapWriter`]: records every frame a link receives and sends to a pcap stream (readable by
//! tcpdump and Wireshark), with timestamps from the driver's `now`.

use std::io::{self, Write};

use slb_core::time::Instant;

use super::{Link, LinkStats};
use crate::frame::FrameBuf;

/// Wraps a link and writes a classic pcap trace (LINKTYPE_ETHERNET) of both directions.
#[derive(Debug)]
pub struct PcapWriter<L, W: Write> {
    inner: L,
    out: W,
    now: Instant,
    failed: bool,
}

impl<L: Link, W: Write> PcapWriter<L, W> {
    /// Wraps `inner`, writing the pcap file header to `out` at once.
    pub fn new(inner: L, mut out: W) -> io::Result<Self> {
        let mut h = Vec::with_capacity(24);
        h.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        h.extend_from_slice(&2u16.to_le_bytes());
        h.extend_from_slice(&4u16.to_le_bytes());
        h.extend_from_slice(&0i32.to_le_bytes());
        h.extend_from_slice(&0u32.to_le_bytes());
        h.extend_from_slice(&65535u32.to_le_bytes());
        h.extend_from_slice(&1u32.to_le_bytes());
        out.write_all(&h)?;
        Ok(PcapWriter { inner, out, now: Instant::ZERO, failed: false })
    }

    /// Sets the timestamp of the records written from now on.
    pub fn set_time(&mut self, now: Instant) {
        self.now = now;
    }

    /// The wrapped link and the output.
    pub fn into_parts(self) -> (L, W) {
        (self.inner, self.out)
    }

    fn record(&mut self, frame: &[u8]) {
        if self.failed {
            return;
        }
        let t = self.now.since_epoch();
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&(t.as_secs() as u32).to_le_bytes());
        h[4..8].copy_from_slice(&t.subsec_micros().to_le_bytes());
        h[8..12].copy_from_slice(&(frame.len() as u32).to_le_bytes());
        h[12..16].copy_from_slice(&(frame.len() as u32).to_le_bytes());
        // A failing trace must not break forwarding: stop tracing instead.
        if self.out.write_all(&h).and_then(|_| self.out.write_all(frame)).is_err() {
            self.failed = true;
        }
    }
}

impl<L: Link, W: Write> Link for PcapWriter<L, W> {
    fn recv_batch(&mut self, bufs: &mut [FrameBuf]) -> io::Result<usize> {
        let n = self.inner.recv_batch(bufs)?;
        for b in &bufs[..n] {
            self.record(b.as_slice());
        }
        Ok(n)
    }

    fn send_batch(&mut self, frames: &[FrameBuf]) -> io::Result<usize> {
        for f in frames {
            self.record(f.as_slice());
        }
        self.inner.send_batch(frames)
    }

    fn stats(&self) -> LinkStats {
        self.inner.stats()
    }

    #[cfg(unix)]
    fn poll_fd(&self) -> Option<std::os::fd::RawFd> {
        self.inner.poll_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::MemoryLink;

    #[test]
    fn writes_header_and_records() {
        let (a, _b) = MemoryLink::pair(8);
        let mut p = PcapWriter::new(a, Vec::new()).unwrap();
        p.set_time(Instant::from_millis(1500));
        p.send_batch(&[FrameBuf::from_slice(&[9u8; 60])]).unwrap();
        let (_, out) = p.into_parts();
        assert_eq!(out.len(), 24 + 16 + 60);
        assert_eq!(&out[0..4], &0xa1b2_c3d4u32.to_le_bytes());
        assert_eq!(&out[24..28], &1u32.to_le_bytes(), "seconds");
        assert_eq!(&out[28..32], &500_000u32.to_le_bytes(), "microseconds");
    }
}
