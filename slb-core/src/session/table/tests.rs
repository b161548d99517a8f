use std::net::Ipv4Addr;

use super::family::Slot;
use super::*;
use crate::flow::Protocol;
use crate::session::{ConnState, Timeouts};

fn key(c: u8, port: u16) -> FlowKey {
    FlowKey::v4(Protocol::Tcp, Ipv4Addr::new(10, 0, 1, c), port, Ipv4Addr::new(10, 0, 0, 100), 80)
}

fn rev(c: u8, port: u16) -> FlowKey {
    FlowKey::v4(Protocol::Tcp, Ipv4Addr::new(10, 0, 2, 11), 80, Ipv4Addr::new(10, 0, 1, c), port)
}

fn table(capacity: usize, max_half_open: usize) -> SessionTable {
    SessionTable::new(TableConfig { capacity, max_half_open, ..TableConfig::default() })
}

#[test]
fn forward_and_reverse_lookup_and_counters() {
    let mut t = table(16, 16);
    let b = BackendId(3);
    t.insert(
        Instant::ZERO,
        key(1, 1000),
        Some(rev(1, 1000)),
        Session::new(b, ConnState::SynRecv, Instant::ZERO, ()),
    )
    .unwrap();
    assert_eq!(t.registry().get(b).unwrap().inactive(), 1);
    let mut e = t.lookup(&rev(1, 1000), Instant::from_secs(1)).unwrap();
    assert_eq!(e.direction(), Direction::Outbound);
    assert_eq!(e.record_packet(Instant::from_secs(1)), 1);
    e.set_state(ConnState::Established, Instant::from_secs(1));
    let rt = t.registry().get(b).unwrap();
    assert_eq!((rt.active(), rt.inactive()), (1, 0));
    let (s, d) = t.get(&key(1, 1000)).unwrap();
    assert_eq!((s.state(), d, s.packets_out), (ConnState::Established, Direction::Inbound, 1));
    assert_eq!(s.expires(), Instant::from_secs(901));
    assert_eq!(
        t.insert(
            Instant::ZERO,
            key(1, 1000),
            None,
            Session::new(b, ConnState::Udp, Instant::ZERO, ())
        )
        .unwrap_err(),
        InsertError::Exists
    );
    assert_eq!(
        t.insert(
            Instant::ZERO,
            key(2, 1000),
            Some(rev(1, 1000)),
            Session::new(b, ConnState::Udp, Instant::ZERO, ())
        )
        .unwrap_err(),
        InsertError::ReverseExists
    );
    assert!(t.remove(&rev(1, 1000)).is_some());
    assert!(t.is_empty());
    assert_eq!((rt.active(), rt.inactive()), (0, 0));
}

#[test]
fn expiry_is_lazy_and_swept() {
    let mut t = table(16, 16);
    let b = BackendId(1);
    for c in 0..4 {
        t.insert(
            Instant::ZERO,
            key(c, 1),
            None,
            Session::new(b, ConnState::Close, Instant::ZERO, ()),
        )
        .unwrap();
    }
    assert!(t.lookup(&key(0, 1), Instant::from_secs(9)).is_some());
    assert!(t.lookup(&key(0, 1), Instant::from_secs(10)).is_none(), "CLOSE lasts 10 s");
    assert_eq!(t.len(), 3);
    assert_eq!(
        t.expire(Instant::from_secs(10), 2),
        1,
        "budget covers only two slots, one already free"
    );
    assert_eq!(t.expire(Instant::from_secs(10), 100), 2);
    assert_eq!(t.stats().expired, 4);
}

