//! The pure L4 forwarding step in packets per second on one core: 64-byte frames (60 bytes +
//! FCS on the wire) of random flows out of 1 M live sessions, as the l4-compare harness sends
//! them. Each iteration copies a prebuilt frame into the buffer (as a link's receive would) and
//! runs `Forwarder::process` on it; the `_batch32` variants fill 32 buffers and run
//! `Forwarder::process_batch` on them (overlapped session lookups). The session table is
//! advised huge pages, as a director does, unless `SLB_BENCH_NO_HUGEPAGES` is set.
//!
//! `cargo bench --bench l4_step` (BENCHMARKS.md, section slb-l4).

use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use slb::core::rng::SplitMix64;
use slb::core::session::TableConfig;
use slb::core::time::Instant;
use slb::l4::craft::{self, CLIENT_MAC, PORT0_MAC, PORT1_MAC, REAL_MACS, flags};
use slb::l4::frame::{CsumState, FrameBuf};
use slb::l4::fwd::{Forwarder, ForwarderConfig, Mode, PortId, Verdict};

const SESSIONS: usize = 1 << 20;
const BATCH: usize = 1024;

/// Client `i`: 11.x.y.z:port, spread over addresses and ports.
fn client(i: usize) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::from(0x0b00_0000 + (i as u32 >> 4)), 10_000 + (i % 16) as u16))
}

/// A forwarder holding 1 M sessions of `mode`/`tcp`, and the 60-byte frames to run through it,
/// in random session order: inbound (client -> VIP) or outbound (real server -> client).
fn setup(mode: Mode, tcp: bool, outbound: bool) -> (Forwarder, Vec<[u8; 60]>) {
    let table = TableConfig {
        capacity: SESSIONS,
        max_half_open: SESSIONS,
        preallocate: true,
        ..TableConfig::default()
    };
    let cfg = ForwarderConfig { table, strict_tcp: false, ..ForwarderConfig::default() };
    let mut fwd = craft::forwarder(mode, cfg);
    // As a director does (unless SLB_BENCH_NO_HUGEPAGES is set): huge pages for the table.
    if std::env::var_os("SLB_BENCH_NO_HUGEPAGES").is_none() {
        slb_l4::link::advise_huge_pages(&fwd.sessions().memory_regions());
    }
    // FULLNAT: ~60 k ports per (local address, real server); 1 M sessions need more addresses.
    for i in 0..32u8 {
        fwd.add_local_addr(std::net::IpAddr::from([10, 0, 3, i]));
    }
    let (port, svc) = if tcp { (80, "10.0.0.100:80") } else { (53, "10.0.0.100:53") };
    let vip: SocketAddr = svc.parse().unwrap();
    let frame = |src, dst, smac, dmac| -> Vec<u8> {
        if tcp {
            craft::tcp(smac, dmac, src, dst, flags::ACK, 1, &[], &[0u8; 6])
        } else {
            craft::udp(smac, dmac, src, dst, &[0u8; 18])
        }
    };
    let mut buf = FrameBuf::default();
    for i in 0..SESSIONS {
        buf.fill(&frame(client(i), vip, CLIENT_MAC, PORT0_MAC));
        let v = fwd.process(Instant::ZERO, &mut buf, PortId(0));
        assert!(matches!(v, Verdict::Forward(_)), "{v:?}");
    }
    assert_eq!(fwd.sessions().len(), SESSIONS);
    let mut order: Vec<u32> = (0..SESSIONS as u32).collect();
    SplitMix64::new(0x5eed).shuffle(&mut order);
    let views: Vec<_> = if outbound {
        let mut by_client = std::collections::HashMap::new();
        for v in fwd.session_views() {
            by_client
                .insert(v.forward.src_addr(), v.reverse.expect("NAT sessions have a reverse key"));
        }
        order.iter().map(|&i| Some(by_client[&client(i as usize)])).collect()
    } else {
        vec![None; SESSIONS]
    };
    let frames = order
        .iter()
        .zip(views)
        .map(|(&i, rev)| {
            let f = match rev {
                Some(r) => frame(r.src_addr(), r.dst_addr(), REAL_MACS[0], PORT1_MAC),
                None => frame(client(i as usize), vip, CLIENT_MAC, PORT0_MAC),
            };
            let mut a = [0u8; 60];
            a.copy_from_slice(&f[..60]);
            a
        })
        .collect();
    let _ = port;
    (fwd, frames)
}

/// How many distinct flows the measured frames cycle through: all 1 M sessions (random order,
/// each lookup a cache miss), or a hot set that stays in the CPU caches.
#[derive(Clone, Copy)]
enum Spread {
    All,
    Hot(usize),
}

/// Frames per `process_batch` call (what a link delivers per receive).
const LINK_BATCH: usize = 32;

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("l4_step_1M_sessions");
    g.sample_size(20).measurement_time(Duration::from_secs(6)).warm_up_time(Duration::from_secs(2));
    g.throughput(Throughput::Elements(BATCH as u64));
    for (name, mode, tcp, outbound, spread) in [
        ("nat_udp_in", Mode::Nat, false, false, Spread::All),
        ("nat_udp_in_hot1024", Mode::Nat, false, false, Spread::Hot(1024)),
        ("nat_udp_out", Mode::Nat, false, true, Spread::All),
        ("nat_tcp_in", Mode::Nat, true, false, Spread::All),
        ("fullnat_tcp_in", Mode::FullNat, true, false, Spread::All),
        ("fullnat_tcp_in_hot1024", Mode::FullNat, true, false, Spread::Hot(1024)),
        ("dr_udp_in", Mode::Dr, false, false, Spread::All),
    ] {
        // Set up lazily: criterion calls a closure only for benchmarks that match the command
        // line's filter (setting up 1 M sessions takes a while); both variants share it.
        let mut state: Option<(Forwarder, Vec<[u8; 60]>)> = None;
        let mut prepare = || {
            let (fwd, mut frames) = setup(mode, tcp, outbound);
            if let Spread::Hot(n) = spread {
                frames.truncate(n);
            }
            (fwd, frames)
        };
        let port = PortId(u8::from(outbound));
        let mut now = Instant::from_secs(1);
        g.bench_function(name, |b| {
            let (fwd, frames) = state.get_or_insert_with(&mut prepare);
            let mut buf = FrameBuf::default();
            let mut next = 0usize;
            b.iter(|| {
                now += Duration::from_micros(100);
                for _ in 0..BATCH {
                    buf.fill(&frames[next]);
                    buf.meta.csum = CsumState::Complete;
                    next = (next + 1) % frames.len();
                    black_box(fwd.process(now, &mut buf, port));
                }
            });
            assert_eq!(fwd.stats().total_drops(), 0, "{name}: nothing dropped");
        });
        g.bench_function(format!("{name}_batch{LINK_BATCH}"), |b| {
            let (fwd, frames) = state.get_or_insert_with(&mut prepare);
            let mut bufs: Vec<FrameBuf> = (0..LINK_BATCH).map(|_| FrameBuf::default()).collect();
            let mut verdicts = [Verdict::Host; LINK_BATCH];
            let mut next = 0usize;
            b.iter(|| {
                now += Duration::from_micros(100);
                for _ in 0..BATCH / LINK_BATCH {
                    for buf in bufs.iter_mut() {
                        buf.fill(&frames[next]);
                        buf.meta.csum = CsumState::Complete;
                        next = (next + 1) % frames.len();
                    }
                    fwd.process_batch(now, &mut bufs, port, &mut verdicts);
                    black_box(&verdicts);
                }
            });
            assert_eq!(fwd.stats().total_drops(), 0, "{name}: nothing dropped");
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
