//! Consistent hashing: Maglev balance and disruption, ketama minimal disruption, and agreement
//! between independently built schedulers (what a cluster of nodes relies on).

mod common;

use std::collections::HashMap;
use std::net::Ipv4Addr;

use common::{backends, config, set, set_of};
use proptest::prelude::*;
use slb_core::backend::{Backend, BackendId};
use slb_core::flow::{FlowKey, HashKey, Protocol};
use slb_core::rng::SplitMix64;
use slb_core::sched::{
    Ketama, LoadSource, Maglev, PickContext, Scheduler, SchedulerConfig, SchedulerKind,
};

fn ids(s: &Maglev) -> Vec<BackendId> {
    s.table().iter().map(|&i| s.backends().backends()[i as usize].id).collect()
}

#[test]
fn maglev_gives_every_backend_its_share_within_one_percent() {
    proptest!(config(24), |(w in prop::collection::vec(1u32..5, 2..40), equal in any::<bool>())| {
        // Equal weights: M > 100 N, the paper's rule. Unequal weights: M > 100 per weight unit,
        // so that every backend, even the lightest, still has 100+ slots to be 1% exact with.
        let w: Vec<u32> = if equal { vec![1; w.len()] } else { w };
        let units: u32 = w.iter().sum();
        let m = Maglev::new(set(&w), 101 * units, HashKey::default());
        prop_assert!(m.table_size() as u32 > 100 * units);
        let total: f64 = w.iter().map(|&x| f64::from(x)).sum();
        let mut counts = vec![0u32; w.len()];
        for &i in m.table() {
            counts[i as usize] += 1;
        }
        for (i, (&c, &wi)) in counts.iter().zip(&w).enumerate() {
            let fair = m.table_size() as f64 * f64::from(wi) / total;
            prop_assert!(
                (f64::from(c) - fair).abs() <= 0.01 * fair,
                "backend {} weight {}: {} slots, fair {:.1}", i, wi, c, fair
            );
        }
    });
}

#[test]
fn maglev_removal_moves_at_most_twice_the_ideal_share() {
    proptest!(config(24), |(n in 3usize..40, victim in any::<prop::sample::Index>())| {
        let w = vec![1u32; n];
        let size = 600 * n as u32;
        let before = Maglev::new(set(&w), size, HashKey::default());
        let mut fewer = backends(&w);
        let gone = fewer.remove(victim.index(n)).id;
        let after = Maglev::new(set_of(fewer), size, HashKey::default());
        prop_assert_eq!(before.table_size(), after.table_size());
        let changed = ids(&before).iter().zip(ids(&after)).filter(|(a, b)| *a != b).count();
        let frac = changed as f64 / before.table_size() as f64;
        prop_assert!(frac <= 2.0 / n as f64, "removing {} of {} changed {:.4}", gone, n, frac);
    });
}

/// Backend id of a ketama pick for the key hash `h`.
fn ketama_pick(k: &Ketama, h: u64) -> BackendId {
    k.pick(&PickContext::with_hash(h)).unwrap().id()
}

#[test]
fn ketama_removal_moves_only_the_removed_backends_keys() {
    proptest!(config(32), |(
        w in prop::collection::vec(1u32..4, 2..12),
        victim in any::<prop::sample::Index>(),
        seed in any::<u64>(),
    )| {
        let before = Ketama::new(set(&w), HashKey::default());
        let mut fewer = backends(&w);
        let gone = fewer.remove(victim.index(w.len())).id;
        let after = Ketama::new(set_of(fewer), HashKey::default());
        let mut rng = SplitMix64::new(seed);
        let mut moved = 0;
        for _ in 0..20_000 {
            let h = Ketama::key_hash(&rng.next_u64().to_le_bytes());
            let (b, a) = (ketama_pick(&before, h), ketama_pick(&after, h));
            if b == gone {
                moved += 1;
                prop_assert_ne!(a, gone);
            } else {
                prop_assert_eq!(a, b, "key {:#x} moved though its backend stayed", h);
            }
        }
        prop_assert!(moved > 0, "the removed backend owned some keys");
    });
}

#[test]
fn ketama_addition_moves_keys_only_to_the_new_backend() {
    proptest!(config(32), |(w in prop::collection::vec(1u32..4, 2..12), seed in any::<u64>())| {
        let mut more = backends(&w);
        let before = Ketama::new(set_of(more.clone()), HashKey::default());
        let newcomer = backends(&vec![1; w.len() + 1]).pop().unwrap();
        let new_id = newcomer.id;
        more.push(newcomer);
        let after = Ketama::new(set_of(more), HashKey::default());
        let mut rng = SplitMix64::new(seed);
        for _ in 0..20_000 {
            let h = Ketama::key_hash(&rng.next_u64().to_le_bytes());
            let (b, a) = (ketama_pick(&before, h), ketama_pick(&after, h));
            prop_assert!(a == b || a == new_id, "key {:#x}: {} -> {}", h, b, a);
        }
    });
}

/// Load by backend id, so that two snapshots with different index orders see the same loads.
struct LoadById(HashMap<BackendId, u64>);
impl LoadSource for LoadById {
    fn load(&self, _: usize, b: &Backend) -> u64 {
        self.0.get(&b.id).copied().unwrap_or(0)
    }
}

#[test]
fn independently_built_schedulers_agree_on_every_key() {
    let kinds = [
        SchedulerKind::Maglev { table_size: 65537 },
        SchedulerKind::Ketama,
        SchedulerKind::SourceHash,
        SchedulerKind::DestinationHash,
        SchedulerKind::BoundedLoad { balance_factor: 125 },
    ];
    proptest!(config(16), |(
        w in prop::collection::vec(0u32..5, 2..16),
        order in any::<u64>(),
        loads in prop::collection::vec(0u64..20, 16),
        seed in any::<u64>(),
    )| {
        // Node A lists the backends in configuration order, node B in a shuffled order; each
        // has its own registry and its own scheduler built from the same cluster hash key.
        let a_list = backends(&w);
        let mut b_list = a_list.clone();
        SplitMix64::new(order).shuffle(&mut b_list);
        let key = HashKey::new(seed, !seed);
        let load = LoadById(a_list.iter().zip(&loads).map(|(b, &l)| (b.id, l)).collect());
        for kind in kinds {
            let cfg = SchedulerConfig { kind, seed: 1, hash_key: key };
            let (sa, sb) = (cfg.build(set_of(a_list.clone())), cfg.build(set_of(b_list.clone())));
            let mut rng = SplitMix64::new(seed);
            for _ in 0..2_000 {
                let r = rng.next_u64();
                let flow = FlowKey::v4(
                    Protocol::Tcp,
                    Ipv4Addr::from(r as u32),
                    (r >> 32) as u16,
                    Ipv4Addr::from((r >> 16) as u32),
                    80,
                );
                let ctx = PickContext {
                    flow: Some(&flow),
                    hash: Some(rng.next_u64()),
                    load: Some(&load),
                    ..PickContext::default()
                };
                let (pa, pb) = (sa.pick(&ctx).map(|p| p.id()), sb.pick(&ctx).map(|p| p.id()));
                prop_assert_eq!(pa, pb, "{} disagrees on {}", kind.name(), flow);
            }
        }
    });
}
