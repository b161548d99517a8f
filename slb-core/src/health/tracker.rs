//! The pure health state machine of one backend.

use std::time::Duration;

use crate::rng::{GAMMA, SplitMix64};
use crate::time::Instant;

/// Health check parameters. Defaults are Tengine's `check` directive: interval 30 s, rise 2,
/// fall 5, timeout 1 s, backends start down.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HealthConfig {
    /// Probe interval while the backend is up and stable.
    pub interval: Duration,
    /// Probe interval while the status is changing (some results already point the other way),
    /// HAProxy `fastinter`. Defaults to `interval`.
    pub fast_interval: Duration,
    /// Probe interval while the backend is down, HAProxy `downinter`. Defaults to `interval`.
    pub down_interval: Duration,
    /// How long a probe may take; enforced by the probe implementation.
    pub timeout: Duration,
    /// Consecutive successes that bring a down backend up.
    pub rise: u32,
    /// Consecutive failures that take an up backend down.
    pub fall: u32,
    /// Status before the first transition (Tengine `default_down`: start down).
    pub initial: HealthStatus,
    /// Random spread of each interval, as a fraction (0.0 to 0.5), so that probes of many
    /// backends do not fire in lockstep. Seeded per tracker.
    pub jitter: f64,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            interval: Duration::from_secs(30),
            fast_interval: Duration::from_secs(30),
            down_interval: Duration::from_secs(30),
            timeout: Duration::from_secs(1),
            rise: 2,
            fall: 5,
            initial: HealthStatus::Down,
            jitter: 0.0,
        }
    }
}

impl HealthConfig {
    /// HAProxy's defaults: inter 2 s, rise 2, fall 3, start up.
    pub fn haproxy() -> Self {
        HealthConfig {
            interval: Duration::from_secs(2),
            fast_interval: Duration::from_secs(2),
            down_interval: Duration::from_secs(2),
            timeout: Duration::from_secs(2),
            rise: 2,
            fall: 3,
            initial: HealthStatus::Up,
            jitter: 0.0,
        }
    }
}

/// Up or down, as far as health checking knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HealthStatus {
    /// Passing.
    Up,
    /// Failing (or not yet proven healthy).
    Down,
}

/// A status flip reported by [`HealthTracker::handle_result`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    /// The status before.
    pub from: HealthStatus,
    /// The status now.
    pub to: HealthStatus,
}

/// Rise/fall thresholds and probe scheduling for one backend. Pure: call
/// [`HealthTracker::poll_timeout`] to learn when to probe, probe, then feed the result to
/// [`HealthTracker::handle_result`].
#[derive(Clone, Debug)]
pub struct HealthTracker {
    config: HealthConfig,
    status: HealthStatus,
    /// Consecutive results pointing away from `status`.
    streak: u32,
    next: Instant,
    rng: SplitMix64,
    checks: u64,
    failures: u64,
    last_failure: Option<Instant>,
}

impl HealthTracker {
    /// A tracker in `config.initial` status whose first probe is due at `now` (plus jitter, so
    /// that a pool's first probes spread out). `seed` drives the jitter.
    pub fn new(config: HealthConfig, now: Instant, seed: u64) -> Self {
        let mut t = HealthTracker {
            config,
            status: config.initial,
            streak: 0,
            next: now,
            rng: SplitMix64::new(seed ^ GAMMA),
            checks: 0,
            failures: 0,
            last_failure: None,
        };
        t.next = now + t.jittered(Duration::ZERO.max(config.interval.mul_f64(config.jitter)));
        t
    }

    /// The configuration.
    pub fn config(&self) -> &HealthConfig {
        &self.config
    }

    /// Current status.
    pub fn status(&self) -> HealthStatus {
        self.status
    }

    /// Consecutive results pointing away from the current status.
    pub fn streak(&self) -> u32 {
        self.streak
    }

    /// Probes done and failed so far, and when the last failure was.
    pub fn counters(&self) -> (u64, u64, Option<Instant>) {
        (self.checks, self.failures, self.last_failure)
    }

    /// When the next probe is due.
    pub fn poll_timeout(&self) -> Instant {
        self.next
    }

