//! Round-robin family properties: nginx's exact smooth sequence, exact proportions per cycle.

mod common;

use common::{config, nginx_swrr, set};
use proptest::prelude::*;
use slb_core::sched::{PickContext, Scheduler, SmoothWeighted, VnSmoothWeighted};

fn picks(s: &dyn Scheduler, n: usize) -> Vec<usize> {
    (0..n).map(|_| s.pick(&PickContext::default()).unwrap().index).collect()
}

/// Every window of `cycle` consecutive picks holds each index exactly its weight's share.
fn every_window_is_exact(seq: &[usize], weights: &[u32]) -> Result<(), String> {
    let g = weights.iter().fold(0u32, |g, &w| gcd(g, w)).max(1);
    let reduced: Vec<u32> = weights.iter().map(|w| w / g).collect();
    let cycle: usize = reduced.iter().map(|&w| w as usize).sum();
    for start in 0..=seq.len().saturating_sub(cycle) {
        let mut counts = vec![0u32; weights.len()];
        for &i in &seq[start..start + cycle] {
            counts[i] += 1;
        }
        if counts != reduced {
            return Err(format!("window at {start}: {counts:?}, want {reduced:?}"));
        }
    }
    Ok(())
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

#[test]
fn swrr_five_one_one_is_nginx_sequence() {
    let s = SmoothWeighted::new(set(&[5, 1, 1]));
    let letters: String = picks(&s, 14).into_iter().map(|i| (b'a' + i as u8) as char).collect();
    assert_eq!(letters, "aabacaaaabacaa");
}

fn weights() -> impl Strategy<Value = Vec<u32>> {
    prop::collection::vec(prop_oneof![1 => Just(0u32), 6 => 1u32..12], 1..9)
        .prop_filter("a positive weight", |w| w.iter().any(|&x| x > 0))
}

#[test]
fn swrr_matches_nginx_loop_and_every_cycle_is_exact() {
    proptest!(config(256), |(w in weights())| {
        let total: usize = w.iter().map(|&x| x as usize).sum();
        let got = picks(&SmoothWeighted::new(set(&w)), 3 * total);
        prop_assert_eq!(&got, &nginx_swrr(&w, 3 * total));
        prop_assert_eq!(every_window_is_exact(&got, &w), Ok(()));
    });
}

#[test]
fn vnswrr_is_nginx_sequence_and_every_cycle_is_exact() {
    proptest!(config(256), |(w in weights(), seed in any::<u64>())| {
        let s = VnSmoothWeighted::new(set(&w), seed);
        let cycle = s.cycle().len();
        let got = picks(&s, 3 * cycle);
        let reference = nginx_swrr(&w, cycle);
        let want: Vec<usize> = (0..3 * cycle).map(|k| reference[(s.start() + k) % cycle]).collect();
        prop_assert_eq!(&got, &want, "seed {}", seed);
        prop_assert_eq!(every_window_is_exact(&got, &w), Ok(()));
    });
}

#[test]
fn vnswrr_large_pool_cycle_is_exact() {
    // 2000 backends (Tengine's benchmark size) with weights 1..=50: one cycle holds each backend
    // exactly its (gcd-reduced) weight.
    let w: Vec<u32> = (0..2000u32).map(|i| i % 50 + 1).collect();
    let s = VnSmoothWeighted::new(set(&w), 42);
    let total: usize = w.iter().map(|&x| x as usize).sum();
    assert_eq!(s.cycle().len(), total);
    let mut counts = vec![0u32; w.len()];
    for _ in 0..total {
        counts[s.pick(&PickContext::default()).unwrap().index] += 1;
    }
    assert_eq!(counts, w);
}
