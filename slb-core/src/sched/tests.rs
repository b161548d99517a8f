//! Scheduler unit tests (the property tests live in `slb-core/tests/`).

use std::net::SocketAddr;

use super::*;
use crate::backend::BackendState;

pub(crate) fn backends(weights: &[u32]) -> Vec<Backend> {
    weights
        .iter()
        .enumerate()
        .map(|(i, &w)| {
            Backend::new(
                BackendId(i as u32 + 1),
                SocketAddr::from(([10, 0, (i / 250) as u8, (i % 250) as u8 + 1], 80)),
            )
            .with_weight(w)
        })
        .collect()
}

fn set(weights: &[u32]) -> BackendSet {
    BackendSet::new(backends(weights), &RuntimeRegistry::new(), SetOptions::default()).unwrap()
}

fn seq(s: &dyn Scheduler, n: usize) -> String {
    (0..n).map(|_| (b'a' + s.pick(&PickContext::default()).unwrap().index as u8) as char).collect()
}

#[test]
fn swrr_gives_nginx_sequence() {
    let s = SmoothWeighted::new(set(&[5, 1, 1]));
    assert_eq!(seq(&s, 14), "aabacaaaabacaa");
}

#[test]
fn rr_skips_unusable_and_reports_empty() {
    let mut b = backends(&[1, 1, 1]);
    b[1].state = BackendState::Draining;
    let s = RoundRobin::new(
        BackendSet::new(b, &RuntimeRegistry::new(), SetOptions::default()).unwrap(),
        0,
    );
    assert_eq!(seq(&s, 4), "acac");
    let none = RoundRobin::new(set(&[0, 0]), 7);
    assert_eq!(none.pick(&PickContext::default()), Err(PickError::NoBackend));
}

#[test]
fn every_kind_handles_empty_and_zero_weight_pools() {
    for name in ["rr", "swrr", "mh"] {
        let kind: SchedulerKind = name.parse().unwrap();
        let cfg = SchedulerConfig::new(kind);
        for weights in [&[][..], &[0, 0, 0][..]] {
            let s = cfg.build(set(weights));
            let flow = FlowKey::v4(
                crate::flow::Protocol::Tcp,
                [1, 2, 3, 4].into(),
                5,
                [6, 7, 8, 9].into(),
                10,
            );
            let ctx = PickContext { flow: Some(&flow), hash: Some(42), ..PickContext::default() };
            assert_eq!(s.pick(&ctx), Err(PickError::NoBackend), "{name} {weights:?}");
        }
    }
}

#[test]
fn maglev_needs_a_key_and_fills_the_table() {
    let m = Maglev::new(set(&[1, 1, 1]), 1009, HashKey::default());
    assert_eq!(m.table_size(), 1009);
    assert_eq!(m.pick(&PickContext::default()), Err(PickError::MissingKey));
    assert!(m.table().iter().all(|&i| i < 3));
    let rounded = Maglev::new(set(&[1]), 1000, HashKey::default());
    assert_eq!(rounded.table_size(), 1009, "raised to the next prime");
}

#[test]
fn balancer_keeps_swrr_state_across_updates() {
    let bal = Balancer::new(
        SchedulerConfig::new(SchedulerKind::SmoothWeighted),
        SetOptions::default(),
        backends(&[5, 1, 1]),
    )
    .unwrap();
    let first: String = (0..3)
        .map(|_| {
            (b'a' + bal.scheduler().pick(&PickContext::default()).unwrap().index as u8) as char
        })
        .collect();
    assert_eq!(first, "aab");
    // Same backends again: the sequence continues where it was instead of restarting.
    bal.update(backends(&[5, 1, 1]), Instant::ZERO).unwrap();
    let rest: String = (0..4)
        .map(|_| {
            (b'a' + bal.scheduler().pick(&PickContext::default()).unwrap().index as u8) as char
        })
        .collect();
    assert_eq!(rest, "acaa");
}
