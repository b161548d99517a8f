//! Unit tests of the schedulers beyond rr/swrr/mh: names, unusable backends, load semantics.

use std::net::Ipv4Addr;

use super::tests::backends;
use super::*;
use crate::backend::BackendState;
use crate::flow::Protocol;

fn set_of(b: Vec<Backend>, opts: SetOptions) -> BackendSet {
    BackendSet::new(b, &RuntimeRegistry::new(), opts).unwrap()
}

fn set(weights: &[u32]) -> BackendSet {
    set_of(backends(weights), SetOptions::default())
}

/// A fixed load per index (active, inactive).
struct Loads(Vec<(u64, u64)>);

impl LoadSource for Loads {
    fn load(&self, index: usize, _: &Backend) -> u64 {
        self.0[index].0
    }
    fn inactive(&self, index: usize, _: &Backend) -> u64 {
        self.0[index].1
    }
}

fn flow(i: u32) -> FlowKey {
    FlowKey::v4(
        Protocol::Tcp,
        Ipv4Addr::from(0x0a01_0000 + i),
        1024,
        Ipv4Addr::new(10, 9, 0, 1),
        80,
    )
}

fn pick_with(s: &dyn Scheduler, loads: &Loads) -> usize {
    s.pick(&PickContext { load: Some(loads), ..PickContext::default() }).unwrap().index
}

#[test]
fn names_round_trip_and_unknown_lists_them() {
    for kind in SchedulerKind::ALL {
        assert_eq!(kind.name().parse::<SchedulerKind>(), Ok(kind));
        let s = SchedulerConfig::new(kind).build(set(&[1, 2]));
        assert_eq!(s.name(), kind.name());
    }
    let err = "nope".parse::<SchedulerKind>().unwrap_err().to_string();
    for kind in SchedulerKind::ALL {
        assert!(err.contains(kind.name()), "{err} lacks {}", kind.name());
    }
    assert_eq!("twos".parse(), Ok(SchedulerKind::LeastRequest));
}

#[test]
fn every_kind_reports_empty_and_missing_key() {
    let f = flow(1);
    let keyed = PickContext { flow: Some(&f), hash: Some(42), ..PickContext::default() };
    for kind in SchedulerKind::ALL {
        let cfg = SchedulerConfig::new(kind);
        for b in [
            backends(&[]),
            backends(&[0, 0]),
            backends(&[1, 1])
                .into_iter()
                .zip([BackendState::Down, BackendState::Draining])
                .map(|(b, st)| b.with_state(st))
                .collect(),
        ] {
            let s = cfg.build(set_of(b, SetOptions::default()));
            assert_eq!(s.pick(&keyed), Err(PickError::NoBackend), "{}", kind.name());
        }
        let s = cfg.build(set(&[1, 1]));
        let res = s.pick(&PickContext::default());
        if kind.needs_key() {
            assert_eq!(res, Err(PickError::MissingKey), "{}", kind.name());
        } else {
            assert!(res.is_ok(), "{}", kind.name());
        }
    }
}

