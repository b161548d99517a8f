//! Forged, truncated, wrong-cluster, wrong-version, replayed and malformed datagrams are
//! rejected, counted, and change nothing.

mod common;

use std::net::SocketAddr;

use common::*;
use slb_core::rng::SplitMix64;
use slb_core::time::Instant;
use slb_sync::wire::{ClusterKey, Datagram, HEADER_LEN, HeaderRepr, MessageType, TAG_LEN};
use slb_sync::{Config, Engine, Event, NodeId, Stats};

fn from() -> SocketAddr {
    "10.0.0.1:8848".parse().unwrap()
}

/// Updates datagrams from `e` carrying sessions `range` of node 1.
fn updates(e: &mut Engine, range: std::ops::Range<u32>, now: Instant) -> Vec<Vec<u8>> {
    for i in range {
        assert!(e.handle_local(now, third_packet(record(1, i))));
    }
    e.flush(now);
    std::iter::from_fn(|| e.poll_transmit()).map(|t| t.bytes).collect()
}

fn upserts(e: &mut Engine) -> usize {
    std::iter::from_fn(|| e.poll_event()).filter(|ev| matches!(ev, Event::Upsert(_))).count()
}

fn delta(before: &Stats, after: &Stats) -> Vec<(&'static str, u64)> {
    let fields = |s: &Stats| {
        [
            ("truncated", s.rx_truncated),
            ("bad_magic", s.rx_bad_magic),
            ("wrong_version", s.rx_wrong_version),
            ("wrong_cluster", s.rx_wrong_cluster),
            ("own", s.rx_own),
            ("bad_mac", s.rx_bad_mac),
            ("replayed", s.rx_replayed),
            ("malformed", s.rx_malformed),
            ("unknown_type", s.rx_unknown_type),
            ("bad_entries", s.rx_bad_entries),
        ]
    };
    fields(after)
        .into_iter()
        .zip(fields(before))
        .filter(|(a, b)| a.1 != b.1)
        .map(|(a, b)| (a.0, a.1 - b.1))
        .collect()
}

