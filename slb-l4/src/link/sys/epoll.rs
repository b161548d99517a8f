//! Readiness: waiting on several descriptors at once (`poll`), and an epoll instance that
//! stands for several of them.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::check;

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