#[test]
fn no_kind_picks_an_unusable_backend_and_panic_mode_uses_down_ones() {
    let states = [
        BackendState::Down,
        BackendState::Up,
        BackendState::Draining,
        BackendState::Disabled,
        BackendState::Up,
        BackendState::Down,
    ];
    let mk = || -> Vec<Backend> {
        let mut b = backends(&[3, 1, 2, 5, 0, 4]);
        for (b, s) in b.iter_mut().zip(states) {
            b.state = s;
        }
        b
    };
    let normal = set_of(mk(), SetOptions::default());
    assert_eq!(normal.usable(), &[1]);
    let panicking = set_of(mk(), SetOptions { panic_threshold: Some(0.5), ..Default::default() });
    assert!(panicking.in_panic());
    assert_eq!(panicking.usable(), &[0, 1, 5]);
    for kind in SchedulerKind::ALL {
        for (set, allowed) in [(&normal, &[1usize][..]), (&panicking, &[0, 1, 5][..])] {
            let s = SchedulerConfig { seed: 9, ..SchedulerConfig::new(kind) }.build(set.clone());
            for i in 0..500 {
                let f = flow(i);
                let ctx = PickContext {
                    flow: Some(&f),
                    hash: Some(u64::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
                    ..PickContext::default()
                };
                let p = s.pick(&ctx).unwrap();
                assert!(allowed.contains(&p.index), "{} picked {}", kind.name(), p.index);
            }
        }
    }
}

#[test]
fn ipvs_connection_schedulers_follow_their_formulas() {
    let s = set(&[1, 3, 2]);
    // lc: active*256 + inactive; weights ignored.
    let loads = Loads(vec![(1, 0), (0, 300), (1, 1)]);
    assert_eq!(pick_with(&LeastConnections::new(s.clone()), &loads), 0);
    let loads = Loads(vec![(1, 0), (0, 255), (1, 1)]);
    assert_eq!(pick_with(&LeastConnections::new(s.clone()), &loads), 1);
    // wlc: overhead / weight: 256/1, 512/3 = 170.7, 256/2 = 128.
    let loads = Loads(vec![(1, 0), (2, 0), (1, 0)]);
    assert_eq!(pick_with(&WeightedLeastConnections::new(s.clone()), &loads), 2);
    // Ties keep the first.
    let loads = Loads(vec![(0, 0), (0, 0), (0, 0)]);
    assert_eq!(pick_with(&WeightedLeastConnections::new(s.clone()), &loads), 0);
    // sed: (active + 1) / weight; an idle heavy backend beats an idle light one; inactive ignored.
    assert_eq!(pick_with(&ShortestExpectedDelay::new(s.clone()), &loads), 1);
    let loads = Loads(vec![(0, 0), (2, 0), (0, 500)]);
    assert_eq!(pick_with(&ShortestExpectedDelay::new(s.clone()), &loads), 2, "1/2 < 1/1 = 3/3");
    // nq: the first idle backend, whatever the weights; else sed.
    let loads = Loads(vec![(4, 0), (9, 0), (0, 0)]);
    assert_eq!(pick_with(&NeverQueue::new(s.clone()), &loads), 2);
    let loads = Loads(vec![(1, 0), (5, 0), (3, 0)]);
    assert_eq!(pick_with(&NeverQueue::new(s.clone()), &loads), 0, "2/1 = 6/3 = 4/2: the first");
    let loads = Loads(vec![(2, 0), (5, 0), (3, 0)]);
    assert_eq!(pick_with(&NeverQueue::new(s), &loads), 1);
}

#[test]
fn connection_schedulers_default_to_the_runtime_counters() {
    let s = set(&[1, 1, 1]);
    s.runtime(0).inc_active();
    s.runtime(1).inc_inactive();
    let lc = LeastConnections::new(s.clone());
    assert_eq!(lc.pick(&PickContext::default()).unwrap().index, 2);
    s.runtime(2).inc_active();
    assert_eq!(lc.pick(&PickContext::default()).unwrap().index, 1, "1 inactive < 256");
}

#[test]
fn p2c_takes_the_less_loaded_of_two() {
    let s = set(&[1, 1]);
    let p2c = LeastRequest::new(s, 3);
    let loads = Loads(vec![(5, 0), (0, 0)]);
    let picks: Vec<usize> = (0..200).map(|_| pick_with(&p2c, &loads)).collect();
    // Backend 0 is only picked when both draws hit it (a quarter of the time).
    let zeros = picks.iter().filter(|&&i| i == 0).count();
    assert!((25..=80).contains(&zeros), "{zeros}");
    let weighted = LeastRequest::new(set(&[1, 4]), 3);
    let loads = Loads(vec![(1, 0), (3, 0)]);
    for _ in 0..100 {
        // 1/1 > 3/4: the heavier backend wins whenever it is drawn.
        let p = pick_with(&weighted, &loads);
        assert!(p == 1 || p == 0);
    }
}

#[test]
fn failover_prefers_priority_then_weight_then_order() {
    let mut b = backends(&[1, 1, 5, 5, 9]);
    b[0].priority = 1;
    b[1].priority = 0;
    b[2].priority = 0;
    b[3].priority = 0;
    b[4].priority = 2;
    let fo = Failover::new(set_of(b.clone(), SetOptions::default()));
    assert_eq!(
        fo.pick(&PickContext::default()).unwrap().index,
        2,
        "weight 5 beats 1, first of two"
    );
    b[2].state = BackendState::Down;
    let fo = Failover::new(set_of(b.clone(), SetOptions::default()));
    assert_eq!(fo.pick(&PickContext::default()).unwrap().index, 3);
    b[1].state = BackendState::Down;
    b[3].state = BackendState::Draining;
    let fo = Failover::new(set_of(b, SetOptions::default()));
    assert_eq!(fo.pick(&PickContext::default()).unwrap().index, 0, "next priority group");
}

#[test]
fn vnswrr_is_swrr_rotated_by_a_seeded_start() {
    let weights = [4, 2, 6, 2];
    let swrr = SmoothWeighted::new(set(&weights));
    let reference: Vec<usize> =
        (0..7).map(|_| swrr.pick(&PickContext::default()).unwrap().index).collect();
    assert_eq!(reference, [2, 0, 1, 2, 3, 0, 2], "{{2,1,3,1}} reduced");
    for seed in 0..20 {
        let vn = VnSmoothWeighted::new(set(&weights), seed);
        assert_eq!(vn.cycle().len(), 7);
        let start = vn.start();
        let got: Vec<usize> =
            (0..14).map(|_| vn.pick(&PickContext::default()).unwrap().index).collect();
        let want: Vec<usize> = (0..14).map(|k| reference[(start + k) % 7]).collect();
        assert_eq!(got, want, "seed {seed}");
    }
    let starts: std::collections::HashSet<usize> =
        (0..20).map(|seed| VnSmoothWeighted::new(set(&weights), seed).start()).collect();
    assert!(starts.len() > 3, "seeded starts vary: {starts:?}");
}

#[test]
fn source_and_destination_hash_use_their_address() {
    let s = set(&[1, 1, 1, 1, 1, 1, 1, 1]);
    let sh = SourceHash::new(s.clone(), HashKey::default());
    let dh = DestinationHash::new(s, HashKey::default());
    let a = flow(7);
    let mut b = a;
    b.src_port = 999;
    b.dst = Ipv4Addr::new(10, 9, 9, 9).into();
    fn ctx(f: &FlowKey) -> PickContext<'_> {
        PickContext { flow: Some(f), ..PickContext::default() }
    }
    assert_eq!(sh.pick(&ctx(&a)).unwrap().index, sh.pick(&ctx(&b)).unwrap().index);
    let dsts: std::collections::HashSet<usize> = (0..64u32)
        .map(|i| {
            let mut f = a;
            f.dst = Ipv4Addr::from(0x0a09_0000 + i).into();
            dh.pick(&ctx(&f)).unwrap().index
        })
        .collect();
    assert!(dsts.len() > 4, "destinations spread: {dsts:?}");
    let srcs: std::collections::HashSet<usize> =
        (0..64).map(|i| sh.pick(&ctx(&flow(i))).unwrap().index).collect();
    assert!(srcs.len() > 4, "sources spread: {srcs:?}");
    assert!(sh.pick(&PickContext::with_hash(5)).is_ok(), "hash fallback");
}

