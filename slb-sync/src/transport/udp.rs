//! UDP sockets for the engine: multicast (IPv4 and IPv6) and a unicast peer list.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6, UdpSocket};

use socket2::{Domain, Protocol, Socket, Type};

use super::Transport;
use crate::engine::Destination;

/// Multicast transport parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MulticastConfig {
    /// Group (default 224.0.0.81, IPVS's). An IPv6 group (e.g. `ff02::81`) selects IPv6.
    pub group: IpAddr,
    /// Port (default 8848).
    pub port: u16,
    /// IPv4: the interface's address, used for `IP_MULTICAST_IF`, the group membership and as
    /// the source of datagrams (peers unicast NACK answers and snapshots to it). IPv6: the
    /// source address (optional). Default: unspecified (the kernel's choice; needs a multicast
    /// route).
    pub interface: Option<IpAddr>,
    /// IPv6 interface index for `IPV6_MULTICAST_IF` and the membership (0: default).
    pub ifindex: u32,
    /// TTL / hop limit (default 1: the local segment).
    pub ttl: u32,
    /// Deliver our own datagrams to local sockets too (default true: several nodes on one
    /// host; the engine drops its own datagrams by node id).
    pub loopback: bool,
    /// Socket receive buffer size to ask for (default 4 MiB).
    pub recv_buffer: usize,
}

impl Default for MulticastConfig {
    fn default() -> Self {
        MulticastConfig {
            group: IpAddr::V4(Ipv4Addr::new(224, 0, 0, 81)),
            port: 8848,
            interface: None,
            ifindex: 0,
            ttl: 1,
            loopback: true,
            recv_buffer: 4 << 20,
        }
    }
}

fn udp_socket(v6: bool, recv_buffer: usize) -> io::Result<Socket> {
    let domain = if v6 { Domain::IPV6 } else { Domain::IPV4 };
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    if v6 {
        s.set_only_v6(true)?;
    }
    // Best effort: the kernel caps it at net.core.rmem_max.
    let _ = s.set_recv_buffer_size(recv_buffer);
    let _ = s.set_send_buffer_size(recv_buffer);
    Ok(s)
}

fn scoped(addr: SocketAddr, ifindex: u32) -> SocketAddr {
    match addr {
        SocketAddr::V6(a) if a.ip().is_multicast() || a.ip().is_unicast_link_local() => {
            SocketAddr::V6(SocketAddrV6::new(*a.ip(), a.port(), 0, ifindex))
        }
        a => a,
    }
}

/// Two sockets: one bound to the group's port that receives group traffic, and one bound to
/// an ephemeral unicast port on the interface that sends everything and receives the unicast
/// answers peers address to it. Several nodes can therefore share one host and one address.
#[derive(Debug)]
pub struct MulticastTransport {
    group: SocketAddr,
    recv: UdpSocket,
    send: UdpSocket,
}

impl MulticastTransport {
    /// Opens and configures both sockets and joins the group.
    pub fn bind(cfg: &MulticastConfig) -> io::Result<Self> {
        let v6 = cfg.group.is_ipv6();
        if !cfg.group.is_multicast() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a multicast group"));
        }
        let recv = udp_socket(v6, cfg.recv_buffer)?;
        recv.set_reuse_address(true)?;
        recv.set_reuse_port(true)?;
        let send = udp_socket(v6, cfg.recv_buffer)?;
        match cfg.group {
            IpAddr::V4(g) => {
                let iface = match cfg.interface {
                    Some(IpAddr::V4(a)) => a,
                    None => Ipv4Addr::UNSPECIFIED,
                    Some(IpAddr::V6(_)) => {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidInput,
                            "IPv4 group, IPv6 interface",
                        ));
                    }
                };
                // Bound to the group: only its traffic arrives here (IP_MULTICAST_ALL aside).
                recv.bind(&SocketAddr::new(IpAddr::V4(g), cfg.port).into())?;
                recv.join_multicast_v4(&g, &iface)?;
                send.set_multicast_if_v4(&iface)?;
                send.set_multicast_ttl_v4(cfg.ttl)?;
                send.set_multicast_loop_v4(cfg.loopback)?;
                send.bind(&SocketAddr::new(IpAddr::V4(iface), 0).into())?;
            }
            IpAddr::V6(g) => {
                let src = match cfg.interface {
                    Some(IpAddr::V6(a)) => a,
                    None => Ipv6Addr::UNSPECIFIED,
                    Some(IpAddr::V4(_)) => {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidInput,
                            "IPv6 group, IPv4 interface",
                        ));
                    }
                };
                recv.bind(&scoped(SocketAddr::new(IpAddr::V6(g), cfg.port), cfg.ifindex).into())?;
                recv.join_multicast_v6(&g, cfg.ifindex)?;
                send.set_multicast_if_v6(cfg.ifindex)?;
                send.set_multicast_hops_v6(cfg.ttl)?;
                send.set_multicast_loop_v6(cfg.loopback)?;
                send.bind(&scoped(SocketAddr::new(IpAddr::V6(src), 0), cfg.ifindex).into())?;
            }
        }
        Ok(MulticastTransport {
            group: scoped(SocketAddr::new(cfg.group, cfg.port), cfg.ifindex),
            recv: recv.into(),
            send: send.into(),
        })
    }

    /// The unicast address peers see as this node's source.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.send.local_addr()
    }
}

impl Transport for MulticastTransport {
    fn send(&self, dest: &Destination, bytes: &[u8]) -> io::Result<()> {
        let to = match dest {
            Destination::Group => self.group,
            Destination::Peer(a) => *a,
        };
        self.send.send_to(bytes, to).map(|_| ())
    }

    fn receivers(&self) -> io::Result<Vec<UdpSocket>> {
        Ok(vec![self.recv.try_clone()?, self.send.try_clone()?])
    }
}

/// Unicast to a fixed peer list, for networks without multicast (clouds). "Group" datagrams go
/// to every peer; one socket sends and receives.
#[derive(Debug)]
pub struct UnicastTransport {
    sock: UdpSocket,
    peers: Vec<SocketAddr>,
}

impl UnicastTransport {
    /// Binds to `addr` (port 0: an ephemeral port, see [`UnicastTransport::local_addr`]).
    pub fn bind(addr: SocketAddr, peers: Vec<SocketAddr>) -> io::Result<Self> {
        let s = udp_socket(addr.is_ipv6(), 4 << 20)?;
        s.bind(&addr.into())?;
        Ok(UnicastTransport { sock: s.into(), peers })
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.sock.local_addr()
    }

    /// Replaces the peer list.
    pub fn set_peers(&mut self, peers: Vec<SocketAddr>) {
        self.peers = peers;
    }
}

impl Transport for UnicastTransport {
    fn send(&self, dest: &Destination, bytes: &[u8]) -> io::Result<()> {
        match dest {
            Destination::Peer(a) => self.sock.send_to(bytes, a).map(|_| ()),
            Destination::Group => {
                let mut first_err = None;
                for p in &self.peers {
                    if let Err(e) = self.sock.send_to(bytes, p) {
                        first_err.get_or_insert(e);
                    }
                }
                first_err.map_or(Ok(()), Err)
            }
        }
    }

    fn receivers(&self) -> io::Result<Vec<UdpSocket>> {
        Ok(vec![self.sock.try_clone()?])
    }
}
