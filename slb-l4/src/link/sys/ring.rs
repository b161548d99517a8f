//! The TPACKET_V3 receive ring of a packet socket, and [`Mmap`], the memory mappings that it
//! and the AF_XDP link share.

use std::io;
use std::os::fd::RawFd;

use super::packet::TP_STATUS_CSUMNOTREADY;
use super::{check, setsockopt_int};
use crate::frame::{CsumState, FrameBuf, FrameMeta};

const PACKET_RX_RING: libc::c_int = 5;
const PACKET_VERSION: libc::c_int = 10;
const TPACKET_V3: libc::c_int = 2;
const TP_STATUS_KERNEL: u32 = 0;
const TP_STATUS_USER: u32 = 1;

/// `struct tpacket_req3`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct TpacketReq3 {
    tp_block_size: u32,
    tp_block_nr: u32,
    tp_frame_size: u32,
    tp_frame_nr: u32,
    tp_retire_blk_tov: u32,
    tp_sizeof_priv: u32,
    tp_feature_req_word: u32,
}

// Offsets in `struct tpacket_block_desc` (version, offset_to_priv, then tpacket_hdr_v1).
const BD_BLOCK_STATUS: usize = 8;
const BD_NUM_PKTS: usize = 12;
const BD_OFFSET_TO_FIRST_PKT: usize = 16;
// Offsets in `struct tpacket3_hdr`.
const PH_NEXT_OFFSET: usize = 0;
const PH_SNAPLEN: usize = 12;
const PH_LEN: usize = 16;
const PH_STATUS: usize = 20;
const PH_MAC: usize = 24;

/// One memory mapping, unmapped on drop: the links' shared rings and buffers.
pub(crate) struct Mmap {
    pub(crate) ptr: *mut u8,
    pub(crate) len: usize,
}

// SAFETY: the mapping is plain memory owned by this value; moving it to another thread moves
// that ownership (what the kernel shares through it is synchronised by atomics in it).
unsafe impl Send for Mmap {}

impl Mmap {
    /// `len` bytes of private anonymous memory, faulted in now.
    pub(crate) fn anonymous(len: usize) -> io::Result<Mmap> {
        Self::map(len, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE, -1, 0)
    }

    /// `len` bytes of what socket `fd` offers for mapping at `offset` (a ring).
    pub(crate) fn shared(fd: RawFd, len: usize, offset: libc::off_t) -> io::Result<Mmap> {
        Self::map(len, libc::MAP_SHARED, fd, offset)
    }

    fn map(len: usize, flags: libc::c_int, fd: RawFd, offset: libc::off_t) -> io::Result<Mmap> {
        // SAFETY: a fresh mapping at an address of the kernel's choice; no existing memory is
        // affected, and the result is checked against MAP_FAILED.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                fd,
                offset,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mmap { ptr: ptr.cast(), len })
    }
}

impl Drop for Mmap {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly the mapping made in `map`, unmapped once.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// A TPACKET_V3 receive ring mapped from a packet socket: the kernel writes frames into blocks
/// of shared memory and hands a block over by setting its status; reading frames costs no
/// system call while blocks are ready.
pub(crate) struct RxRing {
    map: Mmap,
    block_size: usize,
    blocks: usize,
    /// Current block, packets left in it, offset of the next packet in it.
    block: usize,
    left: u32,
    next: usize,
}

impl std::fmt::Debug for RxRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RxRing")
            .field("blocks", &self.blocks)
            .field("block_size", &self.block_size)
            .finish()
    }
}

