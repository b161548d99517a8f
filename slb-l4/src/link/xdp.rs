//! [`XdpLink`]: an AF_XDP link (feature `io`). A small XDP program steers the data path's
//! frames (IPv4, not multicast, not for one of the host's own addresses) into an AF_XDP
//! socket before the kernel builds a socket buffer for them: they never reach the IP stack and
//! no packet socket copies them. Everything else (ARP, IPv6, multicast, the host's own
//! traffic such as health probes and sync) passes to the kernel as usual and reaches the
//! forwarder through a TPACKET_V3 packet socket beside it, so the link still sees every frame
//! on the interface, like the AF_PACKET links. Frames go out through the AF_XDP transmit ring
//! (one `sendto` per 32 frames, no qdisc).
//!
//! ```text
//!   wire -> XDP program -> AF_XDP rx ring ------------------+
//!                     \-> kernel (ARP, v6, own addrs) -> TPACKET_V3 ring -+-> recv_batch
//!   send_batch -> AF_XDP tx ring -> sendto -> driver
//! ```
//! Copy mode (one copy each way, which the veth and most virtual drivers need); one receive
//! queue (queue 0 by default: a multi-queue device's other queues fall back to the packet
//! socket). The program is attached through a BPF link owned by this value: it is detached
//! when the link is dropped or the process dies.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use super::sys::bpf::{self, MAP_HASH, MAP_XSK, Map};
use super::sys::xdp::{self, Xsk};
use super::sys::{self, Epoll};
use super::{AfPacketLink, FlowOffload, Link, LinkStats};
use crate::frame::FrameBuf;

/// Settings of an [`XdpLink`].
#[derive(Clone, Debug)]
pub struct XdpConfig {
    /// The receive queue to attach to.
    pub queue: u32,
    /// Entries per AF_XDP ring (a power of two, >= 64); the UMEM holds twice as many frames.
    pub ring: u32,
    /// IPv4 addresses whose frames stay with the kernel. `None`: the interface's own
    /// addresses at open time (the forwarder's VIPs and local addresses must not be assigned
    /// to it, as with the other links).
    pub kernel_addrs: Option<Vec<Ipv4Addr>>,
    /// Bytes of the side packet socket's TPACKET_V3 ring (the slow path).
    pub slow_ring_bytes: usize,
    /// Run the program in the kernel's generic XDP hook (after the socket buffer is built)
    /// even where the driver has a native one.
    pub generic: bool,
    /// A flow cache the program forwards established flows from, without user space (give
    /// the same one to every link of the director and to
    /// [`Director::with_offload`](crate::driver::Director::with_offload)). The program
    /// redirects to the egress interface itself: with veth peers that have no XDP program,
    /// that works only in `generic` mode.
    pub offload: Option<FlowOffload>,
}

impl Default for XdpConfig {
    fn default() -> Self {
        XdpConfig {
            queue: 0,
            ring: 2048,
            kernel_addrs: None,
            slow_ring_bytes: 1 << 20,
            generic: false,
            offload: None,
        }
    }
}

/// The program attached to an interface, with its maps. Dropping it detaches the program (the
/// BPF link closes).
#[derive(Debug)]
struct Steering {
    // Field order matters for drop: the link (attachment) goes first.
    _link: OwnedFd,
    _prog: OwnedFd,
    _hosts: Map,
    _xsks: Map,
    _flows: Option<FlowOffload>,
}

impl Steering {
    /// Loads the program for `xsk` on queue `queue` of `ifindex` (frames for `kernel_addrs`
    /// stay with the kernel) and attaches it.
    fn attach(
        ifindex: u32,
        queue: u32,
        xsk: &Xsk,
        kernel_addrs: &[Ipv4Addr],
        cfg: &XdpConfig,
    ) -> io::Result<Self> {
        let hosts = hosts_map(kernel_addrs)?;
        let xsks = Map::create(MAP_XSK, 4, 4, queue + 1)?;
        xsks.update(&queue.to_ne_bytes(), &(xsk.fd() as u32).to_ne_bytes())?;
        let flows = cfg.offload.as_ref().map(|f| f.fd());
        let insns = super::xdp_prog::program(hosts.fd(), xsks.fd(), flows);
        let prog = bpf::load_xdp(&insns, "slb_xdp")?;
        let link = bpf::attach_xdp(&prog, ifindex, cfg.generic)?;
        Ok(Steering {
            _link: link,
            _prog: prog,
            _hosts: hosts,
            _xsks: xsks,
            _flows: cfg.offload.clone(),
        })
    }
}

