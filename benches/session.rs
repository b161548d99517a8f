//! Session-table benches at 1 M IPv4 entries (preallocated): fill, churn, lookups by forward and
//! reverse key, packet accounting, expiry sweeps; prints bytes per entry first. A pointer chase
//! gives the machine's memory latency for reference.
//!
//! `cargo bench -p slb --no-default-features --bench session -- --warm-up-time 1 --measurement-time 2`

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use slb::core::backend::BackendId;
use slb::core::flow::{FlowKey, Protocol};
use slb::core::rng::SplitMix64;
use slb::core::session::{ConnState, Prepared, Session, SessionTable, TableConfig};
use slb::core::time::Instant;

const N: u32 = 1_000_000;

/// Client -> VIP key and real server -> local address (FULLNAT) reverse key of session `i`.
fn keys_of(i: u32) -> (FlowKey, FlowKey) {
    let fwd = FlowKey::v4(
        Protocol::Tcp,
        Ipv4Addr::from(0x0b00_0000 + (i >> 4)),
        1024 + (i & 15) as u16,
        Ipv4Addr::new(10, 0, 0, 100),
        80,
    );
    let rev = FlowKey::v4(
        Protocol::Tcp,
        Ipv4Addr::new(10, 0, 2, (i % 200) as u8 + 1),
        80,
        Ipv4Addr::from(0x0aff_0000 + (i >> 16)),
        (i & 0xffff) as u16,
    );
    (fwd, rev)
}

fn config() -> TableConfig {
    TableConfig {
        capacity: N as usize,
        max_half_open: N as usize,
        preallocate: true,
        ..TableConfig::default()
    }
}

/// An empty preallocated table, its memory advised for huge pages (as a director does) unless
/// `SLB_BENCH_NO_HUGEPAGES` is set.
fn empty<X>() -> SessionTable<X> {
    let t = SessionTable::new(config());
    if std::env::var_os("SLB_BENCH_NO_HUGEPAGES").is_none() {
        slb_l4::link::advise_huge_pages(&t.memory_regions());
    }
    t
}

fn filled<X: Default>(now: Instant) -> SessionTable<X> {
    let mut t = empty();
    for i in 0..N {
        let (f, r) = keys_of(i);
        let s = Session::new(BackendId(i % 200), ConnState::Established, now, X::default());
        t.insert(now, f, Some(r), s).expect("room for 1 M");
    }
    t
}

/// A fixed pseudo-random permutation of 0..N (lookups in random order defeat the caches).
fn shuffled() -> Vec<u32> {
    let mut v: Vec<u32> = (0..N).collect();
    SplitMix64::new(0x2545_f491_4f6c_dd1d).shuffle(&mut v);
    v
}

fn report_memory() {
    let now = Instant::from_secs(1);
    let unit: SessionTable<()> = filled(now);
    let ext: SessionTable<u64> = filled(now);
    println!(
        "session table, 1 M IPv4 sessions with reverse keys: {} bytes/entry (X = ()), {} bytes/entry (X = u64)",
        unit.memory_bytes() / unit.len(),
        ext.memory_bytes() / ext.len(),
    );
}

