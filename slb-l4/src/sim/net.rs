//! [`SimNet`]: simulated hosts around one forwarder, on simulated Ethernet segments.
//!
//! ```text
//!   segment 0: clients ... ----- port 0 of the forwarder
//!   segment 1: servers ... ----- port 1 of the forwarder     (one segment for one-armed DR)
//! ```
//! Each [`SimNet::step`] polls every host, delivers every frame (a switch that knows every MAC;
//! broadcast and multicast go to all), runs the forwarder on frames addressed to it, and
//! advances the clock. Frames the forwarder emits are kept in [`SimNet::emitted`] for checks.

use std::time::Duration;

use slb_core::time::Instant;

use super::SimHost;
use crate::frame::FrameBuf;
use crate::fwd::{Forwarder, Mac, PortId, Verdict};

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
