//! Fuzz harnesses (feature `sim`), shared by the cargo-fuzz targets in `fuzz/` and by the test
//! that replays their committed corpora, so `cargo test` catches regressions without a fuzzer.
//!
//! Both take arbitrary bytes, must never panic, and check the engine's bounds.

use std::net::SocketAddr;
use std::time::Duration;

use slb_core::flow::Protocol;
use slb_core::session::ConnState;
use slb_core::time::Instant;

use crate::engine::{Config, Destination, Engine, Event, SessionEvent};
use crate::types::{ForwardMode, NodeId, SessionKey, SessionRecord};
use crate::wire::{
    ClusterKey, Datagram, Entries, EntryView, HEADER_LEN, HeaderRepr, TAG_LEN, decode_verified,
};

const CLUSTER: u32 = 0x5eed;

fn key() -> ClusterKey {
    ClusterKey::from_bytes([7; 32])
}

/// Appends a valid tag to `data` (taken as header + body), so the fuzzer reaches the parsers
/// behind authentication.
fn signed(data: &[u8], fix_header: Option<(u32, u32)>) -> Vec<u8> {
    let mut v = data.to_vec();
    if v.len() < HEADER_LEN {
        v.resize(HEADER_LEN, 0);
    }
    v.extend_from_slice(&[0; TAG_LEN]);
    if let Some((node, epoch)) = fix_header {
        let mut d = Datagram::new_unchecked(&mut v[..]);
        let h = HeaderRepr::parse(&d).unwrap_or(HeaderRepr {
            msg_type: 1,
            flags: 0,
            cluster_id: CLUSTER,
            node_id: node,
            epoch,
            seq: 1,
            stream: 1,
            count: 0,
        });
        HeaderRepr { cluster_id: CLUSTER, node_id: node, epoch, ..h }.emit(&mut d);
    }
    key().sign(&mut Datagram::new_unchecked(&mut v[..]));
    v
}

fn small_config(node: u32) -> Config {
    let mut c = Config::new(CLUSTER, NodeId(node), 1, key());
    c.max_entries_per_origin = 64;
    c.resend_capacity = 16;
    c.max_reorder = 64;
    c.max_peers = 4;
    c.max_transmit_queue = 128;
    c.max_event_queue = 128;
    c.max_snapshot_entries = 96;
    c.max_resync_sessions = 2;
    c
}

/// Decoding untrusted bytes: the raw views, the full decoder, and an engine, both on the
/// bytes as they are and with a valid tag appended.
pub fn datagram_case(data: &[u8]) {
    let _ = decode_verified(&key(), data);
    if let Ok(v) = EntryView::new_checked(data) {
        let _ = (v.client(), v.virt(), v.real(), v.local(), v.extensions().count());
        let _ = crate::SyncedRecord::parse(&v);
    }
    for e in Entries::new(data, data.first().copied().map_or(0, u16::from)) {
        let _ = e;
    }
    let mut e = Engine::new(small_config(1), Instant::ZERO).expect("valid config");
    let from: SocketAddr = "192.0.2.9:8848".parse().expect("literal");
    e.handle_datagram(Instant::ZERO, from, data);
    let s = signed(data, None);
    let _ = decode_verified(&key(), &s);
    e.handle_datagram(Instant::ZERO, from, &s);
    let s = signed(data, Some((2, 1)));
    e.handle_datagram(Instant::from_millis(1), from, &s);
    e.handle_timeout(Instant::from_secs(1));
    while e.poll_transmit().is_some() || e.poll_event().is_some() {}
    let st = e.stats();
    assert_eq!(st.rx_datagrams, 3);
}

/// A byte reader that yields zeros when exhausted.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        let Some((&b, rest)) = self.0.split_first() else { return 0 };
        self.0 = rest;
        b
    }

    fn take(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
}

fn session(i: u8, state: u8, real: u8) -> SessionRecord {
    let v6 = i & 0x80 != 0;
    let client: SocketAddr = if v6 {
        format!("[2001:db8::{}]:{}", i, 1000 + u16::from(i)).parse().expect("literal")
    } else {
        SocketAddr::from(([192, 0, 2, i], 1000 + u16::from(i)))
    };
    let virt: SocketAddr = if v6 {
        "[2001:db8::ffff]:80".parse().expect("literal")
    } else {
        SocketAddr::from(([198, 51, 100, 1], 80))
    };
    let state = ConnState::from_code(state % 10).unwrap_or(ConnState::Established);
    let mut r = SessionRecord::new(
        SessionKey { proto: Protocol::Tcp, client, virt },
        SocketAddr::from(([10, 0, 2, real % 4], 80)),
        if real & 4 != 0 { ForwardMode::FullNat } else { ForwardMode::Nat },
        state,
        Duration::from_millis(u64::from(real) * 50),
    );
    if r.mode == ForwardMode::FullNat {
        r.local = Some(SocketAddr::from(([10, 0, 2, 1], 5000 + u16::from(i))));
    }
    r
}