fn session(c: &mut Criterion) {
    report_memory();
    let now = Instant::from_secs(1);
    let order = shuffled();
    let mut group = c.benchmark_group("session");
    group.sample_size(10);

    group.throughput(Throughput::Elements(u64::from(N)));
    group.bench_function("insert_1m", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let mut t: SessionTable<()> = empty();
                let start = std::time::Instant::now();
                for i in 0..N {
                    let (f, r) = keys_of(i);
                    let s = Session::new(BackendId(i % 200), ConnState::Established, now, ());
                    black_box(t.insert(now, f, Some(r), s).is_ok());
                }
                total += start.elapsed();
            }
            total
        })
    });
    group.bench_function("expire_all_1m", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let mut t: SessionTable<()> = filled(now);
                let late = Instant::from_secs(10_000);
                let start = std::time::Instant::now();
                black_box(t.expire(late, N as usize));
                total += start.elapsed();
                assert!(t.is_empty());
            }
            total
        })
    });

    group.sample_size(30);
    group.throughput(Throughput::Elements(1));
    let mut table: SessionTable<()> = filled(now);
    let mut k = 0usize;
    group.bench_function("lookup_1m", |b| {
        b.iter(|| {
            k = (k + 1) % order.len();
            let (f, _) = keys_of(order[k]);
            black_box(table.lookup(black_box(&f), now).map(|e| e.session().backend()))
        })
    });
    group.bench_function("lookup_reverse_1m", |b| {
        b.iter(|| {
            k = (k + 1) % order.len();
            let (_, r) = keys_of(order[k]);
            black_box(table.lookup(black_box(&r), now).map(|e| e.session().backend()))
        })
    });
    group.bench_function("get_1m", |b| {
        b.iter(|| {
            k = (k + 1) % order.len();
            let (f, _) = keys_of(order[k]);
            black_box(table.get(black_box(&f)).map(|(s, _)| s.backend()))
        })
    });
    // Eight independent lookups per iteration: how much the CPU overlaps their cache misses.
    group.throughput(Throughput::Elements(8));
    group.bench_function("get_burst8_1m", |b| {
        b.iter(|| {
            let mut found = 0u32;
            for _ in 0..8 {
                k = (k + 1) % order.len();
                let (f, _) = keys_of(order[k]);
                found += u32::from(table.get(black_box(&f)).is_some());
            }
            black_box(found)
        })
    });
    // The burst API: `prepare` a burst of keys (their bucket and slot reads overlap), then
    // `lookup_prepared` each (reading the backend, as `lookup_1m`; or counting a packet, as a
    // forwarder does).
    for (burst, record, reverse) in [
        (16usize, false, false),
        (32, false, false),
        (64, false, false),
        (32, true, false),
        (32, false, true),
    ] {
        group.throughput(Throughput::Elements(burst as u64));
        let mut keys = vec![keys_of(0).0; burst];
        let mut hints = vec![Prepared::default(); burst];
        let name = format!(
            "lookup_prepared{}_burst{burst}{}_1m",
            if record { "_record_packet" } else { "" },
            if reverse { "_reverse" } else { "" }
        );
        group.bench_function(name, |b| {
            b.iter(|| {
                for key in keys.iter_mut() {
                    k = (k + 1) % order.len();
                    let (f, r) = keys_of(order[k]);
                    *key = if reverse { r } else { f };
                }
                table.prepare(black_box(&keys), &mut hints);
                let mut found = 0u32;
                for (key, hint) in keys.iter().zip(&hints) {
                    found += table.lookup_prepared(key, *hint, now).map_or(0, |mut e| {
                        if record { e.record_packet(now) } else { e.session().backend().0 }
                    });
                }
                black_box(found)
            })
        });
    }
    group.throughput(Throughput::Elements(16));
    let mut keys = vec![keys_of(0).0; 16];
    let mut hints = vec![Prepared::default(); 16];
    group.bench_function("lookup_prepared_burst16_hot256", |b| {
        b.iter(|| {
            for key in keys.iter_mut() {
                k = (k + 1) % order.len();
                *key = keys_of(order[k & 255]).0;
            }
            table.prepare(black_box(&keys), &mut hints);
            let mut found = 0u32;
            for (key, hint) in keys.iter().zip(&hints) {
                found +=
                    table.lookup_prepared(key, *hint, now).map_or(0, |mut e| e.record_packet(now));
            }
            black_box(found)
        })
    });
    group.bench_function("lookup_hot256_x16", |b| {
        b.iter(|| {
            let mut found = 0u32;
            for _ in 0..16 {
                k = (k + 1) % order.len();
                let key = keys_of(order[k & 255]).0;
                found += table.lookup(black_box(&key), now).map_or(0, |mut e| e.record_packet(now));
            }
            black_box(found)
        })
    });
    group.bench_function("prepare_only_burst16_1m", |b| {
        b.iter(|| {
            for key in keys.iter_mut() {
                k = (k + 1) % order.len();
                *key = keys_of(order[k]).0;
            }
            table.prepare(black_box(&keys), &mut hints);
            black_box(&hints);
        })
    });
    group.throughput(Throughput::Elements(1));
    // Locality: flows looked up in insertion order (their slots are adjacent), and a hot set of
    // 16 384 flows of the million (what a burst of packets from active flows looks like).
    group.bench_function("lookup_1m_in_order", |b| {
        b.iter(|| {
            k = (k + 1) % order.len();
            let (f, _) = keys_of(k as u32);
            black_box(table.lookup(black_box(&f), now).map(|e| e.session().backend()))
        })
    });
    group.bench_function("lookup_hot_16k_of_1m", |b| {
        b.iter(|| {
            k = (k + 1) % order.len();
            let (f, _) = keys_of(order[k & 16_383]);
            black_box(table.lookup(black_box(&f), now).map(|e| e.session().backend()))
        })
    });
    group.bench_function("lookup_record_packet_1m", |b| {
        b.iter(|| {
            k = (k + 1) % order.len();
            let (f, _) = keys_of(order[k]);
            black_box(table.lookup(black_box(&f), now).map(|mut e| e.record_packet(now)))
        })
    });
    // Steady churn at 1 M: one session closes, a new one opens.
    let mut next = N;
    group.bench_function("churn_remove_insert_1m", |b| {
        b.iter(|| {
            let (old, _) = keys_of(next - N);
            black_box(table.remove(&old));
            let (f, r) = keys_of(next);
            let s = Session::new(BackendId(next % 200), ConnState::Established, now, ());
            black_box(table.insert(now, f, Some(r), s).is_ok());
            next += 1;
        })
    });
    group.throughput(Throughput::Elements(1024));
    group.bench_function("expire_scan_1m_budget_1024", |b| {
        b.iter(|| black_box(table.expire(now, 1024)))
    });
    group.finish();
}

/// Reference: one dependent random load from a 128 MiB array (a pointer chase), the machine's
/// cost of a cache-and-TLB miss; a session lookup makes about three such loads in a row (hash
/// control group, bucket, slot).
fn memory(c: &mut Criterion) {
    let n = (128usize << 20) / 8;
    let mut perm: Vec<usize> = (0..n).collect();
    SplitMix64::new(0x9e37_79b9_7f4a_7c15).shuffle(&mut perm);
    let mut next = vec![0usize; n];
    if std::env::var_os("SLB_BENCH_NO_HUGEPAGES").is_none() {
        slb_l4::link::advise_huge_pages(&[(next.as_ptr().cast(), n * 8)]);
    }
    for i in 0..n {
        next[perm[i]] = perm[(i + 1) % n];
    }
    let mut p = perm[0];
    let mut group = c.benchmark_group("memory");
    group.throughput(Throughput::Elements(1));
    group.bench_function("dependent_random_load_128mib", |b| {
        b.iter(|| {
            p = next[p];
            black_box(p)
        })
    });
    // Eight independent chains: what the CPU gains by overlapping misses (a burst API's chance).
    let mut q: [usize; 8] = std::array::from_fn(|i| perm[i * n / 8]);
    group.throughput(Throughput::Elements(8));
    group.bench_function("independent_random_loads_x8_128mib", |b| {
        b.iter(|| {
            for c in q.iter_mut() {
                *c = next[*c];
            }
            black_box(q[0])
        })
    });
    group.finish();
}

criterion_group!(benches, session, memory);
criterion_main!(benches);
