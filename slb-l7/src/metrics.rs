//! Per-backend counters (lock-free atomics on the request path) and their Prometheus exposition
//! through a prometheus-client collector that reads them at scrape time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::pool::Pool;
use crate::server::ListenerStats;

/// Latency histogram bucket bounds, seconds.
pub(crate) const LATENCY_BUCKETS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Counters of one backend.
#[derive(Debug, Default)]
pub struct BackendStats {
    requests: AtomicU64,
    failures: AtomicU64,
    connect_errors: AtomicU64,
    timeouts: AtomicU64,
    status_5xx: AtomicU64,
    latency_buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    latency_sum_ns: AtomicU64,
}

/// What one try against a backend ended with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TryOutcome {
    /// A response head arrived (status attached).
    Response(u16),
    /// The connection could not be made.
    ConnectError,
    /// Connect or response-header timeout.
    Timeout,
    /// The connection broke or the response was invalid.
    Broken,
}

impl BackendStats {
    pub(crate) fn record(&self, outcome: TryOutcome, latency: Duration) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        match outcome {
            TryOutcome::Response(s) => {
                if s >= 500 {
                    self.status_5xx.fetch_add(1, Ordering::Relaxed);
                }
                let secs = latency.as_secs_f64();
                let i = LATENCY_BUCKETS
                    .iter()
                    .position(|&b| secs <= b)
                    .unwrap_or(LATENCY_BUCKETS.len());
                self.latency_buckets[i].fetch_add(1, Ordering::Relaxed);
                self.latency_sum_ns.fetch_add(latency.as_nanos() as u64, Ordering::Relaxed);
                return;
            }
            TryOutcome::ConnectError => self.connect_errors.fetch_add(1, Ordering::Relaxed),
            TryOutcome::Timeout => self.timeouts.fetch_add(1, Ordering::Relaxed),
            TryOutcome::Broken => 0,
        };
        self.failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Tries sent to this backend.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Tries that failed without a response (connect errors, timeouts, broken connections).
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Connect errors.
    pub fn connect_errors(&self) -> u64 {
        self.connect_errors.load(Ordering::Relaxed)
    }

    /// Timeouts.
    pub fn timeouts(&self) -> u64 {
        self.timeouts.load(Ordering::Relaxed)
    }

    /// Responses with status 500-599.
    pub fn status_5xx(&self) -> u64 {
        self.status_5xx.load(Ordering::Relaxed)
    }

    /// (cumulative buckets, count, sum in seconds).
    fn histogram(&self) -> (Vec<(f64, u64)>, u64, f64) {
        let mut acc = 0;
        let mut buckets = Vec::with_capacity(LATENCY_BUCKETS.len() + 1);
        for (i, b) in self.latency_buckets.iter().enumerate() {
            acc += b.load(Ordering::Relaxed);
            buckets.push((LATENCY_BUCKETS.get(i).copied().unwrap_or(f64::INFINITY), acc));
        }
        (buckets, acc, self.latency_sum_ns.load(Ordering::Relaxed) as f64 / 1e9)
    }
}

/// Reads every pool's backends at scrape time.
#[derive(Debug)]
pub(crate) struct PoolCollector {
    pub(crate) pools: Arc<ArcSwap<Vec<Arc<Pool>>>>,
}

