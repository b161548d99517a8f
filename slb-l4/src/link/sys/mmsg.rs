//! Batched receive and send on a packet socket (`recvmmsg`/`sendmmsg`), with the checksum
//! status of each received frame from its `tpacket_auxdata`.

use std::io;
use std::os::fd::RawFd;

use super::check;
use super::packet::{PACKET_AUXDATA, TP_STATUS_CSUMNOTREADY};
use crate::frame::{CsumState, FrameBuf, FrameMeta};

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
