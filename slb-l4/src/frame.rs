//! [`FrameBuf`]: one Ethernet frame in a fixed buffer with headroom, so that the forwarder can
//! grow a frame in place (TOA insertion moves the headers 8 bytes into the headroom instead of
//! shifting the payload).
//!
//! ```text
//!   0          start                     start+len                 capacity
//!   | headroom |  frame (Ethernet header ...) |  tailroom             |
//! ```
//! Links receive straight into [`FrameBuf::recv_area`] (the headroom is reserved before it) and
//! send [`FrameBuf::as_slice`].

use std::fmt;

/// Bytes reserved in front of every received frame for in-place growth.
pub const HEADROOM: usize = 64;

/// Default frame capacity: a 1500-byte MTU Ethernet frame (1514) with room to spare.
pub const DEFAULT_FRAME_CAPACITY: usize = 2048 - HEADROOM;

/// What the receiving link knows about a frame's transport checksum.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CsumState {
    /// The link cannot tell (pnet, memory links): the forwarder detects partial sums itself.
    #[default]
    Unknown,
    /// The link reported a complete checksum (or the frame came from the wire).
    Complete,
    /// The link reported a checksum left partial by an offload (Linux `TP_STATUS_CSUMNOTREADY`):
    /// the field holds only the pseudo-header sum, so the forwarder recomputes it fully.
    Partial,
}

/// Per-frame metadata set by the link that received it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameMeta {
    /// Transport checksum state.
    pub csum: CsumState,
    /// Set by [`Forwarder::process_batch`](crate::fwd::Forwarder::process_batch) (cleared for
    /// every other frame): the frame took the fast path of an established flow, and the
    /// rewrite it got (MACs, addresses, ports, TTL, checksum updates) is the one every later
    /// frame of the flow in this direction gets until the session changes, so a flow cache may
    /// replay it on frames without SYN, FIN or RST (see `link::FlowOffload`, feature `io`).
    pub steady: bool,
}

/// One frame with headroom and tailroom. Cheap to reuse: links and drivers keep pools of them.
#[derive(Clone)]
pub struct FrameBuf {
    buf: Box<[u8]>,
    start: usize,
    len: usize,
    /// Metadata from the receiving link.
    pub meta: FrameMeta,
}

impl fmt::Debug for FrameBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameBuf")
            .field("start", &self.start)
            .field("len", &self.len)
            .field("meta", &self.meta)
            .finish()
    }
}

impl Default for FrameBuf {
    fn default() -> Self {
        FrameBuf::new(DEFAULT_FRAME_CAPACITY)
    }
}

impl FrameBuf {
    /// An empty buffer that can hold frames of up to `capacity` bytes (plus [`HEADROOM`]).
    pub fn new(capacity: usize) -> Self {
        FrameBuf {
            buf: vec![0u8; HEADROOM + capacity].into_boxed_slice(),
            start: HEADROOM,
            len: 0,
            meta: FrameMeta::default(),
        }
    }

    /// A buffer holding a copy of `frame` (with the default capacity, or more if needed).
    pub fn from_slice(frame: &[u8]) -> Self {
        let mut b = FrameBuf::new(DEFAULT_FRAME_CAPACITY.max(frame.len()));
        b.fill(frame);
        b
    }

    /// Largest frame a fresh receive can hold.
    pub fn capacity(&self) -> usize {
        self.buf.len() - HEADROOM
    }

    /// The frame.
    #[inline]
    pub fn as_slice(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.len]
    }

    /// The frame, mutable.
    #[inline]
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.start + self.len]
    }

    /// Frame length.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the buffer holds no frame.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets the frame and restores the full headroom; metadata is reset.
    #[inline]
    pub fn reset(&mut self) {
        self.start = HEADROOM;
        self.len = 0;
        self.meta = FrameMeta::default();
    }

    /// Replaces the content with a copy of `frame`, truncated to the capacity; returns the
    /// number of bytes copied.
    pub fn fill(&mut self, frame: &[u8]) -> usize {
        self.reset();
        let n = frame.len().min(self.capacity());
        self.buf[HEADROOM..HEADROOM + n].copy_from_slice(&frame[..n]);
        self.len = n;
        n
    }

    /// The whole area after the headroom, for a link to receive into; follow with
    /// [`FrameBuf::set_received`].
    #[inline]
    pub fn recv_area(&mut self) -> &mut [u8] {
        self.start = HEADROOM;
        &mut self.buf[HEADROOM..]
    }

    /// Marks `len` bytes of [`FrameBuf::recv_area`] as the received frame (clamped to capacity).
    #[inline]
    pub fn set_received(&mut self, len: usize, meta: FrameMeta) {
        self.start = HEADROOM;
        self.len = len.min(self.capacity());
        self.meta = meta;
    }

    /// Shortens the frame to `len` bytes (no-op if already shorter).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Replaces the frame by a new one of `len` zero bytes that `write` fills (a frame emitted
    /// from a `Repr`); metadata is reset. False (and an empty frame) if `len` exceeds the
    /// capacity.
    pub fn build(&mut self, len: usize, write: impl FnOnce(&mut [u8])) -> bool {
        self.reset();
        if !self.resize(len) {
            return false;
        }
        write(self.as_mut_slice());
        true
    }

    /// Sets the frame length to `len`, from the current start, zero-filling new bytes; false
    /// (and no change) if the buffer is too small.
    pub fn resize(&mut self, len: usize) -> bool {
        if self.start + len > self.buf.len() {
            return false;
        }
        if len > self.len {
            self.buf[self.start + self.len..self.start + len].fill(0);
        }
        self.len = len;
        true
    }

    /// Opens a gap of `n` zero bytes at offset `at` of the frame by moving the `at` bytes in
    /// front of it into the headroom. Returns false (and changes nothing) when `at` is beyond
    /// the frame or the headroom is too small.
    pub fn insert_gap(&mut self, at: usize, n: usize) -> bool {
        if at > self.len || n > self.start {
            return false;
        }
        let old = self.start;
        self.start -= n;
        self.buf.copy_within(old..old + at, self.start);
        self.buf[self.start + at..self.start + at + n].fill(0);
        self.len += n;
        true
    }

    /// Headroom left in front of the frame.
    pub fn headroom(&self) -> usize {
        self.start
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_gap_moves_headers_into_headroom() {
        let mut b = FrameBuf::new(32);
        b.fill(&[1, 2, 3, 4, 5, 6]);
        assert!(b.insert_gap(2, 3));
        assert_eq!(b.as_slice(), &[1, 2, 0, 0, 0, 3, 4, 5, 6]);
        assert_eq!(b.headroom(), HEADROOM - 3);
        assert!(!b.insert_gap(100, 1), "beyond the frame");
        assert!(!b.insert_gap(0, HEADROOM), "not enough headroom left");
        b.reset();
        assert_eq!(b.headroom(), HEADROOM);
        assert_eq!(b.fill(&[7u8; 40]), 32, "truncated to capacity");
        assert!(b.resize(4));
        assert!(!b.resize(33 + HEADROOM));
    }
}