    /// Records a probe result at `now`; returns the transition if the status flipped, and
    /// schedules the next probe.
    pub fn handle_result(&mut self, now: Instant, healthy: bool) -> Option<Transition> {
        self.checks += 1;
        if !healthy {
            self.failures += 1;
            self.last_failure = Some(now);
        }
        let towards_other = match self.status {
            HealthStatus::Up => !healthy,
            HealthStatus::Down => healthy,
        };
        self.streak = if towards_other { self.streak + 1 } else { 0 };
        let threshold = match self.status {
            HealthStatus::Up => self.config.fall,
            HealthStatus::Down => self.config.rise,
        };
        let mut flipped = None;
        if self.streak >= threshold.max(1) {
            let from = self.status;
            self.status = match from {
                HealthStatus::Up => HealthStatus::Down,
                HealthStatus::Down => HealthStatus::Up,
            };
            self.streak = 0;
            flipped = Some(Transition { from, to: self.status });
        }
        let base = if self.streak > 0 {
            self.config.fast_interval
        } else if self.status == HealthStatus::Down {
            self.config.down_interval
        } else {
            self.config.interval
        };
        self.next = now + self.jittered(base);
        flipped
    }

    /// Forces a status (an operator's override or a passive ejection), resetting the streak.
    pub fn force(&mut self, status: HealthStatus) {
        self.status = status;
        self.streak = 0;
    }

    /// `base` spread by ±jitter, from the tracker's seeded generator.
    fn jittered(&mut self, base: Duration) -> Duration {
        let j = self.config.jitter.clamp(0.0, 0.5);
        if j == 0.0 {
            return base;
        }
        base.mul_f64(1.0 - j + 2.0 * j * self.rng.next_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> HealthConfig {
        HealthConfig {
            interval: Duration::from_secs(10),
            fast_interval: Duration::from_secs(2),
            down_interval: Duration::from_secs(5),
            ..HealthConfig::default()
        }
    }

    #[test]
    fn starts_down_rises_after_two_and_falls_after_five() {
        let mut t = HealthTracker::new(cfg(), Instant::ZERO, 1);
        assert_eq!(t.status(), HealthStatus::Down);
        assert_eq!(t.poll_timeout(), Instant::ZERO);
        assert_eq!(t.handle_result(Instant::ZERO, true), None);
        assert_eq!(t.poll_timeout(), Instant::from_secs(2), "fastinter while rising");
        let up = t.handle_result(Instant::from_secs(2), true);
        assert_eq!(up, Some(Transition { from: HealthStatus::Down, to: HealthStatus::Up }));
        assert_eq!(t.poll_timeout(), Instant::from_secs(12), "inter once stable");
        let mut now = Instant::from_secs(12);
        for i in 1..=5 {
            let r = t.handle_result(now, false);
            assert_eq!(r.is_some(), i == 5, "flip only on the 5th failure");
            now = t.poll_timeout();
        }
        assert_eq!(t.status(), HealthStatus::Down);
        assert_eq!(t.counters().1, 5);
        assert_eq!(t.poll_timeout() - Instant::from_secs(12), Duration::from_secs(4 * 2 + 5));
    }

    #[test]
    fn a_success_resets_the_fall_streak() {
        let mut t = HealthTracker::new(
            HealthConfig { initial: HealthStatus::Up, ..cfg() },
            Instant::ZERO,
            1,
        );
        for _ in 0..4 {
            assert!(t.handle_result(Instant::ZERO, false).is_none());
        }
        assert_eq!(t.streak(), 4);
        t.handle_result(Instant::ZERO, true);
        assert_eq!(t.streak(), 0);
        for _ in 0..4 {
            assert!(t.handle_result(Instant::ZERO, false).is_none());
        }
        assert_eq!(t.status(), HealthStatus::Up);
    }

    #[test]
    fn jitter_is_seeded_and_bounded() {
        let c = HealthConfig { jitter: 0.2, initial: HealthStatus::Up, ..cfg() };
        let run = |seed| {
            let mut t = HealthTracker::new(c, Instant::ZERO, seed);
            (0..50)
                .map(|_| {
                    let now = t.poll_timeout();
                    t.handle_result(now, true);
                    t.poll_timeout() - now
                })
                .collect::<Vec<_>>()
        };
        let a = run(7);
        assert_eq!(a, run(7), "same seed, same schedule");
        assert_ne!(a, run(8));
        for d in &a {
            assert!(*d >= Duration::from_secs(8) && *d <= Duration::from_secs(12), "{d:?}");
        }
        assert!(a.iter().any(|d| *d != a[0]), "intervals vary");
    }
}