/// The map of IPv4 addresses whose frames the programs leave to the kernel.
pub(super) fn hosts_map(addrs: &[Ipv4Addr]) -> io::Result<Map> {
    let hosts = Map::create(MAP_HASH, 4, 4, (addrs.len() as u32).max(1))?;
    for a in addrs {
        // The programs read the address straight from the frame: network order.
        hosts.update(&a.octets(), &1u32.to_ne_bytes())?;
    }
    Ok(hosts)
}

/// An AF_XDP socket plus a side packet socket for what the steering program leaves to the
/// kernel.
#[derive(Debug)]
pub struct XdpLink {
    // Field order matters for drop: the program is detached before the socket closes.
    _steering: Steering,
    xsk: Xsk,
    slow: AfPacketLink,
    epoll: Epoll,
    ifindex: u32,
    /// Receive calls since the slow path was last read.
    since_slow: u32,
    stats: LinkStats,
}

/// The slow path is read at least every this many receive calls while the fast path is busy.
const SLOW_EVERY: u32 = 16;

impl XdpLink {
    /// Opens interface `ifname`: attaches the steering program, binds the AF_XDP socket and
    /// opens the side packet socket. Needs root (CAP_NET_ADMIN, CAP_BPF).
    pub fn open(ifname: &str, cfg: &XdpConfig) -> io::Result<Self> {
        let ifindex = sys::if_index(ifname)? as u32;
        let kernel_addrs = match &cfg.kernel_addrs {
            Some(a) => a.clone(),
            None => xdp::if_ipv4_addrs(ifname)?,
        };
        // The side socket first, so that nothing the program passes is missed.
        let slow = AfPacketLink::open_ring(ifname, 64, 1 << 20, cfg.slow_ring_bytes)?;
        let xsk = Xsk::open(ifindex, cfg.queue, cfg.ring)?;
        let steering = Steering::attach(ifindex, cfg.queue, &xsk, &kernel_addrs, cfg)?;
        let epoll = Epoll::new(&[xsk.fd(), slow.poll_fd().unwrap_or(-1)])?;
        Ok(XdpLink {
            _steering: steering,
            xsk,
            slow,
            epoll,
            ifindex,
            since_slow: 0,
            stats: LinkStats::default(),
        })
    }
}

impl Link for XdpLink {
    fn recv_batch(&mut self, bufs: &mut [FrameBuf]) -> io::Result<usize> {
        let (mut n, oversize) = self.xsk.recv(bufs);
        self.stats.rx_oversize += oversize as u64;
        self.stats.rx_fast += n as u64;
        self.since_slow += 1;
        if n < bufs.len() || self.since_slow >= SLOW_EVERY {
            self.since_slow = 0;
            n += self.slow.recv_batch(&mut bufs[n..])?;
        }
        self.stats.count_rx(bufs, n);
        Ok(n)
    }

    fn send_batch(&mut self, frames: &[FrameBuf]) -> io::Result<usize> {
        let sent = self.xsk.send(frames)?;
        self.stats.count_tx(frames, sent);
        Ok(sent)
    }

    fn stats(&self) -> LinkStats {
        let mut s = self.stats;
        let x = self.xsk.statistics();
        let slow = self.slow.stats();
        s.rx_dropped = x.rx_dropped + x.rx_ring_full + x.rx_fill_ring_empty_descs + slow.rx_dropped;
        s.rx_oversize += slow.rx_oversize;
        s
    }

    fn poll_fd(&self) -> Option<RawFd> {
        Some(self.epoll.as_raw_fd())
    }

    fn ifindex(&self) -> Option<u32> {
        Some(self.ifindex)
    }
}
