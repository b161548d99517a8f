//! Replication between two real nodes over UDP on loopback (unicast transport, threaded
//! drivers): throughput at full offered load, and replication lag (local event handed to node
//! A -> upsert event at node B) at a fixed offered rate.
//!
//! `cargo bench --bench sync_replication` (optional args: `--sessions N --rate R
//! --known-capacity K --warm 1`)
//!
//! Not a criterion bench: it measures wall time end to end across threads and sockets.
#![allow(clippy::disallowed_methods, reason = "a benchmark reads the wall clock")]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant as StdInstant};

use slb::core::flow::Protocol;
use slb::core::session::ConnState;
use slb::core::time::Clock;
use slb::sync::transport::{SyncHandle, UnicastTransport, spawn};
use slb::sync::{
    ClusterKey, Config, Engine, Event, ForwardMode, NodeId, SessionEvent, SessionKey, SessionRecord,
};

fn record(i: u32) -> SessionRecord {
    let client = SocketAddr::from((std::net::Ipv4Addr::from(0x0a00_0000u32 | i), 40_000));
    let mut r = SessionRecord::new(
        SessionKey {
            proto: Protocol::Tcp,
            client,
            virt: SocketAddr::from(([198, 51, 100, 1], 443)),
        },
        SocketAddr::from(([10, 255, 2, 11 + (i % 4) as u8], 8080)),
        ForwardMode::FullNat,
        ConnState::Established,
        Duration::from_secs(900),
    );
    r.local = Some(SocketAddr::from(([10, 255, 2, 1], 5000 + (i % 60_000) as u16)));
    r
}

/// CPU time (user + system) this process has used so far, from /proc/self/stat.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which ends with ')'): utime is the 14th field overall.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    // The first field after ')' is field 3 (state); utime and stime are fields 14 and 15.
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| f.get(n - 3).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
    let ticks = field(14) + field(15);
    Duration::from_millis(ticks * 10) // USER_HZ = 100 on Linux
}

struct Run {
    cpu_per_update: Duration,
    offered: f64,
    delivered: usize,
    throughput: f64,
    p50: Duration,
    p99: Duration,
    max: Duration,
    retries: u64,
}

/// What a node's owner does with engine events: B records arrival times of upserts; A answers
/// snapshot requests with the sessions submitted so far (so a receiver that fell too far
/// behind for NACKs recovers through a resync, as a real dataplane would let it).
enum Role {
    Sender(Arc<AtomicUsize>),
    Receiver(Arc<Vec<AtomicU64>>, Arc<AtomicUsize>),
}

