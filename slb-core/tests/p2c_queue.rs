//! Power of two choices: never an unusable backend; lower peak load than weighted random in a
//! simulated queueing system (simulated time, seeded, deterministic).

mod common;

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use common::{Exp, backends, config, set_of};
use proptest::prelude::*;
use slb_core::backend::{Backend, BackendSet, BackendState, RuntimeRegistry, SetOptions};
use slb_core::rng::SplitMix64;
use slb_core::sched::{LoadSource, PickContext, Scheduler, SchedulerConfig, SchedulerKind};

struct Loads(Vec<u64>);
impl LoadSource for Loads {
    fn load(&self, index: usize, _: &Backend) -> u64 {
        self.0[index]
    }
}

fn state() -> impl Strategy<Value = BackendState> {
    prop_oneof![
        3 => Just(BackendState::Up),
        1 => Just(BackendState::Down),
        1 => Just(BackendState::Draining),
        1 => Just(BackendState::Disabled),
    ]
}

#[test]
fn p2c_never_picks_an_unusable_backend() {
    proptest!(config(128), |(
        spec in prop::collection::vec((0u32..6, state(), 0u64..50), 1..20),
        panic in prop::option::of(0.1f64..0.9),
        seed in any::<u64>(),
    )| {
        let mut list = backends(&spec.iter().map(|s| s.0).collect::<Vec<_>>());
        for (b, s) in list.iter_mut().zip(&spec) {
            b.state = s.1;
        }
        let opts = SetOptions { panic_threshold: panic, ..SetOptions::default() };
        let set = BackendSet::new(list, &RuntimeRegistry::new(), opts).unwrap();
        let loads = Loads(spec.iter().map(|s| s.2).collect());
        let s = SchedulerConfig { seed, ..SchedulerConfig::new(SchedulerKind::LeastRequest) }
            .build(set.clone());
        let ctx = PickContext { load: Some(&loads), ..PickContext::default() };
        for _ in 0..500 {
            match s.pick(&ctx) {
                Ok(p) => prop_assert!(set.is_usable(p.index), "picked unusable {}", p.index),
                Err(e) => prop_assert!(set.usable().is_empty(), "{} with usable backends", e),
            }
        }
    });
}

/// Peak and time-averaged maximum queue length over a run.
#[derive(Debug)]
struct QueueStats {
    peak: u64,
    mean_max: f64,
}

/// M/M/1 queues, one per backend, serving at a rate proportional to weight; Poisson arrivals at
/// `rho` of total capacity; each arrival is scheduled by `kind`, which sees the queue lengths
/// through the runtime active counters. Deterministic given `seed`.
fn simulate(
    kind: SchedulerKind,
    weights: &[u32],
    rho: f64,
    arrivals: usize,
    seed: u64,
) -> QueueStats {
    let set = set_of(backends(weights));
    let s: Box<dyn Scheduler> =
        SchedulerConfig { seed, ..SchedulerConfig::new(kind) }.build(set.clone());
    let mut rng = SplitMix64::new(seed ^ 0xa5a5);
    let rate: Vec<f64> = weights.iter().map(|&w| f64::from(w)).collect();
    let lambda = rho * rate.iter().sum::<f64>();
    let ns = |t: f64| (t * 1e9) as u64;
    let mut done: BinaryHeap<Reverse<(u64, usize)>> = BinaryHeap::new();
    let load = |i: usize| u64::from(set.runtime(i).active());
    let (mut now, mut next_arrival) = (0u64, ns(rng.exp(lambda)));
    let (mut peak, mut area, mut cur_max) = (0u64, 0f64, 0u64);
    let mut served = 0;
    while served < arrivals {
        let arrival_first = done.peek().is_none_or(|Reverse((t, _))| next_arrival <= *t);
        let t = if arrival_first { next_arrival } else { done.peek().unwrap().0.0 };
        area += (t - now) as f64 * cur_max as f64;
        now = t;
        if arrival_first {
            let i = s.pick(&PickContext::default()).unwrap().index;
            set.runtime(i).inc_active();
            if load(i) == 1 {
                done.push(Reverse((now + ns(rng.exp(rate[i])), i)));
            }
            next_arrival = now + ns(rng.exp(lambda));
            served += 1;
        } else {
            let Reverse((_, i)) = done.pop().unwrap();
            set.runtime(i).dec_active();
            if load(i) > 0 {
                done.push(Reverse((now + ns(rng.exp(rate[i])), i)));
            }
        }
        cur_max = (0..weights.len()).map(load).max().unwrap_or(0);
        peak = peak.max(cur_max);
    }
    QueueStats { peak, mean_max: area / now as f64 }
}

#[test]
fn p2c_keeps_the_maximum_load_below_weighted_random() {
    for (weights, seed) in [
        (vec![1u32; 10], 1u64),
        (vec![1; 10], 2),
        (vec![1, 1, 2, 2, 3, 3, 4, 4], 3),
        (vec![5, 1, 1, 1, 1, 1], 4),
    ] {
        let p2c = simulate(SchedulerKind::LeastRequest, &weights, 0.9, 100_000, seed);
        let random = simulate(SchedulerKind::WeightedRandom, &weights, 0.9, 100_000, seed);
        println!("weights {weights:?} seed {seed}: p2c {p2c:?}, random {random:?}");
        assert!(
            p2c.peak < random.peak && p2c.mean_max < random.mean_max,
            "seed {seed}, weights {weights:?}: p2c {p2c:?} vs random {random:?}"
        );
    }
}