#[test]
fn bounded_load_walks_past_full_backends() {
    let s = set(&[1, 1, 1, 1]);
    let plain = Ketama::new(s.clone(), HashKey::default());
    let bounded = BoundedLoad::new(s, 125, HashKey::default());
    let h = Ketama::key_hash(b"/index.html");
    let home = plain.pick(&PickContext::with_hash(h)).unwrap().index;
    let idle = Loads(vec![(0, 0); 4]);
    let ctx = |l| PickContext { hash: Some(h), load: Some(l), ..PickContext::default() };
    assert_eq!(bounded.pick(&ctx(&idle)).unwrap().index, home, "idle pool: ketama's choice");
    // Loads 10/4 = 2.5 average; cap ceil(11 * 1.25) = 14 slots over 4 weights: 3 or 4 each.
    let mut busy = vec![(2, 0); 4];
    busy[home] = (4, 0);
    let busy = Loads(busy);
    let p = bounded.pick(&ctx(&busy)).unwrap().index;
    assert_ne!(p, home, "home is at its bound");
    assert!(bounded.slots(p, 10) > 2);
}

#[test]
fn extreme_weights_neither_panic_nor_overflow() {
    let s = set(&[u32::MAX, 1, u32::MAX / 2, 0]);
    let f = flow(3);
    let mut loads = Loads(vec![(u64::MAX / 4, u64::MAX / 4), (0, 0), (7, 1), (0, 0)]);
    for kind in SchedulerKind::ALL {
        let sched = SchedulerConfig::new(kind).build(s.clone());
        for k in 0..50u64 {
            loads.0[1].0 = k;
            let ctx = PickContext {
                flow: Some(&f),
                hash: Some(k.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
                load: Some(&loads),
                ..PickContext::default()
            };
            let p = sched.pick(&ctx).unwrap();
            assert!(p.index < 3, "{} picked {}", kind.name(), p.index);
        }
    }
}
