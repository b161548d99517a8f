//! The raw AF_PACKET system calls the real links need (feature `io`), and in [`xdp`] the AF_XDP
//! and BPF ones. All `unsafe` of the links is here, each block with its SAFETY argument.
#![allow(unsafe_code)]

pub(crate) mod bpf;
pub(crate) mod xdp;

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::frame::{CsumState, FrameBuf, FrameMeta};

// Kernel ABI values (linux/if_packet.h, asm/socket.h), spelled out so that they do not depend
// on which libc version exports them.
const PACKET_STATISTICS: libc::c_int = 6;
const PACKET_AUXDATA: libc::c_int = 8;
const PACKET_QDISC_BYPASS: libc::c_int = 20;
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;
const TP_STATUS_CSUMNOTREADY: u32 = 1 << 3;
const SO_RCVBUFFORCE: libc::c_int = 33;
const SO_SNDBUFFORCE: libc::c_int = 32;

/// `struct tpacket_auxdata`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct TpacketAuxdata {
    tp_status: u32,
    tp_len: u32,
    tp_snaplen: u32,
    tp_mac: u16,
    tp_net: u16,
    tp_vlan_tci: u16,
    tp_vlan_tpid: u16,
}

/// `struct tpacket_stats`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct TpacketStats {
    tp_packets: u32,
    tp_drops: u32,
}

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(rc) }
}

fn setsockopt_int(
    fd: RawFd,
    level: libc::c_int,
    opt: libc::c_int,
    v: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `v` lives across the call and its size is passed; the kernel only reads it.
    check(unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            (&v as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// The index of interface `name`.
pub(crate) fn if_index(name: &str) -> io::Result<i32> {
    let c =
        CString::new(name).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "bad name"))?;
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 { Err(io::Error::last_os_error()) } else { Ok(i as i32) }
}

/// Options of a packet socket.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SocketOpts {
    /// Bind to the interface (pnet binds itself).
    pub(crate) bind: bool,
    /// Ask for `tpacket_auxdata` (checksum status) with each frame.
    pub(crate) auxdata: bool,
    /// Receive and send buffer sizes in bytes.
    pub(crate) buffer: usize,
    /// Send straight to the driver, skipping the qdisc layer (`PACKET_QDISC_BYPASS`).
    pub(crate) qdisc_bypass: bool,
}

/// Opens a non-blocking AF_PACKET socket for all protocols on interface `ifindex` that does not
/// see its own transmissions (`PACKET_IGNORE_OUTGOING`: otherwise the forwarder would receive
/// every frame it sends).
pub(crate) fn packet_socket(ifindex: i32, opts: SocketOpts) -> io::Result<OwnedFd> {
    let proto = (libc::ETH_P_ALL as u16).to_be() as libc::c_int;
    // SAFETY: plain socket(2) call; on success we own the returned descriptor.
    let fd = check(unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            proto,
        )
    })?;
    // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let raw = fd.as_raw_fd();
    setsockopt_int(raw, libc::SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)?;
    if opts.auxdata {
        setsockopt_int(raw, libc::SOL_PACKET, PACKET_AUXDATA, 1)?;
    }
    if opts.qdisc_bypass {
        setsockopt_int(raw, libc::SOL_PACKET, PACKET_QDISC_BYPASS, 1)?;
    }
    let size = opts.buffer.min(i32::MAX as usize) as libc::c_int;
    // FORCE variants exceed rmem_max/wmem_max as root; fall back to the capped ones.
    if setsockopt_int(raw, libc::SOL_SOCKET, SO_RCVBUFFORCE, size).is_err() {
        setsockopt_int(raw, libc::SOL_SOCKET, libc::SO_RCVBUF, size)?;
    }
    if setsockopt_int(raw, libc::SOL_SOCKET, SO_SNDBUFFORCE, size).is_err() {
        setsockopt_int(raw, libc::SOL_SOCKET, libc::SO_SNDBUF, size)?;
    }
    if opts.bind {
        bind_to(raw, ifindex)?;
    }
    Ok(fd)
}

/// Binds a packet socket to interface `ifindex` (all protocols).
pub(crate) fn bind_to(fd: RawFd, ifindex: i32) -> io::Result<()> {
    // SAFETY: an all-zero sockaddr_ll is a valid value of that plain C struct.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
    sll.sll_ifindex = ifindex;
    // SAFETY: `sll` is a valid sockaddr_ll and its exact size is passed.
    check(unsafe {
        libc::bind(
            fd,
            (&sll as *const libc::sockaddr_ll).cast(),
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// Frames the kernel dropped on this socket since the last call (PACKET_STATISTICS resets).
pub(crate) fn packet_drops(fd: RawFd) -> u64 {
    let mut st = TpacketStats::default();
    let mut len = size_of::<TpacketStats>() as libc::socklen_t;
    // SAFETY: `st` and `len` are valid for writes of the sizes given.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_PACKET,
            PACKET_STATISTICS,
            (&mut st as *mut TpacketStats).cast(),
            &mut len,
        )
    };
    if rc == 0 { u64::from(st.tp_drops) } else { 0 }
}

/// Waits until one of `fds` is readable or `timeout_ms` passes; returns how many are ready.
pub(crate) fn poll_readable(fds: &[RawFd], timeout_ms: i32) -> io::Result<usize> {
    let mut p: Vec<libc::pollfd> =
        fds.iter().map(|&fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 }).collect();
    // SAFETY: `p` is a valid array of `p.len()` pollfd structs for the duration of the call.
    let rc = unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, timeout_ms) };
    match check(rc) {
        Ok(n) => Ok(n as usize),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(0),
        Err(e) => Err(e),
    }
}