impl RxRing {
    /// Sets TPACKET_V3 on `fd` (before bind) and maps a ring of `blocks` blocks of
    /// `block_size` bytes; a block is handed over when full or after `retire_ms`.
    pub(crate) fn new(
        fd: RawFd,
        block_size: usize,
        blocks: usize,
        frame_size: usize,
        retire_ms: u32,
    ) -> io::Result<Self> {
        setsockopt_int(fd, libc::SOL_PACKET, PACKET_VERSION, TPACKET_V3)?;
        let req = TpacketReq3 {
            tp_block_size: block_size as u32,
            tp_block_nr: blocks as u32,
            tp_frame_size: frame_size as u32,
            tp_frame_nr: (block_size / frame_size * blocks) as u32,
            tp_retire_blk_tov: retire_ms,
            ..TpacketReq3::default()
        };
        // SAFETY: `req` lives across the call and its exact size is passed; the kernel reads it.
        check(unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_PACKET,
                PACKET_RX_RING,
                (&req as *const TpacketReq3).cast(),
                size_of::<TpacketReq3>() as libc::socklen_t,
            )
        })?;
        // The ring the kernel just allocated for this socket.
        let map = Mmap::shared(fd, block_size * blocks, 0)?;
        Ok(RxRing { map, block_size, blocks, block: 0, left: 0, next: 0 })
    }

    fn block_ptr(&self, b: usize) -> *mut u8 {
        // SAFETY (of the arithmetic): b < blocks, so the offset stays inside the mapping.
        unsafe { self.map.ptr.add(b * self.block_size) }
    }

    fn status(&self, b: usize) -> &std::sync::atomic::AtomicU32 {
        // SAFETY: block_status is a 4-byte-aligned u32 inside block `b` of the live mapping; the
        // kernel and this reader hand the block back and forth through it, hence the atomic.
        unsafe { &*(self.block_ptr(b).add(BD_BLOCK_STATUS) as *const std::sync::atomic::AtomicU32) }
    }

    /// Copies up to `bufs.len()` frames out of the ring. Returns (frames, oversize frames).
    pub(crate) fn recv(&mut self, bufs: &mut [FrameBuf]) -> (usize, usize) {
        use std::sync::atomic::Ordering;
        let (mut n, mut oversize) = (0, 0);
        while n < bufs.len() {
            if self.left == 0 {
                if self.next != 0 {
                    // Finished this block: give it back, move on.
                    self.status(self.block).store(TP_STATUS_KERNEL, Ordering::Release);
                    self.block = (self.block + 1) % self.blocks;
                    self.next = 0;
                }
                if self.status(self.block).load(Ordering::Acquire) & TP_STATUS_USER == 0 {
                    break;
                }
                let bp = self.block_ptr(self.block);
                // SAFETY: the block is ours (status USER); its header fields are u32s at fixed
                // offsets inside the block.
                unsafe {
                    self.left = std::ptr::read_unaligned(bp.add(BD_NUM_PKTS) as *const u32);
                    self.next =
                        std::ptr::read_unaligned(bp.add(BD_OFFSET_TO_FIRST_PKT) as *const u32)
                            as usize;
                }
                if self.left == 0 {
                    // An empty (timed-out) block: release it at the top of the loop.
                    self.next = self.next.max(1);
                    continue;
                }
            }
            let bp = self.block_ptr(self.block);
            if self.next >= self.block_size {
                self.left = 0;
                continue;
            }
            // SAFETY: `next` is an offset the kernel wrote for a packet inside this block (checked
            // against the block size above); the packet header's fields are read unaligned, and
            // the frame is copied only when it lies inside the block.
            unsafe {
                let ph = bp.add(self.next);
                let next_off =
                    std::ptr::read_unaligned(ph.add(PH_NEXT_OFFSET) as *const u32) as usize;
                let snap = std::ptr::read_unaligned(ph.add(PH_SNAPLEN) as *const u32) as usize;
                let len = std::ptr::read_unaligned(ph.add(PH_LEN) as *const u32) as usize;
                let status = std::ptr::read_unaligned(ph.add(PH_STATUS) as *const u32);
                let mac = std::ptr::read_unaligned(ph.add(PH_MAC) as *const u16) as usize;
                let inside = self.next + mac + snap <= self.block_size;
                if len > snap || snap > bufs[n].capacity() || !inside {
                    oversize += 1;
                } else {
                    let area = bufs[n].recv_area();
                    std::ptr::copy_nonoverlapping(ph.add(mac), area.as_mut_ptr(), snap);
                    let csum = if status & TP_STATUS_CSUMNOTREADY != 0 {
                        CsumState::Partial
                    } else {
                        CsumState::Complete
                    };
                    bufs[n].set_received(snap, FrameMeta { csum, ..FrameMeta::default() });
                    n += 1;
                }
                self.left -= 1;
                if next_off == 0 {
                    self.left = 0;
                }
                self.next += next_off.max(1);
            }
        }
        (n, oversize)
    }
}
