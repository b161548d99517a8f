//! slb-sync hot paths: encode+sign and verify+decode of full datagrams, and the engine's send
//! and receive paths per entry. Throughput is in entries.
//!
//! `cargo bench --bench sync_codec`

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use slb::core::flow::Protocol;
use slb::core::session::ConnState;
use slb::core::time::Instant;
use slb::sync::wire::{ClusterKey, Datagram, Entries, HeaderRepr, Message};
use slb::sync::{
    Config, Engine, ForwardMode, NodeId, SessionEvent, SessionKey, SessionRecord, SyncedRecord,
};

/// 29 FULLNAT IPv4 entries (48 bytes each) fill a 1472-byte datagram.
const PER_DATAGRAM: usize = 29;

fn record(i: u32) -> SessionRecord {
    let client = SocketAddr::from((
        [10, (i >> 16) as u8, (i >> 8) as u8, i as u8],
        1024 + (i % 60_000) as u16,
    ));
    let mut r = SessionRecord::new(
        SessionKey {
            proto: Protocol::Tcp,
            client,
            virt: SocketAddr::from(([198, 51, 100, 1], 443)),
        },
        SocketAddr::from(([10, 0, 2, 11 + (i % 4) as u8], 8080)),
        ForwardMode::FullNat,
        ConnState::Established,
        Duration::from_secs(900),
    );
    r.local = Some(SocketAddr::from(([10, 0, 2, 1], 5000 + (i % 60_000) as u16)));
    r
}

fn header(seq: u64) -> HeaderRepr {
    HeaderRepr {
        msg_type: 0,
        flags: 0,
        cluster_id: 7,
        node_id: 1,
        epoch: 1,
        seq,
        stream: 0,
        count: 0,
    }
}

fn codec(c: &mut Criterion) {
    let key = ClusterKey::derive(b"bench");
    let entries: Vec<SyncedRecord> = (0..PER_DATAGRAM as u32)
        .map(|i| SyncedRecord { origin: NodeId(1), stamp: u64::from(i), record: record(i) })
        .collect();
    let msg = Message::Updates { data_seq: 1, entries };
    assert!(msg.buffer_len() <= 1472);
    let mut g = c.benchmark_group("sync_wire");
    g.throughput(Throughput::Elements(PER_DATAGRAM as u64));
    let mut buf = vec![0u8; msg.buffer_len()];
    g.bench_function("encode_sign_29", |b| {
        b.iter(|| msg.emit(black_box(&header(9)), &key, &mut buf).unwrap())
    });
    let bytes = msg.to_vec(&header(9), &key).unwrap();
    g.bench_function("verify_decode_29", |b| {
        b.iter(|| {
            let d = Datagram::new_checked(black_box(&bytes[..])).unwrap();
            let h = HeaderRepr::parse(&d).unwrap();
            key.verify(&d).unwrap();
            let mut n = 0;
            for e in Entries::new(d.body(), h.count) {
                n += usize::from(e.unwrap().record.key.client.port() != 0);
            }
            n
        })
    });
    g.finish();
}

fn engine_config(node: u32) -> Config {
    let mut c = Config::new(7, NodeId(node), 1, ClusterKey::derive(b"bench"));
    c.resync_on_start = false;
    c
}

fn engine_paths(c: &mut Criterion) {
    let mut g = c.benchmark_group("sync_engine");
    g.throughput(Throughput::Elements(PER_DATAGRAM as u64));
    // Send path: trigger, stamp, known-table insert, encode, flush+sign, resend queue.
    let mut a = Engine::new(engine_config(1), Instant::ZERO).unwrap();
    let mut i = 0u32;
    g.bench_function("local_to_datagram_29", |b| {
        b.iter(|| {
            for _ in 0..PER_DATAGRAM {
                i = (i + 1) % 200_000;
                a.handle_local(
                    Instant::ZERO,
                    SessionEvent::new(record(i), 3, Some(ConnState::SynRecv)),
                );
            }
            a.flush(Instant::ZERO);
            while a.poll_transmit().is_some() {}
        })
    });
    // Receive path: validation, MAC, replay window, stream, conflict rules, known table, events.
    // Datagrams are made outside the timed part (each may be delivered once: replay window).
    g.bench_function("datagram_to_upserts_29", |b| {
        b.iter_custom(|iters| {
            let mut sender = Engine::new(engine_config(1), Instant::ZERO).unwrap();
            let mut rx = Engine::new(engine_config(2), Instant::ZERO).unwrap();
            let from: SocketAddr = "10.0.0.1:8848".parse().unwrap();
            let mut total = Duration::ZERO;
            let mut left = iters;
            let mut j = 0u32;
            while left > 0 {
                let n = left.min(1000);
                left -= n;
                let mut dgrams = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    for _ in 0..PER_DATAGRAM {
                        j = (j + 1) % 500_000;
                        sender.handle_local(Instant::ZERO, SessionEvent::forced(record(j)));
                    }
                    sender.flush(Instant::ZERO);
                    while let Some(t) = sender.poll_transmit() {
                        dgrams.push(t.bytes);
                    }
                }
                #[allow(clippy::disallowed_methods, reason = "benchmark timing")]
                let start = std::time::Instant::now();
                for d in &dgrams {
                    rx.handle_datagram(Instant::ZERO, from, d);
                    while rx.poll_event().is_some() {}
                }
                total += start.elapsed();
            }
            total
        })
    });
    g.finish();
}

criterion_group!(benches, codec, engine_paths);
criterion_main!(benches);