impl Collector for PoolCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let pools = self.pools.load();
        let rows: Vec<_> = pools
            .iter()
            .flat_map(|p| p.backend_rows().into_iter().map(move |r| (p.name().to_owned(), r)))
            .collect();
        type Get = fn(&crate::pool::BackendStatus) -> u64;
        let counters: [(&str, &str, Get); 5] = [
            ("slb_l7_backend_requests", "Tries sent to the backend", |r| r.stats.requests()),
            ("slb_l7_backend_failures", "Tries that failed without a response", |r| {
                r.stats.failures()
            }),
            ("slb_l7_backend_connect_errors", "Connections that could not be made", |r| {
                r.stats.connect_errors()
            }),
            ("slb_l7_backend_timeouts", "Connect and response-header timeouts", |r| {
                r.stats.timeouts()
            }),
            ("slb_l7_backend_responses_5xx", "Responses with status 500-599", |r| {
                r.stats.status_5xx()
            }),
        ];
        for (name, help, get) in counters {
            let mut m = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (pool, r) in &rows {
                let labels = [("pool", pool.as_str()), ("backend", r.address.as_str())];
                m.encode_family(&labels)?.encode_counter::<NoLabelSet, _, u64>(&get(r), None)?;
            }
        }
        let mut m = encoder.encode_descriptor(
            "slb_l7_backend_up",
            "1 when the backend takes new requests (healthy, not ejected, enabled)",
            None,
            MetricType::Gauge,
        )?;
        for (pool, r) in &rows {
            let labels = [("pool", pool.as_str()), ("backend", r.address.as_str())];
            m.encode_family(&labels)?.encode_gauge(&i64::from(r.usable))?;
        }
        let mut m = encoder.encode_descriptor(
            "slb_l7_backend_weight",
            "Configured weight (runtime changes included)",
            None,
            MetricType::Gauge,
        )?;
        for (pool, r) in &rows {
            let labels = [("pool", pool.as_str()), ("backend", r.address.as_str())];
            m.encode_family(&labels)?.encode_gauge(&i64::from(r.weight))?;
        }
        let mut m = encoder.encode_descriptor(
            "slb_l7_backend_admin_state",
            "Administrative state: 0 up (enabled), 1 draining, 2 disabled",
            None,
            MetricType::Gauge,
        )?;
        for (pool, r) in &rows {
            let labels = [("pool", pool.as_str()), ("backend", r.address.as_str())];
            let v: i64 = match r.admin {
                slb_core::backend::BackendState::Draining => 1,
                slb_core::backend::BackendState::Disabled => 2,
                _ => 0,
            };
            m.encode_family(&labels)?.encode_gauge(&v)?;
        }
        let mut m = encoder.encode_descriptor(
            "slb_l7_backend_active",
            "Requests in flight",
            None,
            MetricType::Gauge,
        )?;
        for (pool, r) in &rows {
            let labels = [("pool", pool.as_str()), ("backend", r.address.as_str())];
            m.encode_family(&labels)?.encode_gauge(&i64::from(r.active))?;
        }
        let mut m = encoder.encode_descriptor(
            "slb_l7_backend_latency_seconds",
            "Time from the first byte sent to the response head received",
            None,
            MetricType::Histogram,
        )?;
        for (pool, r) in &rows {
            let labels = [("pool", pool.as_str()), ("backend", r.address.as_str())];
            let (buckets, count, sum) = r.stats.histogram();
            m.encode_family(&labels)?.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
        }
        Ok(())
    }
}

/// PROXY protocol counters of the listeners.
#[derive(Debug)]
pub(crate) struct ListenerCollector {
    pub(crate) listeners: Vec<Arc<ListenerStats>>,
}

impl Collector for ListenerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let mut m = encoder.encode_descriptor(
            "slb_l7_listener_proxy_headers",
            "Connections by PROXY protocol outcome (v1, v2 accepted; malformed, untrusted, missing closed)",
            None,
            MetricType::Counter,
        )?;
        for l in &self.listeners {
            let (v1, v2) = l.proxy_accepted();
            for (outcome, n) in [
                ("v1", v1),
                ("v2", v2),
                ("malformed", l.proxy_malformed()),
                ("untrusted", l.proxy_untrusted()),
                ("missing", l.proxy_missing()),
            ] {
                let labels = [("listener", l.name()), ("outcome", outcome)];
                m.encode_family(&labels)?.encode_counter::<NoLabelSet, _, u64>(&n, None)?;
            }
        }
        Ok(())
    }
}

/// A registry exposing the pools' and listeners' metrics.
pub(crate) fn registry(
    pools: Arc<ArcSwap<Vec<Arc<Pool>>>>,
    listeners: Vec<Arc<ListenerStats>>,
) -> Registry {
    let mut r = Registry::default();
    r.register_collector(Box::new(PoolCollector { pools }));
    r.register_collector(Box::new(ListenerCollector { listeners }));
    r
}
