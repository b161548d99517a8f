//! Helpers shared by slb-core's integration tests.
#![allow(dead_code, unreachable_pub, missing_docs)] // each test binary uses a different subset

use std::net::SocketAddr;

use proptest::test_runner::{Config, RngSeed};
use slb_core::backend::{Backend, BackendId, BackendSet, RuntimeRegistry, SetOptions};
use slb_core::rng::SplitMix64;

/// The seed every property test starts from; `SLB_PROPTEST_SEED=<u64>` replays another.
pub const DEFAULT_SEED: u64 = 0x5eed_51b0;

/// A proptest configuration with a pinned seed and no regression files. The seed is printed,
/// so a failing run's output says how to replay it.
pub fn config(cases: u32) -> Config {
    let seed = std::env::var("SLB_PROPTEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEED);
    println!("proptest seed {seed} (replay: SLB_PROPTEST_SEED={seed})");
    Config { cases, rng_seed: RngSeed::Fixed(seed), failure_persistence: None, ..Config::default() }
}

/// Backends with ids 1.. and distinct addresses 10.x.y.z:80, with these weights.
pub fn backends(weights: &[u32]) -> Vec<Backend> {
    weights
        .iter()
        .enumerate()
        .map(|(i, &w)| {
            let i = i as u32;
            let addr = SocketAddr::from(([10, (i >> 16) as u8 + 1, (i >> 8) as u8, i as u8], 80));
            Backend::new(BackendId(i + 1), addr).with_weight(w)
        })
        .collect()
}

pub fn set_of(b: Vec<Backend>) -> BackendSet {
    BackendSet::new(b, &RuntimeRegistry::new(), SetOptions::default()).unwrap()
}

pub fn set(weights: &[u32]) -> BackendSet {
    set_of(backends(weights))
}

/// Exponentially distributed waits (queue arrivals, service times) from the seeded generator.
pub trait Exp {
    /// A wait with the given rate.
    fn exp(&mut self, rate: f64) -> f64;
}

impl Exp for SplitMix64 {
    fn exp(&mut self, rate: f64) -> f64 {
        -(1.0 - self.next_f64()).ln() / rate
    }
}

/// nginx's smooth weighted round robin loop, written out as the reference: each step adds every
/// weight to its peer's current weight, takes the largest (first on ties), subtracts the total.
pub fn nginx_swrr(weights: &[u32], steps: usize) -> Vec<usize> {
    let total: i64 = weights.iter().map(|&w| i64::from(w)).sum();
    let mut current = vec![0i64; weights.len()];
    (0..steps)
        .map(|_| {
            let mut best: Option<usize> = None;
            for (i, &w) in weights.iter().enumerate() {
                if w == 0 {
                    continue;
                }
                current[i] += i64::from(w);
                if best.is_none_or(|b| current[i] > current[b]) {
                    best = Some(i);
                }
            }
            let b = best.expect("a positive weight");
            current[b] -= total;
            b
        })
        .collect()
}

/// Share of picks per index.
pub fn shares(picks: impl IntoIterator<Item = usize>, n: usize) -> Vec<f64> {
    let mut counts = vec![0u64; n];
    let mut total = 0u64;
    for p in picks {
        counts[p] += 1;
        total += 1;
    }
    counts.into_iter().map(|c| c as f64 / total.max(1) as f64).collect()
}

/// Each weight's share of the total.
pub fn weight_shares(weights: &[u32]) -> Vec<f64> {
    let total: f64 = weights.iter().map(|&w| f64::from(w)).sum();
    weights.iter().map(|&w| f64::from(w) / total).collect()
}