/// Arbitrary sequences of local events, deliveries (dropped, duplicated, reordered, corrupted),
/// raw datagrams and time steps on three engines. Checks that every engine stays within its
/// bounds and never asks to be woken in the past.
pub fn engine_case(data: &[u8]) {
    let mut r = Bytes(data);
    let mut now = Instant::ZERO;
    let mut engines: Vec<Engine> = (1..=3)
        .map(|n| {
            let mut c = small_config(n);
            c.resync_on_start = n == 3;
            Engine::new(c, now).expect("valid config")
        })
        .collect();
    let addr = |i: usize| SocketAddr::from(([10, 0, 0, i as u8 + 1], 8848));
    let mut tables: Vec<Vec<SessionRecord>> = vec![Vec::new(); 3];
    let mut flight: Vec<(usize, usize, Vec<u8>)> = Vec::new();
    for _ in 0..256 {
        if r.0.is_empty() {
            break;
        }
        let op = r.u8();
        let i = usize::from(r.u8() % 3);
        match op % 8 {
            0 | 1 => {
                let (s, st, real, pk) = (r.u8(), r.u8(), r.u8(), r.u8());
                let rec = session(s, st, real);
                if tables[i].len() < 200 {
                    tables[i].push(rec.clone());
                }
                let prev = ConnState::from_code(r.u8() % 10);
                let ev = SessionEvent {
                    record: rec,
                    packets_in: u32::from(pk),
                    previous_state: prev,
                    force: op & 0x80 != 0,
                };
                engines[i].handle_local(now, ev);
            }
            2 | 3 => {
                // Deliver (or drop, duplicate, corrupt) an in-flight datagram.
                if flight.is_empty() {
                    continue;
                }
                let k = usize::from(r.u8()) % flight.len();
                let how = r.u8();
                let (from, to, mut bytes) =
                    if how & 1 == 0 { flight.swap_remove(k) } else { flight[k].clone() };
                if how & 2 != 0 && !bytes.is_empty() {
                    let at = usize::from(r.u8()) % bytes.len();
                    bytes[at] ^= r.u8() | 1;
                }
                if how & 4 == 0 {
                    engines[to].handle_datagram(now, addr(from), &bytes);
                }
            }
            4 => {
                let n = usize::from(r.u8());
                let raw = r.take(n).to_vec();
                let fixed = signed(&raw, Some((u32::from(r.u8() % 4) + 1, 1)));
                engines[i].handle_datagram(now, addr(3), &raw);
                engines[i].handle_datagram(now, addr(3), &fixed);
            }
            5 | 6 => {
                now += Duration::from_micros(u64::from(r.u8()) * 997 + 1);
                for e in engines.iter_mut() {
                    if e.poll_timeout().is_some_and(|t| t <= now) {
                        e.handle_timeout(now);
                        let next = e.poll_timeout().expect("heartbeats keep a timer");
                        assert!(
                            next > now,
                            "asked to be woken in the past: {next:?} <= {now:?}: {e:#?}"
                        );
                    }
                }
            }
            _ => {
                now += Duration::from_secs(u64::from(r.u8() % 8));
            }
        }
        // Outputs: datagrams onto the in-flight list (bounded), events to a tiny owner.
        for (j, e) in engines.iter_mut().enumerate() {
            while let Some(t) = e.poll_transmit() {
                let targets: Vec<usize> = match t.dest {
                    Destination::Group => (0..3).filter(|&x| x != j).collect(),
                    Destination::Peer(a) => (0..3).filter(|&x| addr(x) == a).collect(),
                };
                for to in targets {
                    if flight.len() < 512 {
                        flight.push((j, to, t.bytes.clone()));
                    }
                }
            }
            while let Some(ev) = e.poll_event() {
                if let Event::SnapshotRequested(req) = ev {
                    e.provide_snapshot(now, req, tables[j].clone());
                }
            }
            let c = e.config();
            let bound = c.max_entries_per_origin * (c.max_peers + 1);
            assert!(e.known_sessions() <= bound, "known sessions beyond bounds");
            assert!(e.peers().len() <= c.max_peers);
        }
    }
}
