//! The AF_XDP system calls of [`crate::link::XdpLink`]: the UMEM and its four rings and the XDP
//! socket (the program that steers frames to it is loaded through [`super::bpf`]). All
//! `unsafe` of AF_XDP is in this file, each block with its SAFETY argument.
//!
//! ```text
//!   UMEM (2 x ring frames of FRAME bytes):  [ rx frames: 0 .. ring ) [ tx frames: ring .. 2 ring )
//!   fill ring  (we produce rx frames)  -> kernel writes a received frame -> rx ring (we consume)
//!   tx ring    (we produce tx frames)  -> kernel sends it (on sendto)    -> completion ring
//! ```
#![allow(unsafe_code)]

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};

use super::{Mmap, check};
use crate::frame::{FrameBuf, FrameMeta};

// Kernel ABI values (linux/if_xdp.h), spelled out so that they do not depend on
// which libc version exports them.
const AF_XDP: libc::c_int = 44;
const SOL_XDP: libc::c_int = 283;
const XDP_MMAP_OFFSETS: libc::c_int = 1;
const XDP_RX_RING: libc::c_int = 2;
const XDP_TX_RING: libc::c_int = 3;
const XDP_UMEM_REG: libc::c_int = 4;
const XDP_UMEM_FILL_RING: libc::c_int = 5;
const XDP_UMEM_COMPLETION_RING: libc::c_int = 6;
const XDP_STATISTICS: libc::c_int = 7;
const XDP_COPY: u16 = 1 << 1;
const XDP_PGOFF_RX_RING: libc::off_t = 0;
const XDP_PGOFF_TX_RING: libc::off_t = 0x8000_0000;
const XDP_UMEM_PGOFF_FILL_RING: libc::off_t = 0x1_0000_0000;
const XDP_UMEM_PGOFF_COMPLETION_RING: libc::off_t = 0x1_8000_0000;

/// Bytes per UMEM frame (one frame per chunk; a 1514-byte frame plus TOA fits).
pub(crate) const FRAME: u32 = 2048;

#[repr(C)]
struct XdpUmemReg {
    addr: u64,
    len: u64,
    chunk_size: u32,
    headroom: u32,
    flags: u32,
    tx_metadata_len: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct XdpRingOffset {
    producer: u64,
    consumer: u64,
    desc: u64,
    flags: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct XdpMmapOffsets {
    rx: XdpRingOffset,
    tx: XdpRingOffset,
    fr: XdpRingOffset,
    cr: XdpRingOffset,
}

#[repr(C)]
struct SockaddrXdp {
    family: u16,
    flags: u16,
    ifindex: u32,
    queue_id: u32,
    shared_umem_fd: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct XdpDesc {
    addr: u64,
    len: u32,
    options: u32,
}

/// `struct xdp_statistics`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct XdpStatistics {
    /// Frames dropped for reasons other than a full ring or an empty fill ring.
    pub(crate) rx_dropped: u64,
    pub(crate) rx_invalid_descs: u64,
    pub(crate) tx_invalid_descs: u64,
    /// Frames dropped because the rx ring was full.
    pub(crate) rx_ring_full: u64,
    /// Frames dropped because the fill ring was empty.
    pub(crate) rx_fill_ring_empty_descs: u64,
    pub(crate) tx_ring_empty_descs: u64,
}

/// One of the four AF_XDP rings: a power-of-two array of descriptors between a producer and
/// a consumer index, one of which the kernel moves.
struct Ring {
    map: Mmap,
    producer: usize,
    consumer: usize,
    desc: usize,
    mask: u32,
}

impl Ring {
    fn map(
        fd: RawFd,
        off: &XdpRingOffset,
        n: u32,
        elem: usize,
        pgoff: libc::off_t,
    ) -> io::Result<Ring> {
        let len = off.desc as usize + n as usize * elem;
        let map = Mmap::shared(fd, len, pgoff)?;
        Ok(Ring {
            map,
            producer: off.producer as usize,
            consumer: off.consumer as usize,
            desc: off.desc as usize,
            mask: n - 1,
        })
    }

    fn index(&self, at: usize) -> &AtomicU32 {
        // SAFETY: the kernel's mmap offsets place an aligned u32 index at `at` inside the
        // mapping, which lives as long as `self`; the kernel accesses it atomically too.
        unsafe { &*(self.map.ptr.add(at) as *const AtomicU32) }
    }

    fn producer(&self) -> &AtomicU32 {
        self.index(self.producer)
    }

    fn consumer(&self) -> &AtomicU32 {
        self.index(self.consumer)
    }

    /// The address of descriptor slot `i` (any index; masked here) for elements of type `T`.
    fn slot<T>(&self, i: u32) -> *mut T {
        // SAFETY: `i & mask` < ring size, and the mapping holds `size` elements of `T` from
        // `desc` (the length given to `map`).
        unsafe { self.map.ptr.add(self.desc).cast::<T>().add((i & self.mask) as usize) }
    }
}

/// An AF_XDP socket bound to one queue of one interface, with its own UMEM.
pub(crate) struct Xsk {
    // Field order matters for drop: rings are unmapped, then the socket closes, then the UMEM
    // goes.
    rx: Ring,
    tx: Ring,
    fill: Ring,
    comp: Ring,
    fd: OwnedFd,
    umem: Mmap,
    /// TX frame addresses not in flight.
    tx_free: Vec<u64>,
}

impl std::fmt::Debug for Xsk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Xsk").field("fd", &self.fd).field("tx_free", &self.tx_free.len()).finish()
    }
}

