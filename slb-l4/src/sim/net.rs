//! [`Net`]: the one simulated network of the L4 simulators, an [`Ether`] (the clock, the hosts,
//! the frames in flight) and the devices on it, stepped from wakeup to wakeup.
//!
//! A simulator is a `Net` of its devices: [`crate::sim::SimNet`] is `Net<SimForwarder>` (one
//! forwarder), [`crate::cluster::sim::ClusterNet`] is `Net<SimCluster>` (directors, a router, a
//! sync fabric). The devices' state is reached through the net (`net.fwd`, `net.fabric`): `Net`
//! dereferences to its devices, so tests read a simulator as one value.

use std::ops::{Deref, DerefMut};
use std::time::Duration;

use slb_core::time::Instant;

use super::{Devices, Ether, SimHost};

/// Hosts and devices on simulated Ethernet segments, in simulated time.
#[derive(Debug)]
pub struct Net<D> {
    ether: Ether,
    devices: D,
}

impl<D: Devices> Net<D> {
    /// A network at time zero with `devices` and no hosts (frames take 100 us a hop).
    pub fn with_devices(devices: D) -> Self {
        Net { ether: Ether::default(), devices }
    }

    /// The devices, the network dropped.
    pub fn into_devices(self) -> D {
        self.devices
    }

    /// Simulated time.
    pub fn now(&self) -> Instant {
        self.ether.now()
    }

    /// The ether: latency, counters, the hosts.
    pub fn ether(&mut self) -> &mut Ether {
        &mut self.ether
    }

    /// The host at `i`.
    pub fn host(&mut self, i: usize) -> &mut SimHost {
        self.ether.host(i)
    }

    /// Every host.
    pub fn hosts(&self) -> &[SimHost] {
        self.ether.hosts()
    }

    /// Runs the next wakeup (see [`Ether::step`]), unless nothing is due before `end`; false
    /// then (the clock is at `end`).
    pub fn step(&mut self, end: Instant) -> bool {
        self.ether.step(&mut self.devices, end)
    }

    /// Steps until `cond` holds (checked before every step) or `limit` of simulated time
    /// passes; true if it held.
    pub fn run_until(&mut self, limit: Duration, mut cond: impl FnMut(&mut Self) -> bool) -> bool {
        let end = self.now() + limit;
        loop {
            if cond(self) {
                return true;
            }
            if !self.step(end) {
                return cond(self);
            }
        }
    }
}

impl<D> Deref for Net<D> {
    type Target = D;

    fn deref(&self) -> &D {
        &self.devices
    }
}

impl<D> DerefMut for Net<D> {
    fn deref_mut(&mut self) -> &mut D {
        &mut self.devices
    }
}
