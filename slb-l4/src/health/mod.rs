//! Health checking of real servers: a pure [`Monitor`] (one slb-core [`HealthTracker`] per real
//! server, deciding when to probe and when a server flips) and, with feature `io`, the probes
//! that do the I/O (`TcpConnectProbe`, `HttpProbe`) and a runner thread (`spawn_prober`).
//!
//! ```text
//!   Monitor::due(now) -> probes to run -> HealthProbe (tokio, I/O) -> Monitor::handle_result
//!        -> Some(HealthEvent) on a flip -> Forwarder::set_real_state (Up / Down)
//! ```
//! A server that goes down takes no new flows; what happens to its existing sessions is the
//! forwarder's `expire_nodest_conn` policy. A server is declared down after `fall` consecutive
//! failed probes, i.e. within about `fall x (fast_interval + timeout)` of dying.

#[cfg(feature = "io")]
mod probes;

#[cfg(feature = "io")]
pub use probes::{HttpProbe, TcpConnectProbe, spawn_prober};

use std::net::SocketAddr;

use slb_core::backend::{BackendId, BackendState};
use slb_core::health::{HealthConfig, HealthStatus, HealthTracker};
use slb_core::time::Instant;

/// A real server's health flipped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HealthEvent {
    /// The real server.
    pub id: BackendId,
    /// Its address (as probed).
    pub target: SocketAddr,
    /// The new status.
    pub status: HealthStatus,
}

impl HealthEvent {
    /// The backend state to give the forwarder.
    pub fn state(&self) -> BackendState {
        match self.status {
            HealthStatus::Up => BackendState::Up,
            HealthStatus::Down => BackendState::Down,
        }
    }
}

#[derive(Debug)]
struct Entry {
    id: BackendId,
    target: SocketAddr,
    tracker: HealthTracker,
    in_flight: bool,
}

/// Trackers for a set of real servers. Pure: time is an argument.
#[derive(Debug)]
pub struct Monitor {
    entries: Vec<Entry>,
}

impl Monitor {
    /// Trackers for `targets` (id, address to probe), first probes due from `now` (spread by
    /// the config's jitter, seeded by `seed`).
    pub fn new(
        config: HealthConfig,
        targets: &[(BackendId, SocketAddr)],
        now: Instant,
        seed: u64,
    ) -> Self {
        let entries = targets
            .iter()
            .enumerate()
            .map(|(i, &(id, target))| Entry {
                id,
                target,
                tracker: HealthTracker::new(config, now, seed.wrapping_add(i as u64)),
                in_flight: false,
            })
            .collect();
        Monitor { entries }
    }

    /// The status every server starts in (the config's `initial`), as events to apply before
    /// traffic flows.
    pub fn initial_events(&self) -> Vec<HealthEvent> {
        self.entries
            .iter()
            .map(|e| HealthEvent { id: e.id, target: e.target, status: e.tracker.status() })
            .collect()
    }

    /// Probes due at `now` that are not already running: (index, target). Marks them running.
    pub fn due(&mut self, now: Instant) -> Vec<(usize, SocketAddr)> {
        let mut out = Vec::new();
        for (i, e) in self.entries.iter_mut().enumerate() {
            if !e.in_flight && e.tracker.poll_timeout() <= now {
                e.in_flight = true;
                out.push((i, e.target));
            }
        }
        out
    }

    /// Feeds a probe result; returns the event when the server's status flipped.
    pub fn handle_result(
        &mut self,
        now: Instant,
        index: usize,
        healthy: bool,
    ) -> Option<HealthEvent> {
        let e = self.entries.get_mut(index)?;
        e.in_flight = false;
        let t = e.tracker.handle_result(now, healthy)?;
        Some(HealthEvent { id: e.id, target: e.target, status: t.to })
    }

    /// When the next probe is due (for probes not running).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.entries.iter().filter(|e| !e.in_flight).map(|e| e.tracker.poll_timeout()).min()
    }

    /// Current status of every server.
    pub fn statuses(&self) -> Vec<(BackendId, SocketAddr, HealthStatus)> {
        self.entries.iter().map(|e| (e.id, e.target, e.tracker.status())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_server_falls_after_fall_failures_and_rises_after_rise_successes() {
        let cfg = HealthConfig {
            interval: Duration::from_secs(1),
            fast_interval: Duration::from_millis(500),
            down_interval: Duration::from_secs(1),
            rise: 2,
            fall: 3,
            initial: HealthStatus::Up,
            ..HealthConfig::default()
        };
        let a: SocketAddr = "10.0.2.11:80".parse().unwrap();
        let b: SocketAddr = "10.0.2.12:80".parse().unwrap();
        let mut m = Monitor::new(cfg, &[(BackendId(0), a), (BackendId(1), b)], Instant::ZERO, 1);
        assert!(m.initial_events().iter().all(|e| e.status == HealthStatus::Up));
        let mut now = Instant::ZERO;
        let mut events = Vec::new();
        for _ in 0..12 {
            for (i, t) in m.due(now) {
                assert!(m.due(now).is_empty(), "a running probe is not handed out twice");
                if let Some(e) = m.handle_result(now, i, t != a) {
                    events.push((now, e));
                }
            }
            now = m.poll_timeout().unwrap();
        }
        assert_eq!(events.len(), 1, "{events:?}");
        let (at, e) = events[0];
        assert_eq!(
            (e.id, e.status, e.state()),
            (BackendId(0), HealthStatus::Down, BackendState::Down)
        );
        assert_eq!(at, Instant::from_secs(1), "failures at 0, 0.5 s and 1 s (fastinter)");
    }
}