/// Delivers `bytes` to `b` and returns (upserts produced, counters that moved).
fn deliver(b: &mut Engine, bytes: &[u8]) -> (usize, Vec<(&'static str, u64)>) {
    let before = b.stats().clone();
    b.handle_datagram(Instant::from_millis(1), from(), bytes);
    (upserts(b), delta(&before, b.stats()))
}

#[test]
fn every_kind_of_bad_datagram_is_rejected_and_counted() {
    let t0 = Instant::ZERO;
    let mut a = engine(1, 1, false, t0);
    let mut b = engine(2, 1, false, t0);
    let d = updates(&mut a, 0..3, t0);
    assert_eq!(d.len(), 1);
    let good = d[0].clone();
    let (n, moved) = deliver(&mut b, &good);
    assert_eq!((n, moved), (3, vec![]));

    // Replay of an accepted datagram.
    assert_eq!(deliver(&mut b, &good), (0, vec![("replayed", 1)]));

    // Any flipped bit (here: in the real server's address of an entry) breaks the tag.
    let next = updates(&mut a, 3..4, t0).remove(0);
    let mut forged = next.clone();
    forged[HEADER_LEN + 40] ^= 1;
    assert_eq!(deliver(&mut b, &forged), (0, vec![("bad_mac", 1)]));
    // The genuine one still gets through afterwards: the forgery did not move the window.
    assert_eq!(deliver(&mut b, &next).0, 1);

    // Truncated below header + tag; cut anywhere else the tag fails.
    assert_eq!(deliver(&mut b, &good[..HEADER_LEN + TAG_LEN - 1]), (0, vec![("truncated", 1)]));
    assert_eq!(deliver(&mut b, &[]), (0, vec![("truncated", 1)]));
    assert_eq!(deliver(&mut b, &good[..good.len() - 1]), (0, vec![("bad_mac", 1)]));

    // Another key: a forger without the secret.
    let mut c = Config::new(CLUSTER, NodeId(1), 1, ClusterKey::derive(b"guess"));
    c.resync_on_start = false;
    let mut mallory = Engine::new(c, t0).unwrap();
    let m = updates(&mut mallory, 100..110, t0).remove(0);
    assert_eq!(deliver(&mut b, &m), (0, vec![("bad_mac", 1)]));

    // Another cluster, same key.
    let mut c = Config::new(CLUSTER + 1, NodeId(3), 1, key());
    c.resync_on_start = false;
    let mut other = Engine::new(c, t0).unwrap();
    let o = updates(&mut other, 200..201, t0).remove(0);
    assert_eq!(deliver(&mut b, &o), (0, vec![("wrong_cluster", 1)]));

    // Version and magic are checked before the tag.
    let mut v2 = next.clone();
    v2[4] = 2;
    assert_eq!(deliver(&mut b, &v2), (0, vec![("wrong_version", 1)]));
    let mut junk = next.clone();
    junk[..4].copy_from_slice(b"HTTP");
    assert_eq!(deliver(&mut b, &junk), (0, vec![("bad_magic", 1)]));

    // Our own datagram looped back by multicast.
    let mine = updates(&mut b_clone_sender(), 0..1, t0).remove(0);
    assert_eq!(deliver(&mut b, &mine), (0, vec![("own", 1)]));

    // A datagram from an older epoch of a peer that has restarted.
    let stale = updates(&mut a, 4..5, t0).remove(0);
    let mut a2 = engine(1, 2, false, t0);
    let fresh = updates(&mut a2, 5..6, t0).remove(0);
    assert_eq!(deliver(&mut b, &fresh).0, 1);
    assert_eq!(deliver(&mut b, &stale), (0, vec![("replayed", 1)]));

    assert_eq!(b.stats().entries_applied, 5);
}

/// An engine with node b's identity (node 2), to produce "own" datagrams.
fn b_clone_sender() -> Engine {
    engine(2, 1, false, Instant::ZERO)
}

/// Builds an authenticated datagram with an arbitrary body, as a buggy or newer peer could.
fn signed(ty: u8, seq: u64, count: u16, body: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0u8; HEADER_LEN + body.len() + TAG_LEN];
    let h = HeaderRepr {
        msg_type: ty,
        flags: 0,
        cluster_id: CLUSTER,
        node_id: 9,
        epoch: 1,
        seq,
        stream: seq,
        count,
    };
    let mut d = Datagram::new_unchecked(&mut bytes[..]);
    h.emit(&mut d);
    d.body_mut().copy_from_slice(body);
    key().sign(&mut d);
    bytes
}

#[test]
fn authenticated_but_malformed_bodies_are_counted() {
    let mut b = engine(2, 1, false, Instant::ZERO);
    assert_eq!(deliver(&mut b, &signed(99, 1, 0, &[])), (0, vec![("unknown_type", 1)]));
    assert_eq!(
        deliver(&mut b, &signed(MessageType::Heartbeat as u8, 2, 0, &[1, 2])),
        (0, vec![("malformed", 1)])
    );
    // An entry whose length field overruns the body: counted as a bad entry.
    let mut body = vec![0u8; 60];
    body[..2].copy_from_slice(&200u16.to_be_bytes());
    assert_eq!(
        deliver(&mut b, &signed(MessageType::Updates as u8, 3, 1, &body)),
        (0, vec![("bad_entries", 1)])
    );
    // A valid entry followed by junk: the entry is applied, the junk counted.
    let mut a = engine(1, 1, false, Instant::ZERO);
    let good = updates(&mut a, 0..1, Instant::ZERO).remove(0);
    let mut body = good[HEADER_LEN..good.len() - TAG_LEN].to_vec();
    body.extend_from_slice(&[0xff; 7]);
    assert_eq!(
        deliver(&mut b, &signed(MessageType::Updates as u8, 4, 1, &body)),
        (1, vec![("bad_entries", 1)])
    );
    // Random bytes of every length up to 300 never panic and are all counted somewhere.
    let mut rng = SplitMix64::new(0x1234_5678_9abc_def0);
    for len in 0..300 {
        let bytes = rng.bytes(len);
        let before = b.stats().rx_datagrams;
        b.handle_datagram(Instant::ZERO, from(), &bytes);
        assert_eq!(b.stats().rx_datagrams, before + 1);
    }
    let s = b.stats();
    assert_eq!(s.rx_truncated + s.rx_bad_magic, 300, "random bytes stop at length or magic");
}
