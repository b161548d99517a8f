//! The few system calls the lab needs that std does not offer.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// SIGKILL.
pub const SIGKILL: i32 = libc::SIGKILL;
/// SIGTERM.
pub const SIGTERM: i32 = libc::SIGTERM;

pub(super) fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

pub(super) fn kill_group(pgid: u32, sig: i32) {
    let Ok(pgid) = i32::try_from(pgid) else { return };
    if pgid <= 1 {
        return;
    }
    // SAFETY: kill with a negative pid signals that process group; it touches no memory of ours.
    unsafe {
        libc::kill(-pgid, sig);
    }
}

/// Runs `f` on a new thread that has entered network namespace `name` (`/run/netns/<name>`), and
/// returns its result. Sockets `f` creates belong to that namespace and keep working after `f`
/// returns (e.g. when moved into a thread or runtime that `f` starts).
pub fn in_netns<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> io::Result<T> {
    let file = File::open(format!("/run/netns/{name}"))?;
    std::thread::spawn(move || {
        // SAFETY: setns on a valid namespace fd changes only this thread's network namespace;
        // the fd stays open for the duration of the call.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(f())
    })
    .join()
    .map_err(|_| io::Error::other("namespace thread panicked"))?
}