/// Space for one control message holding a `tpacket_auxdata`.
const CMSG_SPACE: usize = 64;

/// Preallocated `mmsghdr`/`iovec`/control arrays for batched receive and send (no allocation
/// per call).
pub(crate) struct Mmsg {
    hdrs: Vec<libc::mmsghdr>,
    iovs: Vec<libc::iovec>,
    ctrl: Vec<[u64; CMSG_SPACE / 8]>,
}

// SAFETY: the raw pointers inside are rebuilt on every call from buffers borrowed for that call
// only; between calls they are never dereferenced, so moving an Mmsg to another thread is sound.
unsafe impl Send for Mmsg {}

impl std::fmt::Debug for Mmsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mmsg").field("batch", &self.hdrs.len()).finish()
    }
}

impl Mmsg {
    pub(crate) fn new(batch: usize) -> Self {
        // SAFETY: all-zero mmsghdr and iovec are valid values of these plain C structs.
        let hdr: libc::mmsghdr = unsafe { std::mem::zeroed() };
        let iov = libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 };
        Mmsg {
            hdrs: vec![hdr; batch],
            iovs: vec![iov; batch],
            ctrl: vec![[0; CMSG_SPACE / 8]; batch],
        }
    }

    /// recvmmsg into `bufs` (non-blocking). Returns (frames filled, oversize frames skipped).
    /// Oversize frames (larger than a buffer, e.g. GSO super-frames) are detected with
    /// `MSG_TRUNC` and left out.
    pub(crate) fn recv(
        &mut self,
        fd: RawFd,
        bufs: &mut [FrameBuf],
        auxdata: bool,
    ) -> io::Result<(usize, usize)> {
        let n = bufs.len().min(self.hdrs.len());
        for (i, buf) in bufs.iter_mut().enumerate().take(n) {
            let area = buf.recv_area();
            self.iovs[i] = libc::iovec { iov_base: area.as_mut_ptr().cast(), iov_len: area.len() };
            let h = &mut self.hdrs[i].msg_hdr;
            h.msg_name = std::ptr::null_mut();
            h.msg_namelen = 0;
            h.msg_iov = &mut self.iovs[i];
            h.msg_iovlen = 1;
            h.msg_control =
                if auxdata { self.ctrl[i].as_mut_ptr().cast() } else { std::ptr::null_mut() };
            h.msg_controllen = if auxdata { CMSG_SPACE } else { 0 };
            h.msg_flags = 0;
            self.hdrs[i].msg_len = 0;
        }
        // SAFETY: hdrs[..n] point at iovecs and control buffers that stay alive and unaliased
        // for the call (they borrow `bufs` and `self`), each iovec covers a whole receive area.
        let rc = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                n as libc::c_uint,
                libc::MSG_DONTWAIT | libc::MSG_TRUNC,
                std::ptr::null_mut(),
            )
        };
        let got = match check(rc) {
            Ok(k) => k as usize,
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock
                    || e.kind() == io::ErrorKind::Interrupted =>
            {
                return Ok((0, 0));
            }
            Err(e) => return Err(e),
        };
        let (mut filled, mut oversize) = (0, 0);
        for i in 0..got {
            let len = self.hdrs[i].msg_len as usize;
            let truncated = self.hdrs[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            let csum = if auxdata { self.csum_state(i) } else { CsumState::Unknown };
            if truncated || len > bufs[i].capacity() {
                oversize += 1;
                continue;
            }
            bufs[i].set_received(len, FrameMeta { csum, ..FrameMeta::default() });
            if filled != i {
                bufs.swap(filled, i);
            }
            filled += 1;
        }
        Ok((filled, oversize))
    }

    /// The checksum state the kernel reported for message `i`.
    fn csum_state(&self, i: usize) -> CsumState {
        let h = &self.hdrs[i].msg_hdr;
        // SAFETY: the CMSG_* macros walk the control buffer the kernel filled for this message,
        // bounded by msg_controllen, which the kernel set to what it wrote.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(h);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_PACKET && (*c).cmsg_type == PACKET_AUXDATA {
                    let aux: TpacketAuxdata = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                    return if aux.tp_status & TP_STATUS_CSUMNOTREADY != 0 {
                        CsumState::Partial
                    } else {
                        CsumState::Complete
                    };
                }
                c = libc::CMSG_NXTHDR(h, c);
            }
        }
        CsumState::Unknown
    }

    /// sendmmsg of `frames` on the bound socket (non-blocking); returns how many were sent.
    pub(crate) fn send(&mut self, fd: RawFd, frames: &[FrameBuf]) -> io::Result<usize> {
        let mut sent = 0;
        while sent < frames.len() {
            let n = (frames.len() - sent).min(self.hdrs.len());
            for i in 0..n {
                let f = frames[sent + i].as_slice();
                self.iovs[i] =
                    libc::iovec { iov_base: f.as_ptr() as *mut libc::c_void, iov_len: f.len() };
                let h = &mut self.hdrs[i].msg_hdr;
                h.msg_name = std::ptr::null_mut();
                h.msg_namelen = 0;
                h.msg_iov = &mut self.iovs[i];
                h.msg_iovlen = 1;
                h.msg_control = std::ptr::null_mut();
                h.msg_controllen = 0;
                h.msg_flags = 0;
            }
            // SAFETY: hdrs[..n] point at iovecs covering frames that stay borrowed for the call;
            // the kernel only reads them.
            let rc = unsafe {
                libc::sendmmsg(fd, self.hdrs.as_mut_ptr(), n as libc::c_uint, libc::MSG_DONTWAIT)
            };
            match check(rc) {
                Ok(0) => break,
                Ok(k) => sent += k as usize,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // The socket's send buffer is full: wait briefly for room, once.
                    let mut p = libc::pollfd { fd, events: libc::POLLOUT, revents: 0 };
                    // SAFETY: one valid pollfd for the duration of the call.
                    if unsafe { libc::poll(&mut p, 1, 1) } <= 0 {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return if sent > 0 { Ok(sent) } else { Err(e) },
            }
        }
        Ok(sent)
    }
}

