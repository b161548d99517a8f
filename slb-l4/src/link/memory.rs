//! In-memory links: two ends of a bounded queue pair, usable across threads.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex};

use super::{Link, LinkStats};
use crate::frame::{CsumState, FrameBuf, FrameMeta};

type Queue = Arc<Mutex<VecDeque<Vec<u8>>>>;

/// One end of an in-memory link. What one end sends, the other receives, up to `capacity`
/// frames in flight per direction (more are dropped and counted).
#[derive(Debug)]
pub struct MemoryLink {
    rx: Queue,
    tx: Queue,
    capacity: usize,
    stats: LinkStats,
    csum: CsumState,
}

impl MemoryLink {
    /// Two connected ends.
    pub fn pair(capacity: usize) -> (MemoryLink, MemoryLink) {
        let a: Queue = Arc::default();
        let b: Queue = Arc::default();
        let end = |rx: &Queue, tx: &Queue| MemoryLink {
            rx: Arc::clone(rx),
            tx: Arc::clone(tx),
            capacity,
            stats: LinkStats::default(),
            csum: CsumState::Unknown,
        };
        (end(&a, &b), end(&b, &a))
    }

    /// Sets the checksum state received frames are marked with (default: unknown).
    pub fn with_csum_state(mut self, csum: CsumState) -> Self {
        self.csum = csum;
        self
    }

    /// Frames waiting to be received at this end.
    pub fn pending(&self) -> usize {
        self.rx.lock().map_or(0, |q| q.len())
    }
}

impl Link for MemoryLink {
    fn recv_batch(&mut self, bufs: &mut [FrameBuf]) -> io::Result<usize> {
        let mut q = self.rx.lock().map_err(|_| io::Error::other("poisoned"))?;
        let mut n = 0;
        while n < bufs.len() {
            let Some(f) = q.pop_front() else { break };
            if f.len() > bufs[n].capacity() {
                self.stats.rx_oversize += 1;
                continue;
            }
            bufs[n].fill(&f);
            bufs[n].meta = FrameMeta { csum: self.csum, ..FrameMeta::default() };
            self.stats.rx_frames += 1;
            self.stats.rx_bytes += f.len() as u64;
            n += 1;
        }
        Ok(n)
    }

    fn send_batch(&mut self, frames: &[FrameBuf]) -> io::Result<usize> {
        let mut q = self.tx.lock().map_err(|_| io::Error::other("poisoned"))?;
        let mut sent = 0;
        for f in frames {
            if q.len() >= self.capacity {
                self.stats.tx_dropped += 1;
                continue;
            }
            q.push_back(f.as_slice().to_vec());
            self.stats.tx_frames += 1;
            self.stats.tx_bytes += f.len() as u64;
            sent += 1;
        }
        Ok(sent)
    }

    fn stats(&self) -> LinkStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pair_delivers_in_order_and_bounds_the_queue() {
        let (mut a, mut b) = MemoryLink::pair(2);
        let frames: Vec<FrameBuf> = (1..=3u8).map(|i| FrameBuf::from_slice(&[i; 20])).collect();
        assert_eq!(a.send_batch(&frames).unwrap(), 2);
        assert_eq!(a.stats().tx_dropped, 1);
        let mut bufs = vec![FrameBuf::default(); 4];
        assert_eq!(b.recv_batch(&mut bufs).unwrap(), 2);
        assert_eq!(bufs[0].as_slice(), &[1; 20]);
        assert_eq!(bufs[1].as_slice(), &[2; 20]);
        assert_eq!(b.recv_batch(&mut bufs).unwrap(), 0);
    }
}
