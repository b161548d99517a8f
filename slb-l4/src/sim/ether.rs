//! [`Ether`]: the one event loop of the L4 simulators. It holds the clock, the smoltcp hosts
//! and the frames in flight on the segments; everything else on the segments (a forwarder, or
//! directors and a router) is the caller's [`Devices`].
//!
//! Time moves from wakeup to wakeup, as quinn's test `Pair` and smoltcp's `poll_delay` do, never
//! by a fixed tick: a step goes to the earliest of the next frame's arrival, the devices'
//! [`Devices::poll_at`] and every host's `Interface::poll_at` (or now, for a host with frames
//! waiting), then at that instant:
//!
//! 1. delivers every frame due: to each host on the frame's segment whose MAC it is addressed
//!    to (every host for broadcast and multicast; never back to its sender), and to
//!    [`Devices::handle_frame`];
//! 2. calls [`Devices::handle_timeout`] (every wakeup, due or not: the devices settle what the
//!    frames did);
//! 3. polls the hosts that are due and hands each frame they send to
//!    [`Devices::handle_host_frame`].
//!
//! Every frame sent during the step arrives [`Ether::latency`] later (default 100 us a hop: a
//! host to a forwarder to a host takes 200 us). Nothing is random: the same inputs give the same
//! run.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use slb_core::time::Instant;

use super::SimHost;
use crate::fwd::Mac;

/// Who put a frame on a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Origin {
    /// The host with this index.
    Host(usize),
    /// A device, numbered by the [`Devices`] implementation.
    Device(usize),
}

/// What a device sees of the network while it runs: the time, the hosts, and a way to send.
#[derive(Debug)]
pub struct Context<'a> {
    now: Instant,
    hosts: &'a [SimHost],
    out: &'a mut Vec<(usize, Origin, Vec<u8>)>,
}

impl Context<'_> {
    /// The current simulated time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The hosts (index = [`Origin::Host`]).
    pub fn hosts(&self) -> &[SimHost] {
        self.hosts
    }

    /// Sends `frame` on segment `seg` (it arrives one [`Ether::latency`] from now).
    pub fn send(&mut self, seg: usize, from: Origin, frame: Vec<u8>) {
        self.out.push((seg, from, frame));
    }
}