// ---------- TPACKET_V3 receive ring ----------

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

/// Advises transparent huge pages (`madvise(MADV_HUGEPAGE)`) for the whole 4 KiB pages inside
/// each region; returns the bytes advised. Regions the kernel refuses are skipped.
pub(crate) fn advise_huge_pages(regions: &[(*const u8, usize)]) -> usize {
    const PAGE: usize = 4096;
    let mut advised = 0;
    for &(start, len) in regions {
        let first = (start as usize).next_multiple_of(PAGE);
        let end = (start as usize + len) & !(PAGE - 1);
        if end <= first {
            continue;
        }
        // SAFETY: MADV_HUGEPAGE changes only the kernel's paging policy for the range, never the
        // contents or validity of memory, whatever the range (an unmapped one fails with
        // ENOMEM), so no Rust reference or allocation is affected.
        let rc =
            unsafe { libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_HUGEPAGE) };
        if rc == 0 {
            advised += end - first;
        }
    }
    advised
}

/// Sets the calling thread's timer slack (how late the kernel may wake a sleep, 50 µs by
/// default). Best effort.
pub(crate) fn set_timer_slack(d: std::time::Duration) {
    let ns = d.as_nanos().clamp(1, libc::c_ulong::MAX as u128) as libc::c_ulong;
    // SAFETY: prctl(PR_SET_TIMERSLACK) takes a plain integer and touches no user memory.
    unsafe {
        libc::prctl(
            libc::PR_SET_TIMERSLACK,
            ns,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
}

/// An epoll instance watching descriptors for readability: one descriptor that polls readable
/// when any of them does (a link with two sockets hands this to the driver's poll).
#[derive(Debug)]
pub(crate) struct Epoll(OwnedFd);

impl Epoll {
    /// Watches `fds` (negative entries are skipped).
    pub(crate) fn new(fds: &[RawFd]) -> io::Result<Self> {
        // SAFETY: plain epoll_create1(2) call; on success we own the returned descriptor.
        let ep = check(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: `ep` was just returned by epoll_create1 and is owned by nobody else.
        let ep = unsafe { OwnedFd::from_raw_fd(ep) };
        for &fd in fds.iter().filter(|&&fd| fd >= 0) {
            let mut ev = libc::epoll_event { events: libc::EPOLLIN as u32, u64: fd as u64 };
            // SAFETY: `ev` is a valid epoll_event for the duration of the call.
            check(unsafe { libc::epoll_ctl(ep.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) })?;
        }
        Ok(Epoll(ep))
    }
}

impl AsRawFd for Epoll {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_page_advice_rounds_to_whole_pages() {
        assert_eq!(advise_huge_pages(&[(std::ptr::null(), 0)]), 0);
        let v = vec![0u8; 8 << 20];
        assert_eq!(advise_huge_pages(&[(v.as_ptr().wrapping_add(1), 4096)]), 0, "no whole page");
        let n = advise_huge_pages(&[(v.as_ptr(), v.len())]);
        assert_eq!(n % 4096, 0);
        assert!(n <= v.len() && n + 4096 >= v.len() || n == 0, "{n}");
        if std::path::Path::new("/sys/kernel/mm/transparent_hugepage/enabled").exists() {
            assert!(n > 0, "THP is configured, yet the advice was refused");
        }
    }
}
