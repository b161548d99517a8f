//! [`SimNet`]: simulated hosts around one forwarder, on simulated Ethernet segments.
//!
//! ```text
//!   segment 0: clients ... ----- port 0 of the forwarder
//!   segment 1: servers ... ----- port 1 of the forwarder     (one segment for one-armed DR)
//! ```
//! The segments are a [`Net`]'s ether (a switch that knows every MAC; broadcast and multicast
//! go to all); its one device, [`SimForwarder`], runs [`Forwarder::process`] on every frame
//! addressed to its port on a segment and sends what it emits on the segment of the port the
//! verdict names. Frames the forwarder emits are kept in [`SimForwarder::emitted`] for checks.

use slb_core::time::Instant;

use super::{Context, Devices, Net, Origin, SimHost, mac_at};
use crate::frame::FrameBuf;
use crate::fwd::{Forwarder, PortId, Verdict};

/// The forwarder's number as a device ([`Origin::Device`]).
const FORWARDER: usize = 0;

/// Hosts, segments and a forwarder, in simulated time.
pub type SimNet = Net<SimForwarder>;

impl SimNet {
    /// A network around `fwd`, with forwarder port `ports[i]` on segment `i`.
    pub fn new(fwd: Forwarder, ports: Vec<PortId>) -> Self {
        Net::with_devices(SimForwarder {
            fwd,
            ports,
            emitted: Vec::new(),
            record: true,
            to_fwd: 0,
            inputs: Vec::new(),
            drop_every: 0,
            emitted_count: 0,
        })
    }

    /// Adds a host; returns its index.
    pub fn add(&mut self, host: SimHost) -> usize {
        self.ether().add_host(host)
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

/// The forwarder of a [`SimNet`], with a port on each segment, and what it saw and sent.
#[derive(Debug)]
pub struct SimForwarder {
    /// The forwarder.
    pub fwd: Forwarder,
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

impl SimForwarder {
    fn emit(&mut self, cx: &mut Context<'_>, verdict: Verdict, port: PortId, f: Vec<u8>) {
        self.emitted_count += 1;
        if self.record {
            self.emitted.push(Emitted { at: cx.now(), verdict, frame: f.clone() });
        }
        if self.drop_every > 0 && self.emitted_count % self.drop_every == 0 {
            return;
        }
        if let Some(seg) = self.ports.iter().position(|&p| p == port) {
            cx.send(seg, Origin::Device(FORWARDER), f);
        }
    }
}

impl Devices for SimForwarder {
    fn handle_frame(&mut self, cx: &mut Context<'_>, seg: usize, frame: &[u8], from: Origin) {
        let (Some(&port), Some(dst)) = (self.ports.get(seg), mac_at(frame, 0)) else { return };
        let group = dst[0] & 1 == 1;
        if from == Origin::Device(FORWARDER) || (!group && self.fwd.port_mac(port) != Some(dst)) {
            return;
        }
        self.to_fwd += 1;
        if self.record {
            self.inputs.push((port, frame.to_vec()));
        }
        for (v, p, f) in forward(&mut self.fwd, cx.now(), port, frame) {
            self.emit(cx, v, p, f);
        }
    }

    fn handle_timeout(&mut self, _cx: &mut Context<'_>) {}

    fn poll_at(&self) -> Option<Instant> {
        None
    }
}

/// What `fwd` sends when `frame` arrives on `port` at `now`: the frame itself if the verdict
/// sends it, then the frames it released ([`Forwarder::poll_transmit`], verdict `Forward`).
pub(crate) fn forward(
    fwd: &mut Forwarder,
    now: Instant,
    port: PortId,
    frame: &[u8],
) -> Vec<(Verdict, PortId, Vec<u8>)> {
    let mut sent = Vec::new();
    let mut buf = FrameBuf::from_slice(frame);
    let v = fwd.process(now, &mut buf, port);
    if let Verdict::Forward(p) | Verdict::Reply(p) | Verdict::Solicit(p) = v {
        sent.push((v, p, buf.as_slice().to_vec()));
    }
    while let Some(p) = fwd.poll_transmit(&mut buf) {
        sent.push((Verdict::Forward(p), p, buf.as_slice().to_vec()));
    }
    sent
}
