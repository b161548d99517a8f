//! AF_PACKET sockets: opening one that ignores its own transmissions, binding it to an
//! interface, and its drop counter.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::{check, setsockopt_int};

// Kernel ABI values (linux/if_packet.h, asm/socket.h), spelled out so that they do not depend
// on which libc version exports them.
pub(super) const PACKET_STATISTICS: libc::c_int = 6;
pub(super) const PACKET_AUXDATA: libc::c_int = 8;
pub(super) const PACKET_QDISC_BYPASS: libc::c_int = 20;
pub(super) const PACKET_IGNORE_OUTGOING: libc::c_int = 23;
pub(super) const TP_STATUS_CSUMNOTREADY: u32 = 1 << 3;
pub(super) const SO_RCVBUFFORCE: libc::c_int = 33;
pub(super) const SO_SNDBUFFORCE: libc::c_int = 32;

/// `struct tpacket_stats`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct TpacketStats {
    tp_packets: u32,
    tp_drops: u32,
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