#[test]
fn syn_flood_evicts_only_half_open() {
    let mut t = table(100, 50);
    let now = Instant::ZERO;
    for c in 0..40 {
        let mut e = t
            .insert(now, key(c, 1), None, Session::new(BackendId(1), ConnState::SynRecv, now, ()))
            .unwrap();
        e.set_state(ConnState::Established, now);
    }
    for p in 0..10_000u16 {
        t.insert(now, key(200, p), None, Session::new(BackendId(1), ConnState::SynRecv, now, ()))
            .unwrap();
    }
    assert_eq!(t.half_open(), 50);
    for c in 0..40 {
        assert_eq!(t.get(&key(c, 1)).unwrap().0.state(), ConnState::Established);
    }
    // Fill to capacity with established flows: further established inserts evict half-open ones,
    // and when nothing evictable remains, they are refused.
    for c in 40..100 {
        let mut e = t
            .insert(now, key(c, 1), None, Session::new(BackendId(1), ConnState::SynRecv, now, ()))
            .unwrap();
        e.set_state(ConnState::Established, now);
    }
    assert_eq!(t.len(), 100);
    assert_eq!(t.half_open(), 0);
    assert_eq!(
        t.insert(now, key(250, 1), None, Session::new(BackendId(1), ConnState::SynRecv, now, ()))
            .unwrap_err(),
        InsertError::Full
    );
    assert_eq!(t.stats().refused_full, 1);
}

#[test]
fn done_sessions_are_evicted_before_refusing() {
    let mut t = table(2, 2);
    let now = Instant::ZERO;
    t.insert(now, key(1, 1), None, Session::new(BackendId(1), ConnState::Established, now, ()))
        .unwrap();
    t.insert(now, key(2, 1), None, Session::new(BackendId(1), ConnState::TimeWait, now, ()))
        .unwrap();
    t.insert(now, key(3, 1), None, Session::new(BackendId(1), ConnState::Udp, now, ())).unwrap();
    assert!(t.get(&key(2, 1)).is_none());
    assert_eq!(t.stats().evicted_done, 1);
}

#[test]
fn ipv6_and_family_mismatch() {
    let mut t = table(4, 4);
    let k6 = FlowKey::new(
        Protocol::Udp,
        "[2001:db8::1]:5000".parse().unwrap(),
        "[2001:db8::100]:53".parse().unwrap(),
    );
    let r6 = FlowKey::new(
        Protocol::Udp,
        "[2001:db8::11]:53".parse().unwrap(),
        "[2001:db8::1]:5000".parse().unwrap(),
    );
    t.insert(
        Instant::ZERO,
        k6,
        Some(r6),
        Session::new(BackendId(1), ConnState::Udp, Instant::ZERO, ()),
    )
    .unwrap();
    assert_eq!(t.get(&r6).unwrap().1, Direction::Outbound);
    assert_eq!(
        t.insert(
            Instant::ZERO,
            key(1, 1),
            Some(r6),
            Session::new(BackendId(1), ConnState::Udp, Instant::ZERO, ())
        )
        .unwrap_err(),
        InsertError::FamilyMismatch
    );
    let all: Vec<_> = t.iter().map(|v| (v.forward, v.reverse)).collect();
    assert_eq!(all, vec![(k6, Some(r6))]);
    assert_eq!(Timeouts::default().udp.as_secs(), 300);
}

#[test]
fn ipv4_entry_fits_the_budget() {
    let n = 200_000u32;
    let config = TableConfig { capacity: n as usize, preallocate: true, ..TableConfig::default() };
    let mut t: SessionTable<u64> = SessionTable::new(config);
    for i in 0..n {
        let f = FlowKey::v4(
            Protocol::Tcp,
            Ipv4Addr::from(0x0a00_0000 + i),
            1000,
            Ipv4Addr::new(10, 0, 0, 100),
            80,
        );
        let r = FlowKey::v4(
            Protocol::Tcp,
            Ipv4Addr::new(10, 0, 2, 11),
            80,
            Ipv4Addr::from(0x0b00_0000 + i),
            5000,
        );
        t.insert(
            Instant::ZERO,
            f,
            Some(r),
            Session::new(BackendId(1), ConnState::Established, Instant::ZERO, 0),
        )
        .unwrap();
    }
    let per = t.memory_bytes() / n as usize;
    assert!(per <= 128, "{per} bytes per IPv4 session with an 8-byte extension");
}

