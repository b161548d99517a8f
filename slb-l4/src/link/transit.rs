//! [`TransitFilter`]: keeps the kernel's IP stack out of the data path of the AF_PACKET links
//! (feature `io`).
//!
//! A packet socket gets a copy of every frame, and the kernel goes on to handle the frame
//! itself: for a frame the director forwards (to a VIP or from a real server, addressed to the
//! interface's MAC but not to one of its addresses) that is a route lookup and an error count
//! when forwarding is off, or a second, kernel-forwarded copy when it is on. A small TC
//! program on the interface's TCX ingress hook, which runs after the packet sockets took their
//! copies, drops those frames; ARP, IPv6, multicast, broadcast and frames for the interface's
//! own addresses (health probes, sync) pass as before.
//!
//! ```text
//!   wire -> packet sockets (AF_PACKET links: their copy) -> TCX ingress: transit IPv4? drop
//!                                                                         else -> IP stack
//! ```
//! The program is attached through a BPF link owned by this value: it goes away when the value
//! is dropped or the process dies. The XDP link does not need it (its frames never reach the
//! stack).

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;

use super::sys::bpf::{self, Map};
use super::sys::{self, xdp};

/// The transit-frame filter on one interface.
#[derive(Debug)]
pub struct TransitFilter {
    // Field order matters for drop: the link (attachment) goes first.
    _link: OwnedFd,
    _prog: OwnedFd,
    _hosts: Map,
}

impl TransitFilter {
    /// Attaches the filter to interface `ifname`; frames for `kernel_addrs` (default: the
    /// interface's own IPv4 addresses at this time) keep reaching the kernel. Needs root.
    pub fn attach(ifname: &str, kernel_addrs: Option<&[Ipv4Addr]>) -> io::Result<Self> {
        let ifindex = sys::if_index(ifname)? as u32;
        let own;
        let addrs = match kernel_addrs {
            Some(a) => a,
            None => {
                own = xdp::if_ipv4_addrs(ifname)?;
                &own[..]
            }
        };
        let hosts = super::xdp::hosts_map(addrs)?;
        let prog = bpf::load_tcx_ingress(
            &super::xdp_prog::transit_drop_program(hosts.fd()),
            "slb_transit",
        )?;
        let link = bpf::attach_tcx_ingress(&prog, ifindex)?;
        Ok(TransitFilter { _link: link, _prog: prog, _hosts: hosts })
    }
}
