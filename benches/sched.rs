//! Scheduler benches: every scheduler's `pick` at 10, 100 and 10 000 backends, and table/ring
//! builds (Maglev for 1000 backends at M = 65537; ketama; vnswrr).
//!
//! `cargo bench -p slb --no-default-features --bench sched -- --warm-up-time 1 --measurement-time 2`

use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddr};

use criterion::{Criterion, criterion_group, criterion_main};
use slb::core::backend::{Backend, BackendId, BackendSet, RuntimeRegistry, SetOptions};
use slb::core::flow::{FlowKey, HashKey, Protocol};
use slb::core::sched::{
    Ketama, Maglev, PickContext, SchedulerConfig, SchedulerKind, VnSmoothWeighted,
};

/// `n` up backends with weights 1..=4 and a spread of active/inactive connection counts.
fn pool(n: usize) -> BackendSet {
    let backends = (0..n as u32)
        .map(|i| {
            let addr = SocketAddr::from(([10, 1 + (i >> 16) as u8, (i >> 8) as u8, i as u8], 80));
            Backend::new(BackendId(i), addr).with_weight(i % 4 + 1)
        })
        .collect();
    let set = BackendSet::new(backends, &RuntimeRegistry::new(), SetOptions::default()).unwrap();
    for i in 0..n {
        for _ in 0..(i * 7919) % 13 {
            set.runtime(i).inc_active();
        }
        for _ in 0..(i * 104_729) % 5 {
            set.runtime(i).inc_inactive();
        }
    }
    set
}

/// 4096 distinct flows and key hashes to cycle through.
fn keys() -> Vec<(FlowKey, u64)> {
    (0..4096u32)
        .map(|i| {
            let src = Ipv4Addr::from(0x0b00_0000 ^ i.wrapping_mul(0x9e37_79b9));
            let flow = FlowKey::v4(
                Protocol::Tcp,
                src,
                (i % 50_000) as u16 + 1024,
                Ipv4Addr::new(10, 0, 0, 100),
                80,
            );
            (flow, u64::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15))
        })
        .collect()
}

fn picks(c: &mut Criterion) {
    let keys = keys();
    for n in [10usize, 100, 10_000] {
        let set = pool(n);
        let mut group = c.benchmark_group(format!("pick/{n}"));
        for kind in SchedulerKind::ALL {
            let sched =
                SchedulerConfig { seed: 7, ..SchedulerConfig::new(kind) }.build(set.clone());
            let mut i = 0usize;
            group.bench_function(kind.name(), |b| {
                b.iter(|| {
                    i = (i + 1) & 4095;
                    let (flow, hash) = &keys[i];
                    let ctx = PickContext {
                        flow: Some(flow),
                        hash: Some(*hash),
                        ..PickContext::default()
                    };
                    black_box(sched.pick(black_box(&ctx)).map(|p| p.index))
                })
            });
        }
        group.finish();
    }
}

fn builds(c: &mut Criterion) {
    let mut group = c.benchmark_group("build");
    group.sample_size(20);
    let set = pool(1000);
    group.bench_function("maglev/1000/65537", |b| {
        b.iter(|| black_box(Maglev::new(set.clone(), 65537, HashKey::default()).table_size()))
    });
    group.bench_function("ketama/1000", |b| {
        b.iter(|| black_box(Ketama::new(set.clone(), HashKey::default()).ring_len()))
    });
    let big = pool(10_000);
    group.bench_function("vnswrr/10000", |b| {
        b.iter(|| black_box(VnSmoothWeighted::new(big.clone(), 1).cycle().len()))
    });
    group.finish();
}

criterion_group!(benches, picks, builds);
criterion_main!(benches);
