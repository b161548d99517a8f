//! The session table against a `HashMap` oracle, driven by random operation sequences (the same
//! operation language and interpreter the `session_table` fuzz target uses), plus the concurrent
//! table against the plain one, and a multi-threaded smoke test.

mod common;

use std::cell::RefCell;

use common::config;
use proptest::prelude::*;
use slb_core::testing::{Coverage, SessionModel};

#[test]
fn table_matches_hashmap_oracle_on_random_byte_programs() {
    let total = RefCell::new(Coverage::default());
    proptest!(config(192), |(bytes in prop::collection::vec(any::<u8>(), 0..900))| {
        match SessionModel::run(&bytes) {
            Ok(c) => *total.borrow_mut() += c,
            Err(d) => prop_assert!(false, "{}", d),
        }
    });
    let c = total.into_inner();
    println!("{c:?}");
    // The random programs reach every path the model is there to check.
    assert!(c.inserted > 1000, "{c:?}");
    assert!(c.refused.iter().all(|&n| n > 10), "every refusal kind: {c:?}");
    assert!(c.found_outbound > 100 && c.state_changes > 100, "{c:?}");
    assert!(c.expired_lazily > 10 && c.swept > 100, "{c:?}");
    assert!(c.evicted.iter().all(|&n| n > 10), "both eviction classes: {c:?}");
    assert!(c.prepared_lookups > 1000, "burst-prepared lookups, mostly stale hints: {c:?}");
    assert!(c.reverse_only_lookups > 100, "hints of keys marked reverse-only: {c:?}");
}

use std::sync::Arc;

use slb_core::backend::{BackendId, RuntimeRegistry};
use slb_core::flow::{FlowKey, Protocol};
use slb_core::session::{ConcurrentSessionTable, Session, SessionTable, TableConfig};
use slb_core::testing::{ModelConfig, SessionOp, decode};
use slb_core::time::Instant;

type Snapshot = Vec<(FlowKey, Option<FlowKey>, Session<u32>)>;

/// The plain and the concurrent table side by side; every outcome must agree.
struct Pair {
    plain: SessionTable<u32>,
    conc: ConcurrentSessionTable<u32>,
    regs: [Arc<RuntimeRegistry>; 2],
    /// Sessions ever inserted: a bound on the slots a full sweep must visit.
    inserted: usize,
    shards: usize,
    now: Instant,
    fresh: u32,
}

impl Pair {
    fn new(cfg: ModelConfig, shards: usize) -> Self {
        let tc = TableConfig {
            capacity: cfg.capacity,
            max_half_open: cfg.max_half_open,
            ..TableConfig::default()
        };
        let regs = [Arc::new(RuntimeRegistry::new()), Arc::new(RuntimeRegistry::new())];
        Pair {
            plain: SessionTable::with_registry(tc, Arc::clone(&regs[0])),
            conc: ConcurrentSessionTable::new(tc, shards, Arc::clone(&regs[1])),
            regs,
            inserted: 0,
            shards,
            now: Instant::from_secs(1),
            fresh: 0,
        }
    }

    fn snapshot_plain(&self) -> Snapshot {
        let mut v: Snapshot =
            self.plain.iter().map(|s| (s.forward, s.reverse, s.session.clone())).collect();
        v.sort_by_key(|e| e.0);
        v
    }

    fn snapshot_conc(&self) -> Snapshot {
        let mut v = Vec::new();
        self.conc.for_each(|s| v.push((s.forward, s.reverse, s.session.clone())));
        v.sort_by_key(|e| e.0);
        v
    }

    fn insert(
        &mut self,
        f: FlowKey,
        r: Option<FlowKey>,
        b: BackendId,
        st: slb_core::session::ConnState,
        ext: u32,
    ) -> String {
        let now = self.now;
        let a = self.plain.insert(now, f, r, Session::new(b, st, now, ext)).map(|_| ());
        let c = self.conc.insert(now, f, r, Session::new(b, st, now, ext));
        self.inserted += usize::from(a.is_ok());
        if a == c { String::new() } else { format!("insert: plain {a:?}, concurrent {c:?}") }
    }

