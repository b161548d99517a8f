//! Retry policy (nginx `proxy_next_upstream`) and retry budget (Envoy).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::config::RetryConfig;

/// When a failed try may go to the next backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Most tries, the first included.
    pub tries: u32,
    /// No new try after this long since the first.
    pub timeout: Duration,
    /// Retry connect errors and connections closed before a response.
    pub on_error: bool,
    /// Retry connect and response-header timeouts.
    pub on_timeout: bool,
    /// Retry these statuses (502, 503, 504).
    pub on_status: Vec<u16>,
    /// Retry non-idempotent requests after they were sent.
    pub non_idempotent: bool,
    /// Budget: retries in flight at most this percent of requests in flight...
    pub budget_percent: u32,
    /// ...but at least this many.
    pub budget_min: u32,
}

impl From<&RetryConfig> for RetryPolicy {
    fn from(c: &RetryConfig) -> Self {
        RetryPolicy {
            tries: c.tries.max(1),
            timeout: c.timeout.0,
            on_error: c.on.iter().any(|o| o == "error"),
            on_timeout: c.on.iter().any(|o| o == "timeout"),
            on_status: c.on.iter().filter_map(|o| o.strip_prefix("http_")?.parse().ok()).collect(),
            non_idempotent: c.non_idempotent,
            budget_percent: c.budget_percent,
            budget_min: c.budget_min,
        }
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy::from(&RetryConfig::default())
    }
}

/// In-flight counters for the Envoy-style retry budget.
#[derive(Debug, Default)]
pub struct RetryBudget {
    requests: AtomicU64,
    retries: AtomicU64,
    denied: AtomicU64,
}

impl RetryBudget {
    pub(crate) fn start_request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn end_request(&self) {
        self.requests.fetch_sub(1, Ordering::Relaxed);
    }

    /// Takes a retry token if the budget allows one; release it with [`RetryBudget::end_retry`].
    pub(crate) fn try_start_retry(&self, policy: &RetryPolicy) -> bool {
        let requests = self.requests.load(Ordering::Relaxed);
        let allowed =
            (requests * u64::from(policy.budget_percent) / 100).max(u64::from(policy.budget_min));
        let prev = self.retries.fetch_add(1, Ordering::Relaxed);
        if prev >= allowed {
            self.retries.fetch_sub(1, Ordering::Relaxed);
            self.denied.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    pub(crate) fn end_retry(&self) {
        self.retries.fetch_sub(1, Ordering::Relaxed);
    }

    /// Retries refused because the budget was spent.
    pub fn denied(&self) -> u64 {
        self.denied.load(Ordering::Relaxed)
    }

    /// Requests in flight.
    pub fn in_flight(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_is_a_share_with_a_floor() {
        let p = RetryPolicy { budget_percent: 20, budget_min: 3, ..RetryPolicy::default() };
        let b = RetryBudget::default();
        for _ in 0..10 {
            b.start_request();
        }
        assert!((0..3).all(|_| b.try_start_retry(&p)), "floor of 3");
        assert!(!b.try_start_retry(&p));
        assert_eq!(b.denied(), 1);
        for _ in 0..10 {
            b.start_request();
        }
        assert!(b.try_start_retry(&p), "20% of 20 = 4");
        assert!(!b.try_start_retry(&p));
        b.end_retry();
        assert!(b.try_start_retry(&p));
    }

    #[test]
    fn policy_from_config() {
        let p = RetryPolicy::from(&RetryConfig {
            on: vec!["timeout".into(), "http_503".into()],
            ..RetryConfig::default()
        });
        assert!(!p.on_error && p.on_timeout);
        assert_eq!(p.on_status, vec![503]);
    }
}
