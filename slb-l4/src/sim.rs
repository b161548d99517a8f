//! Simulated hosts around a forwarder (feature `sim`): smoltcp interfaces with real TCP and UDP
//! sockets exchange frames through [`Forwarder::process`] on simulated Ethernet segments, in
//! simulated time. No root, no sockets, deterministic.
//!
//! ```text
//!   segment 0: clients ... ----- port 0 of the forwarder
//!   segment 1: servers ... ----- port 1 of the forwarder     (one segment for one-armed DR)
//! ```
//! Each [`SimNet::step`] polls every host, delivers every frame (a switch that knows every MAC;
//! broadcast and multicast go to all), runs the forwarder on frames addressed to it, and
//! advances the clock. Frames the forwarder emits are kept in [`SimNet::emitted`] for checks.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use slb_core::time::Instant;
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::socket::{tcp, udp};
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, IpEndpoint};

use crate::frame::FrameBuf;
use crate::fwd::{Forwarder, Mac, PortId, Verdict};

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

    fn poll(&mut self, now: Instant) {
        self.iface.poll(smol_time(now), &mut self.device, &mut self.sockets);
    }
}

/// A frame the forwarder emitted, with its verdict.
#[derive(Clone, Debug)]
pub struct Emitted {
    /// When.
    pub at: Instant,
    /// The verdict.
    pub verdict: Verdict,
    /// The frame as sent.
    pub frame: Vec<u8>,
}

/// Hosts, segments and a forwarder, in simulated time.
#[derive(Debug)]
pub struct SimNet {
    /// Simulated time.
    pub now: Instant,
    /// Time added per step.
    pub tick: Duration,
    /// The forwarder.
    pub fwd: Forwarder,
    /// The hosts.
    pub hosts: Vec<SimHost>,
    /// Which forwarder port sits on each segment (index = segment).
    pub ports: Vec<PortId>,
    /// Frames the forwarder emitted (kept while `record` is on).
    pub emitted: Vec<Emitted>,
    /// Keep emitted frames.
    pub record: bool,
    /// Frames received by the forwarder.
    pub to_fwd: u64,
    /// Frames given to the forwarder, with their port (kept while `record` is on).
    pub inputs: Vec<(PortId, Vec<u8>)>,
    /// Drop every n-th frame the forwarder emits (0: none), to exercise retransmission.
    pub drop_every: u64,
    emitted_count: u64,
}

impl SimNet {
    /// A network around `fwd`, with forwarder port `ports[i]` on segment `i`.
    pub fn new(fwd: Forwarder, ports: Vec<PortId>) -> Self {
        SimNet {
            now: Instant::ZERO,
            tick: Duration::from_micros(200),
            fwd,
            hosts: Vec::new(),
            ports,
            emitted: Vec::new(),
            record: true,
            to_fwd: 0,
            inputs: Vec::new(),
            drop_every: 0,
            emitted_count: 0,
        }
    }

    /// Adds a host; returns its index.
    pub fn add(&mut self, host: SimHost) -> usize {
        self.hosts.push(host);
        self.hosts.len() - 1
    }

    /// The host at `i`.
    pub fn host(&mut self, i: usize) -> &mut SimHost {
        &mut self.hosts[i]
    }

    fn deliver(&mut self, segment: usize, frame: Vec<u8>, from_fwd: bool) {
        let dst: Mac = frame[0..6].try_into().unwrap_or([0; 6]);
        let group = dst[0] & 1 == 1;
        for h in self.hosts.iter_mut().filter(|h| h.segment == segment) {
            if (group || h.mac == dst) && h.mac != frame[6..12] {
                h.device.rx.push_back(frame.clone());
            }
        }
        if from_fwd {
            return;
        }
        let Some(&port) = self.ports.get(segment) else { return };
        if !group && self.fwd.port_mac(port) != Some(dst) {
            return;
        }
        self.to_fwd += 1;
        if self.record {
            self.inputs.push((port, frame.clone()));
        }
        let mut buf = FrameBuf::from_slice(&frame);
        let v = self.fwd.process(self.now, &mut buf, port);
        if let Verdict::Forward(p) | Verdict::Reply(p) | Verdict::Solicit(p) = v {
            self.emit(v, p, buf.as_slice().to_vec());
        }
        while let Some(p) = self.fwd.poll_transmit(&mut buf) {
            self.emit(Verdict::Forward(p), p, buf.as_slice().to_vec());
        }
    }

    fn emit(&mut self, verdict: Verdict, out: PortId, frame: Vec<u8>) {
        self.emitted_count += 1;
        if self.record {
            self.emitted.push(Emitted { at: self.now, verdict, frame: frame.clone() });
        }
        if self.drop_every > 0 && self.emitted_count % self.drop_every == 0 {
            return;
        }
        if let Some(seg) = self.ports.iter().position(|&p| p == out) {
            self.deliver(seg, frame, true);
        }
    }

    /// Polls every host, delivers every frame, advances time by one tick.
    pub fn step(&mut self) {
        let now = self.now;
        for h in &mut self.hosts {
            h.poll(now);
        }
        let mut out = Vec::new();
        for h in &mut self.hosts {
            while let Some(f) = h.device.tx.pop_front() {
                out.push((h.segment, f));
            }
        }
        for (seg, f) in out {
            self.deliver(seg, f, false);
        }
        self.now += self.tick;
    }

    /// Steps until `cond` holds or `limit` of simulated time passes; true if it held.
    pub fn run_until(
        &mut self,
        limit: Duration,
        mut cond: impl FnMut(&mut SimNet) -> bool,
    ) -> bool {
        let end = self.now + limit;
        while self.now < end {
            if cond(self) {
                return true;
            }
            self.step();
        }
        cond(self)
    }
}