    /// Applies `op` to both; returns a description of any difference.
    fn apply(&mut self, op: &SessionOp, ext: u32) -> String {
        let now = self.now;
        let diff = match *op {
            SessionOp::Insert { key, reverse, backend, state } => {
                self.insert(key.flow(), reverse.map(|r| r.flow()), backend, state, ext)
            }
            SessionOp::Fill(n, state) => {
                let mut d = String::new();
                for _ in 0..n {
                    self.fresh += 1;
                    let f = self.fresh;
                    let src = std::net::Ipv4Addr::new(10, 200, (f >> 8) as u8, f as u8);
                    let k = FlowKey::v4(Protocol::Tcp, src, 2000, [10, 0, 1, 1].into(), 80);
                    d += &self.insert(k, None, BackendId(1 + f % 4), state, ext);
                }
                d
            }
            SessionOp::Get(key) | SessionOp::Lookup(key) => {
                let a = self
                    .plain
                    .lookup(&key.flow(), now)
                    .map(|e| (e.direction(), e.session().clone()));
                let c = self
                    .conc
                    .with_session(&key.flow(), now, |e| (e.direction(), e.session().clone()));
                if a == c {
                    String::new()
                } else {
                    format!("lookup: plain {a:?}, concurrent {c:?}")
                }
            }
            SessionOp::RecordPacket(key) => {
                let a = self.plain.lookup(&key.flow(), now).map(|mut e| e.record_packet(now));
                let c = self.conc.with_session(&key.flow(), now, |e| e.record_packet(now));
                if a == c {
                    String::new()
                } else {
                    format!("record: plain {a:?}, concurrent {c:?}")
                }
            }
            SessionOp::SetState(key, st) => {
                let a = self.plain.lookup(&key.flow(), now).map(|mut e| e.set_state(st, now));
                let c = self.conc.with_session(&key.flow(), now, |e| e.set_state(st, now));
                if a == c {
                    String::new()
                } else {
                    format!("set_state: plain {a:?}, concurrent {c:?}")
                }
            }
            SessionOp::SetBackend(key, b) => {
                let a = self.plain.lookup(&key.flow(), now).map(|mut e| e.set_backend(b));
                let c = self.conc.with_session(&key.flow(), now, |e| e.set_backend(b));
                if a == c {
                    String::new()
                } else {
                    format!("set_backend: plain {a:?}, concurrent {c:?}")
                }
            }
            SessionOp::Remove(key) | SessionOp::RemoveEntry(key) => {
                let (a, c) = (self.plain.remove(&key.flow()), self.conc.remove(&key.flow()));
                if a == c {
                    String::new()
                } else {
                    format!("remove: plain {a:?}, concurrent {c:?}")
                }
            }
            SessionOp::Advance(d) => {
                self.now += d;
                String::new()
            }
            SessionOp::Expire(budget) if self.shards == 1 => {
                let (a, c) = (self.plain.expire(now, budget), self.conc.expire(now, budget));
                if a == c { String::new() } else { format!("expire: plain {a}, concurrent {c}") }
            }
            SessionOp::Expire(_) | SessionOp::ExpireAll => {
                let all = self.inserted + 1;
                let (a, c) = (self.plain.expire(now, all), self.conc.expire(now, all));
                if a == c {
                    String::new()
                } else {
                    format!("expire all: plain {a}, concurrent {c}")
                }
            }
            // The concurrent table has no per-backend removal.
            SessionOp::RemoveBackend(_) => String::new(),
        };
        if !diff.is_empty() {
            return diff;
        }
        let (a, c) = (self.snapshot_plain(), self.snapshot_conc());
        if a != c {
            return format!("contents differ:\n plain {a:?}\n concurrent {c:?}");
        }
        for b in 1..=4 {
            let counts = |r: &RuntimeRegistry| {
                r.get(BackendId(b)).map_or((0, 0), |x| (x.active(), x.inactive()))
            };
            let (x, y) = (counts(&self.regs[0]), counts(&self.regs[1]));
            if x != y {
                return format!("backend {b} counters: plain {x:?}, concurrent {y:?}");
            }
        }
        String::new()
    }
}

fn run_pair(bytes: &[u8], shards: usize, big: bool) -> Result<(), String> {
    let (mut cfg, ops) = decode(bytes);
    if big {
        // Several shards split the capacity; with room to spare no shard evicts.
        cfg = ModelConfig { capacity: 1 << 16, max_half_open: 1 << 16 };
    }
    let mut pair = Pair::new(cfg, shards);
    for (i, op) in ops.iter().enumerate() {
        let d = pair.apply(op, i as u32);
        if !d.is_empty() {
            return Err(format!("step {i} {op:?}: {d}"));
        }
    }
    Ok(())
}

