//! Passive health: eject backends that fail live traffic (Envoy outlier detection).

use std::collections::HashMap;
use std::time::Duration;

use crate::backend::BackendId;
use crate::time::Instant;

/// Outlier detection parameters; defaults are Envoy's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OutlierConfig {
    /// Consecutive failures (connect errors, timeouts, 5xx) that eject a backend (Envoy 5).
    pub consecutive_failures: u32,
    /// First ejection time; the n-th ejection lasts n times this (Envoy 30 s).
    pub base_ejection: Duration,
    /// Longest ejection (Envoy 300 s).
    pub max_ejection: Duration,
    /// At most this share of the pool (percent) is ejected at once (Envoy 10%); at least one
    /// backend may always be ejected.
    pub max_ejection_percent: u32,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        OutlierConfig {
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(30),
            max_ejection: Duration::from_secs(300),
            max_ejection_percent: 10,
        }
    }
}

/// What the detector decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutlierEvent {
    /// Take the backend out of rotation until the given time.
    Ejected(BackendId, Instant),
    /// The backend's ejection ended: back in rotation (slow start applies).
    Returned(BackendId),
}

#[derive(Clone, Copy, Debug, Default)]
struct Record {
    consecutive: u32,
    ejections: u32,
    ejected_until: Option<Instant>,
}

/// Tracks live-traffic outcomes per backend and ejects outliers, with growing backoff and a
/// bounded ejected share. Pure: time is an argument.
#[derive(Debug)]
pub struct OutlierDetector {
    config: OutlierConfig,
    pool_size: usize,
    records: HashMap<BackendId, Record>,
    skipped: u64,
}

impl OutlierDetector {
    /// A detector for a pool of `pool_size` backends.
    pub fn new(config: OutlierConfig, pool_size: usize) -> Self {
        OutlierDetector { config, pool_size, records: HashMap::new(), skipped: 0 }
    }

    /// Updates the pool size (after backends were added or removed) and forgets removed ones.
    pub fn set_pool(&mut self, backends: &[BackendId]) {
        self.pool_size = backends.len();
        self.records.retain(|id, _| backends.contains(id));
    }

    fn ejected_now(&self) -> usize {
        self.records.values().filter(|r| r.ejected_until.is_some()).count()
    }

    /// True while `id` is ejected.
    pub fn is_ejected(&self, id: BackendId) -> bool {
        self.records.get(&id).is_some_and(|r| r.ejected_until.is_some())
    }

    /// Ejections skipped because the ejected share was at its maximum.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// A request or connection to `id` succeeded.
    pub fn handle_success(&mut self, id: BackendId) {
        if let Some(r) = self.records.get_mut(&id) {
            r.consecutive = 0;
        }
    }

    /// A request or connection to `id` failed at `now`; may eject it.
    pub fn handle_failure(&mut self, id: BackendId, now: Instant) -> Option<OutlierEvent> {
        let max = (self.pool_size * self.config.max_ejection_percent as usize / 100).max(1);
        let ejected = self.ejected_now();
        let r = self.records.entry(id).or_default();
        if r.ejected_until.is_some() {
            return None;
        }
        r.consecutive += 1;
        if r.consecutive < self.config.consecutive_failures.max(1) {
            return None;
        }
        if ejected >= max {
            self.skipped += 1;
            return None;
        }
        r.consecutive = 0;
        r.ejections += 1;
        let d = self.config.base_ejection.saturating_mul(r.ejections).min(self.config.max_ejection);
        let until = now + d;
        r.ejected_until = Some(until);
        Some(OutlierEvent::Ejected(id, until))
    }

    /// When the next ejection ends.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.records.values().filter_map(|r| r.ejected_until).min()
    }

    /// Ends the ejections due at `now`; returns the backends back in rotation.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<OutlierEvent> {
        let mut back = Vec::new();
        for (id, r) in self.records.iter_mut() {
            if r.ejected_until.is_some_and(|u| u <= now) {
                r.ejected_until = None;
                back.push(OutlierEvent::Returned(*id));
            }
        }
        back.sort_by_key(|e| match e {
            OutlierEvent::Returned(id) | OutlierEvent::Ejected(id, _) => *id,
        });
        back
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ejects_after_consecutive_failures_with_growing_backoff() {
        let mut d = OutlierDetector::new(OutlierConfig::default(), 10);
        let b = BackendId(1);
        for _ in 0..4 {
            assert_eq!(d.handle_failure(b, Instant::ZERO), None);
        }
        d.handle_success(b);
        for _ in 0..4 {
            assert_eq!(d.handle_failure(b, Instant::ZERO), None, "the success reset the count");
        }
        assert_eq!(
            d.handle_failure(b, Instant::ZERO),
            Some(OutlierEvent::Ejected(b, Instant::from_secs(30)))
        );
        assert!(d.is_ejected(b));
        assert_eq!(d.poll_timeout(), Some(Instant::from_secs(30)));
        assert!(d.handle_timeout(Instant::from_secs(29)).is_empty());
        assert_eq!(d.handle_timeout(Instant::from_secs(30)), vec![OutlierEvent::Returned(b)]);
        for _ in 0..4 {
            d.handle_failure(b, Instant::from_secs(31));
        }
        assert_eq!(
            d.handle_failure(b, Instant::from_secs(31)),
            Some(OutlierEvent::Ejected(b, Instant::from_secs(91))),
            "second ejection lasts twice as long"
        );
    }

    #[test]
    fn at_most_the_configured_share_is_ejected() {
        let cfg = OutlierConfig {
            consecutive_failures: 1,
            max_ejection_percent: 20,
            ..OutlierConfig::default()
        };
        let mut d = OutlierDetector::new(cfg, 10);
        let ejected =
            (0..10).filter(|&i| d.handle_failure(BackendId(i), Instant::ZERO).is_some()).count();
        assert_eq!(ejected, 2);
        assert_eq!(d.skipped(), 8);
        let mut tiny = OutlierDetector::new(cfg, 3);
        assert!(tiny.handle_failure(BackendId(0), Instant::ZERO).is_some(), "at least one may go");
        assert!(tiny.handle_failure(BackendId(1), Instant::ZERO).is_none());
    }

    #[test]
    fn backoff_is_capped() {
        let cfg = OutlierConfig { consecutive_failures: 1, ..OutlierConfig::default() };
        let mut d = OutlierDetector::new(cfg, 1);
        let mut now = Instant::ZERO;
        let mut last = Duration::ZERO;
        for _ in 0..20 {
            if let Some(OutlierEvent::Ejected(_, until)) = d.handle_failure(BackendId(0), now) {
                last = until - now;
                now = until;
                d.handle_timeout(now);
            }
        }
        assert_eq!(last, Duration::from_secs(300));
    }
}