/// Everything on the segments that is not a smoltcp host. See the module docs for call order.
pub trait Devices {
    /// A frame arrived on segment `seg`. Every frame on the segment comes here, including the
    /// devices' own (`from` tells): each device's ports pick what they take by its MAC.
    fn handle_frame(&mut self, cx: &mut Context<'_>, seg: usize, frame: &[u8], from: Origin);

    /// Called at every wakeup, after the frames due: run the timers due now and whatever the
    /// frames left to do.
    fn handle_timeout(&mut self, cx: &mut Context<'_>);

    /// When the devices next need [`Devices::handle_timeout`]; `None`: only frames wake them.
    fn poll_at(&self) -> Option<Instant>;

    /// Host `from` sent `frame`: by default it goes on the host's segment as it is. A device
    /// that stands between the hosts and the wire (a router, the hosts' view of an address)
    /// may rewrite, redirect or answer it.
    fn handle_host_frame(&mut self, cx: &mut Context<'_>, from: usize, frame: Vec<u8>) {
        cx.send(cx.hosts[from].segment, Origin::Host(from), frame);
    }
}

/// Counters of the event loop.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EtherStats {
    /// Wakeups processed.
    pub steps: u64,
    /// Frames put on segments.
    pub frames: u64,
    /// Times a host (or the devices) still wanted a poll at the instant it was just polled at,
    /// with nothing to receive (it is then polled a microsecond later, so that time moves on:
    /// a busy-loop bug in a participant shows here instead of hanging the simulation).
    pub stalls: u64,
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct InFlight {
    at: Instant,
    order: u64,
    seg: usize,
    from: Origin,
    frame: Vec<u8>,
}

/// Hosts, frames in flight and the clock. See the module docs.
#[derive(Debug)]
pub struct Ether {
    now: Instant,
    latency: Duration,
    hosts: Vec<SimHost>,
    /// Per host: the instant it was polled at and still wanted a poll with nothing to receive.
    stuck: Vec<Option<Instant>>,
    /// The instant the devices were run at and still wanted to be run at.
    devices_stuck: Option<Instant>,
    queue: BinaryHeap<Reverse<InFlight>>,
    order: u64,
    stats: EtherStats,
}

impl Default for Ether {
    fn default() -> Self {
        Ether::new(Duration::from_micros(100))
    }
}

impl Ether {
    /// An empty network at time zero whose frames take `latency` a hop.
    pub fn new(latency: Duration) -> Self {
        Ether {
            now: Instant::ZERO,
            latency,
            hosts: Vec::new(),
            stuck: Vec::new(),
            devices_stuck: None,
            queue: BinaryHeap::new(),
            order: 0,
            stats: EtherStats::default(),
        }
    }

    /// Simulated time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// How long a frame takes from its sender to the receivers on its segment.
    pub fn latency(&self) -> Duration {
        self.latency
    }

    /// Changes the latency for frames sent from now on.
    pub fn set_latency(&mut self, latency: Duration) {
        self.latency = latency;
    }

    /// Counters.
    pub fn stats(&self) -> EtherStats {
        self.stats
    }

    /// Adds a host; returns its index.
    pub fn add_host(&mut self, host: SimHost) -> usize {
        self.hosts.push(host);
        self.stuck.push(None);
        self.hosts.len() - 1
    }

    /// The host at `i`.
    pub fn host(&mut self, i: usize) -> &mut SimHost {
        &mut self.hosts[i]
    }

    /// Every host.
    pub fn hosts(&self) -> &[SimHost] {
        &self.hosts
    }

    /// When host `i` next wants a poll.
    fn host_wakeup(&mut self, i: usize) -> Instant {
        let now = self.now;
        let h = &mut self.hosts[i];
        if !h.device.rx.is_empty() {
            return now;
        }
        match h.poll_at(now) {
            Some(t) if t <= now && self.stuck[i] == Some(now) => now + Duration::from_micros(1),
            Some(t) => t.max(now),
            None => Instant::MAX,
        }
    }

    /// The next wakeup: the earliest of the next frame, the devices' and the hosts' (at least
    /// now); `Instant::MAX` when nothing is pending.
    pub fn next_wakeup(&mut self, devices: &impl Devices) -> Instant {
        let frame = self.queue.peek().map_or(Instant::MAX, |Reverse(f)| f.at);
        let dev = match devices.poll_at() {
            Some(t) if t <= self.now && self.devices_stuck == Some(self.now) => {
                self.now + Duration::from_micros(1)
            }
            Some(t) => t.max(self.now),
            None => Instant::MAX,
        };
        let hosts = (0..self.hosts.len()).map(|i| self.host_wakeup(i)).min();
        frame.min(dev).min(hosts.unwrap_or(Instant::MAX))
    }

    /// Moves to the next wakeup and runs it, if it comes before `end`; else sets the clock to
    /// `end` (if later) and returns false.
    pub fn step(&mut self, devices: &mut impl Devices, end: Instant) -> bool {
        let t = self.next_wakeup(devices);
        if t >= end {
            self.now = self.now.max(end);
            return false;
        }
        self.now = t;
        self.stats.steps += 1;
        let mut out = Vec::new();
        while self.queue.peek().is_some_and(|Reverse(f)| f.at <= t) {
            let Some(Reverse(f)) = self.queue.pop() else { break };
            self.deliver(&f);
            let mut cx = Context { now: t, hosts: &self.hosts, out: &mut out };
            devices.handle_frame(&mut cx, f.seg, &f.frame, f.from);
        }
        devices.handle_timeout(&mut Context { now: t, hosts: &self.hosts, out: &mut out });
        let stuck = devices.poll_at().is_some_and(|w| w <= t);
        self.devices_stuck = stuck.then_some(t);
        self.stats.stalls += u64::from(stuck);
        for i in 0..self.hosts.len() {
            if self.host_wakeup(i) > t {
                continue;
            }
            self.hosts[i].poll(t);
            let stuck = self.hosts[i].poll_at(t).is_some_and(|w| w <= t);
            self.stuck[i] = stuck.then_some(t);
            self.stats.stalls += u64::from(stuck);
            while let Some(f) = self.hosts[i].device.tx.pop_front() {
                let mut cx = Context { now: t, hosts: &self.hosts, out: &mut out };
                devices.handle_host_frame(&mut cx, i, f);
            }
        }
        for (seg, from, frame) in out {
            self.order += 1;
            self.stats.frames += 1;
            let at = t + self.latency;
            self.queue.push(Reverse(InFlight { at, order: self.order, seg, from, frame }));
        }
        true
    }

    /// Hands a frame arriving on its segment to the hosts it is addressed to.
    fn deliver(&mut self, f: &InFlight) {
        let (Some(dst), Some(src)) = (mac_at(&f.frame, 0), mac_at(&f.frame, 6)) else { return };
        let group = dst[0] & 1 == 1;
        for (i, h) in self.hosts.iter_mut().enumerate() {
            if h.segment == f.seg
                && f.from != Origin::Host(i)
                && (group || h.mac == dst)
                && h.mac != src
            {
                h.device.rx.push_back(f.frame.clone());
            }
        }
    }
}

/// The MAC at `at` of a frame, if the frame is long enough.
pub(crate) fn mac_at(frame: &[u8], at: usize) -> Option<Mac> {
    frame.get(at..at + 6).and_then(|m| m.try_into().ok())
}

#[cfg(test)]
mod tests {
    use smoltcp::wire::{IpAddress, IpEndpoint};

    use super::*;

    /// Nothing but the hosts.
    struct Wire;

    impl Devices for Wire {
        fn handle_frame(&mut self, _: &mut Context<'_>, _: usize, _: &[u8], _: Origin) {}
        fn handle_timeout(&mut self, _: &mut Context<'_>) {}
        fn poll_at(&self) -> Option<Instant> {
            None
        }
    }

    #[test]
    fn time_moves_from_wakeup_to_wakeup() {
        let mut e = Ether::default();
        let a = e.add_host(SimHost::new("a", [2, 0, 0, 0, 0, 1], 0, &["10.9.0.1/24"], None, 1));
        let b = e.add_host(SimHost::new("b", [2, 0, 0, 0, 0, 2], 0, &["10.9.0.2/24"], None, 2));
        let (sa, sb) = (e.host(a).udp_bind(1000), e.host(b).udp_bind(2000));
        let to = IpEndpoint::new(IpAddress::v4(10, 9, 0, 2), 2000);
        e.host(a).udp(sa).send_slice(b"ping", to).unwrap();
        let end = Instant::from_secs(10);
        // ARP request at 0, reply at 100 us, the datagram at 200 us, received at 300 us.
        let mut at = Vec::new();
        while !e.host(b).udp(sb).can_recv() && e.step(&mut Wire, end) {
            at.push(e.now());
        }
        assert_eq!(e.now(), Instant::from_nanos(300_000), "wakeups {at:?}");
        assert_eq!(at.len(), 4, "one step per hop: {at:?}");
        assert_eq!(e.stats().frames, 3);
        // Idle: the next step jumps to the end.
        assert!(!e.step(&mut Wire, end));
        assert_eq!(e.now(), end);
        assert_eq!(e.stats().stalls, 0);
    }
}