#[test]
fn concurrent_table_with_one_shard_behaves_like_the_plain_one() {
    proptest!(config(128), |(bytes in prop::collection::vec(any::<u8>(), 0..900))| {
        if let Err(d) = run_pair(&bytes, 1, false) {
            prop_assert!(false, "{}", d);
        }
    });
}

#[test]
fn concurrent_table_with_many_shards_behaves_like_the_plain_one() {
    proptest!(config(128), |(bytes in prop::collection::vec(any::<u8>(), 0..900))| {
        if let Err(d) = run_pair(&bytes, 4, true) {
            prop_assert!(false, "{}", d);
        }
    });
}

#[test]
fn two_threads_share_a_concurrent_table() {
    use slb_core::session::{ConnState, Direction};
    use std::net::Ipv4Addr;
    use std::sync::Barrier;

    const OWN: u16 = 2000;
    const SHARED: u16 = 1000;
    let registry = Arc::new(RuntimeRegistry::new());
    let table: ConcurrentSessionTable<u32> =
        ConcurrentSessionTable::new(TableConfig::default(), 8, Arc::clone(&registry));
    let vip = Ipv4Addr::new(10, 0, 0, 100);
    let own = |t: u8, i: u16| FlowKey::v4(Protocol::Tcp, Ipv4Addr::new(10, 1, t, 1), i, vip, 80);
    let own_rev =
        |t: u8, i: u16| FlowKey::v4(Protocol::Tcp, Ipv4Addr::new(10, 9, t, 1), 80, vip, i);
    let shared = |i: u16| FlowKey::v4(Protocol::Udp, Ipv4Addr::new(10, 2, 0, 1), i, vip, 53);
    let shared_rev = |i: u16| FlowKey::v4(Protocol::Udp, Ipv4Addr::new(10, 8, 0, 1), 53, vip, i);
    let now = Instant::from_secs(1);
    let barrier = Barrier::new(2);
    let wins: Vec<usize> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2u8)
            .map(|t| {
                let (table, barrier) = (&table, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    let mut won = 0;
                    for i in 0..OWN {
                        let sess =
                            Session::new(BackendId(1), ConnState::Established, now, u32::from(t));
                        table.insert(now, own(t, i), Some(own_rev(t, i)), sess).unwrap();
                        if i < SHARED {
                            let sess = Session::new(BackendId(2), ConnState::Udp, now, 9);
                            match table.insert(now, shared(i), Some(shared_rev(i)), sess) {
                                Ok(()) => won += 1,
                                Err(e) => assert_eq!(e, slb_core::session::InsertError::Exists),
                            }
                        }
                    }
                    for i in 0..OWN {
                        let got = table.with_session(&own_rev(t, i), now, |e| {
                            (e.direction(), e.session().ext, e.keys().0)
                        });
                        assert_eq!(got, Some((Direction::Outbound, u32::from(t), own(t, i))));
                    }
                    barrier.wait();
                    for i in 0..SHARED {
                        let n = table.with_session(&shared(i), now, |e| e.record_packet(now));
                        assert!(matches!(n, Some(1 | 2)), "shared {i}: {n:?}");
                        let other = table.with_session(&own(1 - t, i), now, |e| e.session().ext);
                        assert_eq!(other, Some(u32::from(1 - t)));
                    }
                    barrier.wait();
                    for i in (0..OWN).step_by(2) {
                        assert!(table.remove(&own_rev(t, i)).is_some());
                    }
                    won
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(wins.iter().sum::<usize>(), usize::from(SHARED), "each shared key inserted once");
    assert_eq!(table.len(), usize::from(OWN) + usize::from(SHARED));
    for i in 0..SHARED {
        let n = table.with_session(&shared_rev(i), now, |e| e.session().packets_in);
        assert_eq!(n, Some(2), "both threads counted a packet on shared {i}");
    }
    assert_eq!(registry.get(BackendId(1)).unwrap().active(), u32::from(OWN));
    assert_eq!(registry.get(BackendId(2)).unwrap().inactive(), u32::from(SHARED));
}

#[test]
fn fuzz_seed_corpus_replays_cleanly() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/session_table");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("the session_table seed corpus") {
        let path = entry.expect("corpus entry").path();
        let bytes = std::fs::read(&path).expect("seed");
        if let Err(d) = SessionModel::run(&bytes) {
            panic!("{}: {d}", path.display());
        }
        n += 1;
    }
    assert!(n >= 5, "{n} seeds");
}
