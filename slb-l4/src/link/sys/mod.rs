//! The raw system calls the real links need (feature `io`), one file per facility: AF_PACKET
//! sockets ([`packet`]), batched receive and send ([`mmsg`]), the TPACKET_V3 receive ring and
//! memory mappings ([`ring`]), huge pages and timer slack ([`tuning`]), readiness ([`epoll`]),
//! and the AF_XDP ([`xdp`]) and BPF ([`bpf`]) ones. All `unsafe` of the links is in this module,
//! each block with its SAFETY argument.
#![allow(unsafe_code)]

pub(crate) mod bpf;
pub(crate) mod epoll;
pub(crate) mod mmsg;
pub(crate) mod packet;
pub(crate) mod ring;
pub(crate) mod tuning;
pub(crate) mod xdp;

use std::io;
use std::os::fd::RawFd;

pub(crate) use epoll::{Epoll, poll_readable};
pub(crate) use mmsg::Mmsg;
pub(crate) use packet::{SocketOpts, bind_to, if_index, packet_drops, packet_socket};
pub(crate) use ring::{Mmap, RxRing};
pub(crate) use tuning::{advise_huge_pages, set_timer_slack};

pub(super) fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(rc) }
}

pub(super) fn setsockopt_int(
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
