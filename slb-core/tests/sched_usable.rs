//! No scheduler ever gives a new flow to a down, draining, disabled or weight-0 backend (unless
//! the panic threshold put down backends back in use), and none panics on any pool.

mod common;

use std::net::Ipv4Addr;

use common::{backends, config};
use proptest::prelude::*;
use slb_core::backend::{Backend, BackendSet, BackendState, RuntimeRegistry, SetOptions};
use slb_core::flow::{FlowKey, Protocol};
use slb_core::sched::{LoadSource, PickContext, PickError, SchedulerConfig, SchedulerKind};

struct Loads(Vec<(u64, u64)>);
impl LoadSource for Loads {
    fn load(&self, index: usize, _: &Backend) -> u64 {
        self.0[index].0
    }
    fn inactive(&self, index: usize, _: &Backend) -> u64 {
        self.0[index].1
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
fn every_scheduler_picks_only_usable_backends() {
    proptest!(config(64), |(
        spec in prop::collection::vec(
            (prop_oneof![1 => Just(0u32), 4 => 1u32..8, 1 => 20u32..40], state(), 0u64..40, 0u64..600),
            0..14,
        ),
        panic in prop::option::of(0.1f64..0.9),
        seed in any::<u64>(),
    )| {
        let mut list = backends(&spec.iter().map(|s| s.0).collect::<Vec<_>>());
        for (b, s) in list.iter_mut().zip(&spec) {
            b.state = s.1;
            b.priority = (s.2 % 3) as u32;
        }
        let opts = SetOptions { panic_threshold: panic, ..SetOptions::default() };
        let set = BackendSet::new(list, &RuntimeRegistry::new(), opts).unwrap();
        let loads = Loads(spec.iter().map(|s| (s.2, s.3)).collect());
        for kind in SchedulerKind::ALL {
            let s = SchedulerConfig { seed, ..SchedulerConfig::new(kind) }.build(set.clone());
            for k in 0..64u32 {
                let flow = FlowKey::v4(
                    Protocol::Udp,
                    Ipv4Addr::from(k.wrapping_mul(0x9e37_79b9) ^ seed as u32),
                    53,
                    Ipv4Addr::from(k),
                    53,
                );
                let ctx = PickContext {
                    flow: Some(&flow),
                    hash: Some(u64::from(k) ^ seed),
                    load: if k % 2 == 0 { Some(&loads) } else { None },
                    ..PickContext::default()
                };
                match s.pick(&ctx) {
                    Ok(p) => prop_assert!(set.is_usable(p.index), "{} picked {}", kind.name(), p.index),
                    Err(e) => {
                        prop_assert_eq!(e, PickError::NoBackend, "{}", kind.name());
                        prop_assert!(set.usable().is_empty(), "{}: {} with usable backends", kind.name(), e);
                    }
                }
            }
        }
    });
}