fn node(
    id: u32,
    t: UnicastTransport,
    clock: Clock,
    known_capacity: usize,
    role: Role,
) -> SyncHandle {
    let mut c = Config::new(7, NodeId(id), 1, ClusterKey::derive(b"bench"));
    c.resync_on_start = false;
    c.known_capacity = known_capacity;
    let e = Engine::new(c, clock.at(StdInstant::now())).unwrap();
    spawn(e, t, clock, move |e: &mut Engine, now, ev| match (&role, ev) {
        (Role::Receiver(arr, count), Event::Upsert(s)) => {
            if let std::net::IpAddr::V4(a) = s.record.key.client.ip() {
                let i = (u32::from(a) & 0x00ff_ffff) as usize;
                if let Some(slot) = arr.get(i) {
                    if slot.swap(now.as_nanos(), Ordering::Relaxed) == 0 {
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
        (Role::Sender(submitted), Event::SnapshotRequested(req)) => {
            let n = submitted.load(Ordering::Relaxed) as u32;
            e.provide_snapshot(now, req, (1..=n).map(record));
        }
        _ => {}
    })
    .unwrap()
}

/// Hands sessions 1..=n to node A at `rate` per second (0: as fast as possible) in batches of
/// 64, noting when each was handed over; `closing` sends them as entering FIN_WAIT (an update
/// of an existing session) instead of their third packet. Returns full-channel retries.
fn offer(
    a: &SyncHandle,
    n: usize,
    rate: f64,
    closing: bool,
    clock: Clock,
    submitted: &mut [u64],
    submitted_count: &AtomicUsize,
) -> u64 {
    let batch = 64;
    let mut retries = 0u64;
    let start = StdInstant::now();
    let mut i = 0;
    while i < n {
        if rate > 0.0 {
            // Sleep, do not spin: on a 2-core machine a spinning producer takes a core from
            // the nodes it measures.
            let due = start + Duration::from_secs_f64(i as f64 / rate);
            let now = StdInstant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
        let end = (i + batch).min(n);
        let mut evs: Vec<SessionEvent> = (i + 1..=end)
            .map(|k| {
                let mut r = record(k as u32);
                if closing {
                    r.state = ConnState::FinWait;
                    SessionEvent::new(r, 40, Some(ConnState::Established))
                } else {
                    SessionEvent::new(r, 3, Some(ConnState::SynRecv))
                }
            })
            .collect();
        let t = clock.at(StdInstant::now()).as_nanos();
        submitted[i + 1..=end].fill(t);
        // Full channel: back off and retry.
        loop {
            match a.try_submit_batch(evs) {
                Ok(()) => break,
                Err(back) => {
                    evs = back;
                    retries += 1;
                    std::thread::yield_now();
                }
            }
        }
        submitted_count.store(end, Ordering::Relaxed);
        i = end;
    }
    retries
}

/// Offers `n` session updates to node A at `rate` per second (0: as fast as possible) in
/// batches of 64, and waits (bounded) for node B to have them all.
fn run(n: usize, rate: f64, known_capacity: usize, warm: bool) -> Run {
    let ta = UnicastTransport::bind("127.0.0.1:0".parse().unwrap(), vec![]).unwrap();
    let tb = UnicastTransport::bind("127.0.0.1:0".parse().unwrap(), vec![]).unwrap();
    let (aa, ba) = (ta.local_addr().unwrap(), tb.local_addr().unwrap());
    let (mut ta, mut tb) = (ta, tb);
    ta.set_peers(vec![ba]);
    tb.set_peers(vec![aa]);
    let clock = Clock::with_origin(StdInstant::now());
    // Session k (1..=n) lands in slot k.
    let arrivals: Arc<Vec<AtomicU64>> = Arc::new((0..=n).map(|_| AtomicU64::new(0)).collect());
    let count = Arc::new(AtomicUsize::new(0));
    let b = node(2, tb, clock, known_capacity, Role::Receiver(arrivals.clone(), count.clone()));
    let submitted_count = Arc::new(AtomicUsize::new(0));
    let a = node(1, ta, clock, known_capacity, Role::Sender(submitted_count.clone()));
    // Let both see each other's heartbeat first.
    std::thread::sleep(Duration::from_millis(300));

    if warm {
        // Populate both engines' tables with the n sessions first (not measured), then
        // measure updates of existing sessions: the steady state of a running director.
        let mut scratch = vec![0u64; n + 1];
        offer(&a, n, 0.0, false, clock, &mut scratch, &submitted_count);
        let deadline = StdInstant::now() + Duration::from_secs(30);
        while count.load(Ordering::Relaxed) < n && StdInstant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        for x in arrivals.iter() {
            x.store(0, Ordering::Relaxed);
        }
        count.store(0, Ordering::Relaxed);
    }
    let cpu0 = cpu_time();
    let mut submitted = vec![0u64; n + 1];
    let start = StdInstant::now();
    let retries = offer(&a, n, rate, warm, clock, &mut submitted, &submitted_count);
    let offered = n as f64 / start.elapsed().as_secs_f64();
    let deadline = StdInstant::now() + Duration::from_secs(10);
    while count.load(Ordering::Relaxed) < n && StdInstant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    let delivered = count.load(Ordering::Relaxed);
    let cpu_per_update = (cpu_time() - cpu0) / (delivered.max(1) as u32);
    let last = arrivals.iter().map(|x| x.load(Ordering::Relaxed)).max().unwrap_or(0);
    let first = submitted.get(1).copied().unwrap_or(0);
    let throughput =
        delivered as f64 / Duration::from_nanos(last.saturating_sub(first)).as_secs_f64();
    let mut lags: Vec<u64> = (1..=n)
        .filter_map(|k| {
            let at = arrivals[k].load(Ordering::Relaxed);
            (at != 0).then(|| at.saturating_sub(submitted[k]))
        })
        .collect();
    lags.sort_unstable();
    let pct = |p: f64| {
        Duration::from_nanos(
            lags.get(((lags.len() as f64 * p) as usize).min(lags.len().saturating_sub(1)))
                .copied()
                .unwrap_or(0),
        )
    };
    if let (Some(sa), Some(sb)) = (a.status(), b.status()) {
        println!(
            "  A: tx datagrams {} retransmits {} queue-full {} | B: gaps {} nacks {} dup {} unrecoverable {} resyncs {}",
            sa.stats.tx_updates,
            sa.stats.tx_retransmits,
            sa.stats.tx_queue_full,
            sb.stats.gaps_detected,
            sb.stats.nacks_sent,
            sb.stats.rx_duplicate_data,
            sb.stats.gaps_unrecoverable,
            sb.stats.resync_completed
        );
    }
    let r = Run {
        cpu_per_update,
        offered,
        delivered,
        throughput,
        p50: pct(0.50),
        p99: pct(0.99),
        max: pct(1.0),
        retries,
    };
    a.shutdown();
    b.shutdown();
    r
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str, default: f64| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let n = arg("--sessions", 1_000_000.0) as usize;
    let rate = arg("--rate", 200_000.0);
    // Session keys each engine reserves room for (0: grow on demand, with rehash pauses).
    let cap = arg("--known-capacity", 0.0) as usize;
    // 1: populate the tables first and measure updates of existing sessions.
    let warm = arg("--warm", 0.0) != 0.0;
    for (label, r) in [("full offered load", 0.0), ("paced", rate)] {
        let res = run(n, r, cap, warm);
        let label = if warm { format!("{label}, warm tables") } else { label.to_string() };
        println!(
            "sync_replication {label}: {} updates, offered {:.0}/s, delivered {} ({:.0}/s end to end), lag p50 {:?} p99 {:?} max {:?}, full-channel retries {}, CPU (both nodes + producer) {:?}/update",
            n,
            res.offered,
            res.delivered,
            res.throughput,
            res.p50,
            res.p99,
            res.max,
            res.retries,
            res.cpu_per_update
        );
    }
}