fn setsockopt<T>(fd: RawFd, opt: libc::c_int, v: &T) -> io::Result<()> {
    // SAFETY: `v` is a valid `T` for the duration of the call and its exact size is passed;
    // the kernel only reads it.
    check(unsafe {
        libc::setsockopt(
            fd,
            SOL_XDP,
            opt,
            (v as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    })
    .map(drop)
}

fn getsockopt<T: Default>(fd: RawFd, opt: libc::c_int) -> io::Result<T> {
    let mut v = T::default();
    let mut len = size_of::<T>() as libc::socklen_t;
    // SAFETY: `v` is writable for `len` bytes, which the kernel does not exceed.
    check(unsafe { libc::getsockopt(fd, SOL_XDP, opt, (&mut v as *mut T).cast(), &mut len) })?;
    Ok(v)
}

impl Xsk {
    /// Opens an AF_XDP socket on queue `queue` of interface `ifindex` in copy mode, with rings
    /// of `ring` entries (a power of two) and a UMEM of `2 * ring` frames.
    pub(crate) fn open(ifindex: u32, queue: u32, ring: u32) -> io::Result<Xsk> {
        if !ring.is_power_of_two() || ring < 64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "ring must be a power of two >= 64",
            ));
        }
        let umem = Mmap::anonymous(2 * ring as usize * FRAME as usize)?;
        // SAFETY: plain socket(2) call; on success we own the returned descriptor.
        let raw = check(unsafe { libc::socket(AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) })?;
        // SAFETY: `raw` was just returned by socket(2) and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let reg = XdpUmemReg {
            addr: umem.ptr as u64,
            len: umem.len as u64,
            chunk_size: FRAME,
            headroom: 0,
            flags: 0,
            tx_metadata_len: 0,
        };
        setsockopt(raw, XDP_UMEM_REG, &reg)?;
        let n = ring as libc::c_int;
        for opt in [XDP_UMEM_FILL_RING, XDP_UMEM_COMPLETION_RING, XDP_RX_RING, XDP_TX_RING] {
            setsockopt(raw, opt, &n)?;
        }
        let off: XdpMmapOffsets = getsockopt(raw, XDP_MMAP_OFFSETS)?;
        let d = size_of::<XdpDesc>();
        let rx = Ring::map(raw, &off.rx, ring, d, XDP_PGOFF_RX_RING)?;
        let tx = Ring::map(raw, &off.tx, ring, d, XDP_PGOFF_TX_RING)?;
        let fill = Ring::map(raw, &off.fr, ring, 8, XDP_UMEM_PGOFF_FILL_RING)?;
        let comp = Ring::map(raw, &off.cr, ring, 8, XDP_UMEM_PGOFF_COMPLETION_RING)?;
        // Every rx frame starts on the fill ring; the tx frames start free.
        for i in 0..ring {
            // SAFETY: slot `i` of the fill ring holds a u64; the kernel reads it only after
            // the producer index below publishes it.
            unsafe { fill.slot::<u64>(i).write(u64::from(i) * u64::from(FRAME)) };
        }
        fill.producer().store(ring, Ordering::Release);
        let tx_free = (ring..2 * ring).map(|i| u64::from(i) * u64::from(FRAME)).collect();
        let sa = SockaddrXdp {
            family: AF_XDP as u16,
            flags: XDP_COPY,
            ifindex,
            queue_id: queue,
            shared_umem_fd: 0,
        };
        // SAFETY: `sa` is a valid sockaddr_xdp for the duration of the call, its size passed.
        check(unsafe {
            libc::bind(
                raw,
                (&sa as *const SockaddrXdp).cast(),
                size_of::<SockaddrXdp>() as libc::socklen_t,
            )
        })?;
        Ok(Xsk { rx, tx, fill, comp, fd, umem, tx_free })
    }

    /// The socket (for the steering map and for poll).
    pub(crate) fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    fn frame(&self, addr: u64, len: usize) -> Option<&[u8]> {
        let end = (addr as usize).checked_add(len)?;
        if end > self.umem.len {
            return None;
        }
        // SAFETY: [addr, addr + len) lies inside the UMEM (checked above); the kernel has
        // handed this frame to us through the rx ring and does not write it until we give it
        // back on the fill ring.
        Some(unsafe { std::slice::from_raw_parts(self.umem.ptr.add(addr as usize), len) })
    }

    /// Copies up to `bufs.len()` received frames into `bufs` and gives their UMEM frames back
    /// to the kernel. Returns (frames filled, frames too large for a buffer and dropped).
    pub(crate) fn recv(&mut self, bufs: &mut [FrameBuf]) -> (usize, usize) {
        let cons = self.rx.consumer().load(Ordering::Relaxed);
        let avail = self.rx.producer().load(Ordering::Acquire).wrapping_sub(cons);
        let n = (avail as usize).min(bufs.len()) as u32;
        let fill_prod = self.fill.producer().load(Ordering::Relaxed);
        let (mut filled, mut oversize) = (0, 0);
        for i in 0..n {
            // SAFETY: slots cons..cons+n were published by the kernel (producer, acquired).
            let d = unsafe { self.rx.slot::<XdpDesc>(cons.wrapping_add(i)).read() };
            match self.frame(d.addr, d.len as usize) {
                Some(f) if f.len() <= bufs[filled].capacity() => {
                    bufs[filled].fill(f);
                    bufs[filled].meta = FrameMeta::default();
                    filled += 1;
                }
                _ => oversize += 1,
            }
            // The frame goes back to the fill ring (there is always room: the ring holds every
            // rx frame, and this one is not on it).
            // SAFETY: the fill slot at fill_prod + i is ours until the producer store below.
            unsafe {
                self.fill
                    .slot::<u64>(fill_prod.wrapping_add(i))
                    .write(d.addr & !u64::from(FRAME - 1))
            };
        }
        if n > 0 {
            self.rx.consumer().store(cons.wrapping_add(n), Ordering::Release);
            self.fill.producer().store(fill_prod.wrapping_add(n), Ordering::Release);
        }
        (filled, oversize)
    }

    fn reclaim(&mut self) {
        let cons = self.comp.consumer().load(Ordering::Relaxed);
        let prod = self.comp.producer().load(Ordering::Acquire);
        let mut i = cons;
        while i != prod {
            // SAFETY: slots cons..prod were published by the kernel (producer, acquired).
            self.tx_free.push(unsafe { self.comp.slot::<u64>(i).read() });
            i = i.wrapping_add(1);
        }
        self.comp.consumer().store(prod, Ordering::Release);
    }

    /// Copies `frames` into free tx frames, queues them and asks the kernel to send them.
    /// Returns how many were queued (the rest found no free frame and were dropped).
    pub(crate) fn send(&mut self, frames: &[FrameBuf]) -> io::Result<usize> {
        self.reclaim();
        let prod = self.tx.producer().load(Ordering::Relaxed);
        let mut n = 0u32;
        for f in frames {
            let len = f.len();
            if len > FRAME as usize {
                continue;
            }
            let Some(addr) = self.tx_free.pop() else { break };
            // SAFETY: `addr` is a free tx frame (not in the tx or completion ring, so the
            // kernel does not touch it) of FRAME bytes inside the UMEM, and len <= FRAME.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    f.as_slice().as_ptr(),
                    self.umem.ptr.add(addr as usize),
                    len,
                );
                self.tx.slot::<XdpDesc>(prod.wrapping_add(n)).write(XdpDesc {
                    addr,
                    len: len as u32,
                    options: 0,
                });
            }
            n += 1;
        }
        if n == 0 {
            return Ok(0);
        }
        self.tx.producer().store(prod.wrapping_add(n), Ordering::Release);
        self.kick()?;
        Ok(n as usize)
    }

    /// In copy mode the kernel transmits from the tx ring only inside `sendto`, at most 32
    /// frames per call (EAGAIN: more are queued, call again).
    fn kick(&self) -> io::Result<()> {
        for _ in 0..64 {
            // SAFETY: a zero-length sendto with no buffer or address; the kernel reads nothing
            // from user memory.
            let rc = unsafe {
                libc::sendto(
                    self.fd(),
                    std::ptr::null(),
                    0,
                    libc::MSG_DONTWAIT,
                    std::ptr::null(),
                    0,
                )
            };
            if rc >= 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EAGAIN) => continue,
                // The device queue is busy or out of buffers: what is left goes on the next kick.
                Some(libc::EBUSY) | Some(libc::ENOBUFS) => return Ok(()),
                _ => return Err(e),
            }
        }
        Ok(())
    }

    /// The kernel's drop counters for this socket.
    pub(crate) fn statistics(&self) -> XdpStatistics {
        getsockopt(self.fd(), XDP_STATISTICS).unwrap_or_default()
    }
}

/// The IPv4 addresses assigned to interface `name`.
pub(crate) fn if_ipv4_addrs(name: &str) -> io::Result<Vec<Ipv4Addr>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head we free below with freeifaddrs.
    check(unsafe { libc::getifaddrs(&mut head) })?;
    let mut out = Vec::new();
    let mut p = head;
    while !p.is_null() {
        // SAFETY: `p` is a node of the list getifaddrs returned, valid until freeifaddrs; its
        // name is a NUL-terminated string and its address, when not null, a sockaddr whose
        // family says its real type.
        unsafe {
            let ifa = &*p;
            let matches = std::ffi::CStr::from_ptr(ifa.ifa_name).to_bytes() == name.as_bytes();
            if matches
                && !ifa.ifa_addr.is_null()
                && i32::from((*ifa.ifa_addr).sa_family) == libc::AF_INET
            {
                let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                out.push(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)));
            }
            p = ifa.ifa_next;
        }
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}
