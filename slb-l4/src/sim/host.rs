//! A simulated host: a smoltcp [`Interface`] with its sockets on a [`QueueDevice`] (two frame
//! queues), on one segment of a simulated network. The network fills `device.rx` and drains
//! `device.tx`; tests drive the sockets.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};

use slb_core::time::Instant;
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::socket::{tcp, udp};
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, IpEndpoint};

use crate::fwd::Mac;

/// smoltcp's time from ours.
pub fn smol_time(now: Instant) -> smoltcp::time::Instant {
    smoltcp::time::Instant::from_micros((now.as_nanos() / 1000) as i64)
}

/// A smoltcp device backed by two queues.
#[derive(Debug, Default)]
pub struct QueueDevice {
    /// Frames waiting to be received by the interface.
    pub rx: VecDeque<Vec<u8>>,
    /// Frames the interface sent.
    pub tx: VecDeque<Vec<u8>>,
}

/// Receive token of [`QueueDevice`].
#[derive(Debug)]
pub struct SimRx(Vec<u8>);
/// Transmit token of [`QueueDevice`].
#[derive(Debug)]
pub struct SimTx<'a>(&'a mut VecDeque<Vec<u8>>);

impl phy::RxToken for SimRx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for SimTx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = vec![0u8; len];
        let r = f(&mut buf);
        self.0.push_back(buf);
        r
    }
}

impl Device for QueueDevice {
    type RxToken<'a> = SimRx;
    type TxToken<'a> = SimTx<'a>;

    fn receive(&mut self, _: smoltcp::time::Instant) -> Option<(SimRx, SimTx<'_>)> {
        let f = self.rx.pop_front()?;
        Some((SimRx(f), SimTx(&mut self.tx)))
    }

    fn transmit(&mut self, _: smoltcp::time::Instant) -> Option<SimTx<'_>> {
        Some(SimTx(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ethernet;
        c.max_transmission_unit = 1514;
        c
    }
}

/// A simulated host: a smoltcp interface, its sockets, and the segment it sits on.
pub struct SimHost {
    /// Name for messages.
    pub name: String,
    /// MAC address.
    pub mac: Mac,
    /// Segment index.
    pub segment: usize,
    /// The interface.
    pub iface: Interface,
    /// Its device.
    pub device: QueueDevice,
    /// Its sockets.
    pub sockets: SocketSet<'static>,
}

impl std::fmt::Debug for SimHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimHost").field("name", &self.name).field("segment", &self.segment).finish()
    }
}

/// Size of each simulated socket buffer.
pub const SOCKET_BUFFER: usize = 64 * 1024;

impl SimHost {
    /// A host with `addrs` (CIDR strings), an optional default gateway, on `segment`.
    pub fn new(
        name: &str,
        mac: Mac,
        segment: usize,
        addrs: &[&str],
        gateway: Option<IpAddr>,
        seed: u64,
    ) -> Self {
        let mut device = QueueDevice::default();
        let mut cfg = Config::new(HardwareAddress::Ethernet(EthernetAddress(mac)));
        cfg.random_seed = seed;
        let mut iface = Interface::new(cfg, &mut device, smoltcp::time::Instant::ZERO);
        iface.update_ip_addrs(|a| {
            for s in addrs {
                let c: crate::fwd::Cidr = s.parse().unwrap_or_else(|e| panic!("bad address {e}"));
                let _ = a.push(IpCidr::new(IpAddress::from(c.addr), c.prefix));
            }
        });
        match gateway {
            Some(IpAddr::V4(g)) => {
                let _ = iface.routes_mut().add_default_ipv4_route(g);
            }
            Some(IpAddr::V6(g)) => {
                let _ = iface.routes_mut().add_default_ipv6_route(g);
            }
            None => {}
        }
        SimHost { name: name.into(), mac, segment, iface, device, sockets: SocketSet::new(vec![]) }
    }

    fn tcp_socket() -> tcp::Socket<'static> {
        tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; SOCKET_BUFFER]),
            tcp::SocketBuffer::new(vec![0; SOCKET_BUFFER]),
        )
    }

    /// A TCP socket listening on `port`.
    pub fn tcp_listen(&mut self, port: u16) -> SocketHandle {
        let mut s = Self::tcp_socket();
        s.listen(port).unwrap_or_else(|e| panic!("listen: {e}"));
        self.sockets.add(s)
    }

    /// A TCP socket connecting from `local_port` to `remote`.
    pub fn tcp_connect(&mut self, remote: SocketAddr, local_port: u16) -> SocketHandle {
        let mut s = Self::tcp_socket();
        let ep = IpEndpoint::new(IpAddress::from(remote.ip()), remote.port());
        s.connect(self.iface.context(), ep, local_port).unwrap_or_else(|e| panic!("connect: {e}"));
        self.sockets.add(s)
    }

    /// A UDP socket bound to `port`.
    pub fn udp_bind(&mut self, port: u16) -> SocketHandle {
        let meta = || vec![udp::PacketMetadata::EMPTY; 64];
        let mut s = udp::Socket::new(
            udp::PacketBuffer::new(meta(), vec![0; SOCKET_BUFFER]),
            udp::PacketBuffer::new(meta(), vec![0; SOCKET_BUFFER]),
        );
        s.bind(port).unwrap_or_else(|e| panic!("bind: {e}"));
        self.sockets.add(s)
    }

    /// The TCP socket `h`.
    pub fn tcp(&mut self, h: SocketHandle) -> &mut tcp::Socket<'static> {
        self.sockets.get_mut::<tcp::Socket<'static>>(h)
    }

    /// The UDP socket `h`.
    pub fn udp(&mut self, h: SocketHandle) -> &mut udp::Socket<'static> {
        self.sockets.get_mut::<udp::Socket<'static>>(h)
    }

    /// Runs the interface at `now`: takes every received frame, sends what the sockets have.
    pub fn poll(&mut self, now: Instant) {
        self.iface.poll(smol_time(now), &mut self.device, &mut self.sockets);
    }

    /// When the interface next wants [`SimHost::poll`] (smoltcp's `poll_at`, at least "now"
    /// when a socket has something to send); `None`: only a received frame wakes it.
    pub fn poll_at(&mut self, now: Instant) -> Option<Instant> {
        let t = self.iface.poll_at(smol_time(now), &self.sockets)?;
        Some(Instant::from_nanos(u64::try_from(t.total_micros()).unwrap_or(0).saturating_mul(1000)))
    }

    /// True when `ip` is one of the host's addresses.
    pub fn has_addr(&self, ip: IpAddr) -> bool {
        let a = IpAddress::from(ip);
        self.iface.ip_addrs().iter().any(|c| c.address() == a)
    }

    /// True when `ip` is inside one of the host's prefixes (reached without a gateway).
    pub fn on_link(&self, ip: IpAddr) -> bool {
        let a = IpAddress::from(ip);
        self.iface.ip_addrs().iter().any(|c| c.contains_addr(&a))
    }
}