#[test]
fn a_session_re_entering_half_open_is_not_older_than_it_is() {
    // A: half-open, then established, then half-open again (a new SYN on a finished flow).
    // B: half-open the whole time, created after A's first SYN but before its second.
    // The oldest half-open entry is B, so B is evicted first.
    let mut t = table(100, 2);
    let now = Instant::ZERO;
    let s = |st| Session::new(BackendId(1), st, now, ());
    let mut a = t.insert(now, key(1, 1), None, s(ConnState::SynRecv)).unwrap();
    a.set_state(ConnState::Established, now);
    t.insert(now, key(2, 1), None, s(ConnState::SynRecv)).unwrap();
    t.lookup(&key(1, 1), now).unwrap().set_state(ConnState::SynRecv, now);
    t.insert(now, key(3, 1), None, s(ConnState::SynRecv)).unwrap();
    assert!(t.get(&key(1, 1)).is_some(), "A re-entered half-open last and must survive");
    assert!(t.get(&key(2, 1)).is_none(), "B is the oldest half-open session");
    assert_eq!(t.stats().evicted_half_open, 1);
}

#[test]
fn forward_key_and_reverse_key_are_the_two_halves_of_keys() {
    let mut t = table(16, 16);
    let now = Instant::ZERO;
    let k6 = FlowKey::new(
        Protocol::Udp,
        "[2001:db8::1]:5000".parse().unwrap(),
        "[2001:db8::100]:53".parse().unwrap(),
    );
    let s = || Session::new(BackendId(1), ConnState::Udp, now, ());
    t.insert(now, key(1, 1), Some(rev(1, 1)), s()).unwrap();
    t.insert(now, key(2, 1), None, s()).unwrap();
    t.insert(now, k6, Some(k6.reversed()), s()).unwrap();
    for (k, want) in [
        (key(1, 1), (key(1, 1), Some(rev(1, 1)))),
        (rev(1, 1), (key(1, 1), Some(rev(1, 1)))),
        (key(2, 1), (key(2, 1), None)),
        (k6.reversed(), (k6, Some(k6.reversed()))),
    ] {
        let e = t.lookup(&k, now).unwrap();
        assert_eq!(e.keys(), want, "{k}");
        assert_eq!((e.forward_key(), e.reverse_key()), want, "{k}");
    }
}

#[test]
fn memory_regions_cover_the_preallocated_storage() {
    let config = TableConfig { capacity: 10_000, preallocate: true, ..TableConfig::default() };
    let t: SessionTable<u64> = SessionTable::new(config);
    let regions = t.memory_regions();
    assert_eq!(regions.len(), 5, "IPv4 slots, reverse keys, tags, both indexes; nothing for IPv6");
    let total: usize = regions.iter().map(|r| r.1).sum();
    assert!(total <= t.memory_bytes() && total * 10 >= t.memory_bytes() * 9, "{total}");
    assert!(SessionTable::<u64>::new(TableConfig::default()).memory_regions().is_empty());
}

#[test]
fn an_ipv4_slot_is_one_aligned_cache_line() {
    // A session with its forward key, for no dataplane data, 8 bytes (a 64-bit value) or 16
    // (slb-l4's forwarding details, with either alignment): one line, so a lookup by forward
    // key reads one.
    assert_eq!(size_of::<Option<Slot<K4, ()>>>(), 64);
    assert_eq!(size_of::<Option<Slot<K4, u64>>>(), 64);
    assert_eq!(size_of::<Option<Slot<K4, [u16; 8]>>>(), 64);
    assert_eq!(size_of::<Option<Slot<K4, [u64; 2]>>>(), 64);
    assert_eq!(align_of::<Option<Slot<K4, ()>>>(), 64);
    let config = TableConfig { capacity: 100, preallocate: true, ..TableConfig::default() };
    let mut t: SessionTable<u64> = SessionTable::new(config);
    let now = Instant::from_secs(1);
    for c in 0..3 {
        t.insert(
            now,
            key(c, 1),
            Some(rev(c, 1)),
            Session::new(BackendId(1), ConnState::Udp, now, 7),
        )
        .unwrap();
    }
    assert_eq!(t.v4.slots.as_ptr() as usize % 64, 0);
    let per_entry = t.v4.memory_bytes() / 100;
    assert!(per_entry <= 128, "{per_entry} bytes per IPv4 entry");
}
