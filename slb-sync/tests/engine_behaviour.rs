//! The engine's sending rules, bounds and conflict handling, driven by hand.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use slb_core::session::ConnState;
use slb_core::time::Instant;
use slb_sync::wire::{Message, NackRange, decode_verified};
use slb_sync::{Destination, Engine, Event, ForwardMode, NodeId, SessionEvent, SessionRecord};

fn plain(i: u32) -> SessionRecord {
    // IPv4 NAT without extensions: 48 bytes on the wire.
    let mut r = record(1, i);
    r.key.client = SocketAddr::from(([192, 0, 2, (i % 250) as u8], 1000 + i as u16));
    r.key.virt = SocketAddr::from(([198, 51, 100, 1], 80));
    r.mode = ForwardMode::Nat;
    r.local = None;
    r.client_next_hop = None;
    r
}

fn drain(e: &mut Engine) -> Vec<(Destination, Message)> {
    std::iter::from_fn(|| e.poll_transmit())
        .map(|t| (t.dest, decode_verified(&key(), &t.bytes).unwrap().1))
        .collect()
}

fn events(e: &mut Engine) -> Vec<Event> {
    std::iter::from_fn(|| e.poll_event()).collect()
}

#[test]
fn batches_flush_when_full_or_after_the_delay() {
    let t0 = Instant::from_secs(1);
    let mut a = engine(1, 1, false, t0);
    a.handle_timeout(t0);
    assert!(matches!(&drain(&mut a)[..], [(Destination::Group, Message::Heartbeat { .. })]));
    for i in 0..29 {
        assert!(a.handle_local(t0, third_packet(plain(i))));
    }
    assert!(drain(&mut a).is_empty(), "29 entries fit in 1472 bytes: still waiting");
    assert_eq!(a.poll_timeout(), Some(t0 + ms(5)));
    let t1 = t0 + ms(1);
    a.handle_local(t1, third_packet(plain(29)));
    let out = drain(&mut a);
    let [(Destination::Group, Message::Updates { data_seq: 1, entries })] = &out[..] else {
        panic!("{out:?}")
    };
    assert_eq!(entries.len(), 29);
    assert_eq!(entries[0].record, plain(0));
    assert_eq!(a.poll_timeout(), Some(t1 + ms(5)), "the 30th entry waits at most 5 ms");
    a.handle_timeout(t1 + ms(4));
    assert!(drain(&mut a).is_empty());
    a.handle_timeout(t1 + ms(5));
    let out = drain(&mut a);
    assert!(
        matches!(&out[..], [(_, Message::Updates { data_seq: 2, entries })] if entries.len() == 1)
    );
    let s = a.stats();
    assert_eq!((s.tx_updates, s.tx_entries, s.local_events), (2, 30, 30));
}

#[test]
fn the_default_trigger_is_ipvs_3_50() {
    let mut a = engine(1, 1, false, Instant::ZERO);
    let r = plain(0);
    let ev = |n, prev, st| {
        let mut r = r.clone();
        r.state = st;
        SessionEvent::new(r, n, prev)
    };
    use ConnState::*;
    assert!(!a.handle_local(Instant::ZERO, ev(1, None, SynRecv)));
    assert!(!a.handle_local(Instant::ZERO, ev(2, Some(SynRecv), Established)));
    assert!(a.handle_local(Instant::ZERO, ev(3, Some(Established), Established)));
    assert!(!a.handle_local(Instant::ZERO, ev(4, Some(Established), Established)));
    assert!(a.handle_local(Instant::ZERO, ev(5, Some(Established), CloseWait)));
    assert!(!a.handle_local(Instant::ZERO, ev(6, Some(CloseWait), CloseWait)));
    assert!(a.handle_local(Instant::ZERO, ev(53, Some(CloseWait), CloseWait)));
    assert!(a.handle_local(Instant::ZERO, SessionEvent::forced(r.clone())));
    assert_eq!(a.stats().local_filtered, 4);
}

#[test]
fn nacks_are_answered_from_the_bounded_resend_queue() {
    let t0 = Instant::ZERO;
    let mut c = config(1, 1);
    c.resync_on_start = false;
    c.resend_capacity = 4;
    let mut a = Engine::new(c, t0).unwrap();
    for i in 0..6 {
        a.handle_local(t0, third_packet(plain(i)));
        a.flush(t0);
    }
    drain(&mut a);
    // Node 2 asks for datagrams 1..=6: 1 and 2 are gone, 3..=6 are resent to it alone, and a
    // heartbeat tells it the oldest one still retained.
    let mut b = engine(2, 1, false, t0);
    let peer: SocketAddr = "10.0.0.2:9".parse().unwrap();
    let nack = Message::Nack {
        target: NodeId(1),
        target_epoch: 1,
        ranges: vec![NackRange { first: 1, last: 6 }],
    };
    let mut bytes = vec![];
    // Let node 2's engine build a correctly signed NACK by proxy: encode with its header.
    b.handle_timeout(t0);
    let hb = b.poll_transmit().unwrap().bytes;
    let h =
        slb_sync::wire::HeaderRepr::parse(&slb_sync::wire::Datagram::new_checked(&hb[..]).unwrap())
            .unwrap();
    bytes.extend(nack.to_vec(&slb_sync::wire::HeaderRepr { seq: h.seq + 1, ..h }, &key()).unwrap());
    a.handle_datagram(t0, peer, &bytes);
    let out = drain(&mut a);
    let seqs: Vec<u64> = out
        .iter()
        .filter_map(|(d, m)| match m {
            Message::Updates { data_seq, .. } if *d == Destination::Peer(peer) => Some(*data_seq),
            _ => None,
        })
        .collect();
    assert_eq!(seqs, vec![3, 4, 5, 6]);
    assert!(out.iter().any(|(d, m)| *d == Destination::Peer(peer)
        && matches!(m, Message::Heartbeat { last_data_seq: 6, oldest_retained: 3 })));
    let s = a.stats();
    assert_eq!((s.nacks_received, s.nack_unavailable, s.tx_retransmits), (1, 2, 4));
}

#[test]
fn transmit_and_event_queues_are_bounded() {
    let t0 = Instant::ZERO;
    let mut c = config(1, 1);
    c.resync_on_start = false;
    c.trigger = None;
    c.max_transmit_queue = 3;
    let mut a = Engine::new(c, t0).unwrap();
    for i in 0..10 {
        a.handle_local(t0, SessionEvent::new(plain(i), 0, None));
        a.flush(t0);
    }
    assert_eq!(a.stats().tx_queue_full, 7);
    assert_eq!(drain(&mut a).len(), 3);

    let mut c = config(2, 1);
    c.resync_on_start = false;
    c.max_event_queue = 5;
    let mut b = Engine::new(c, t0).unwrap();
    let mut a = engine(1, 1, false, t0);
    for i in 0..20 {
        a.handle_local(t0, third_packet(plain(i)));
    }
    a.flush(t0);
    let from: SocketAddr = "10.0.0.1:1".parse().unwrap();
    while let Some(t) = a.poll_transmit() {
        b.handle_datagram(t0, from, &t.bytes);
    }
    // Ready + PeerUp + 3 upserts fit; the other 17 upserts are dropped and counted.
    assert_eq!(events(&mut b).len(), 5);
    assert_eq!(b.stats().events_dropped, 17);
}

#[test]
fn a_peer_entry_never_replaces_a_live_local_session_with_another_target() {
    let t0 = Instant::ZERO;
    let mut a = engine(1, 1, false, t0);
    let mut b = engine(2, 1, false, t0);
    events(&mut b);
    let mine = plain(0);
    let mut theirs = mine.clone();
    theirs.real = "10.0.9.9:80".parse().unwrap();
    assert!(b.handle_local(t0, third_packet(mine.clone())));
    // Node 1's stamp is higher (it synced more sessions), yet node 2 keeps its own.
    for i in 1..5 {
        a.handle_local(t0, third_packet(plain(i)));
    }
    a.handle_local(t0, third_packet(theirs.clone()));
    a.flush(t0);
    let from: SocketAddr = "10.0.0.1:1".parse().unwrap();
    while let Some(t) = a.poll_transmit() {
        b.handle_datagram(t0, from, &t.bytes);
    }
    let ev = events(&mut b);
    assert_eq!(ev.iter().filter(|e| matches!(e, Event::Upsert(_))).count(), 4);
    assert!(!ev.iter().any(|e| matches!(e, Event::Upsert(s) if s.record.key == mine.key)));
    assert_eq!(b.stats().conflicts_local_kept, 1);

    // The same flow with the same target moving to node 1 is accepted (ECMP change).
    let mut moved = mine.clone();
    moved.state = ConnState::FinWait;
    a.handle_local(t0 + ms(1), SessionEvent::new(moved.clone(), 9, Some(ConnState::Established)));
    a.flush(t0 + ms(1));
    while let Some(t) = a.poll_transmit() {
        b.handle_datagram(t0 + ms(1), from, &t.bytes);
    }
    assert!(events(&mut b).iter().any(|e| matches!(e, Event::Upsert(s) if s.record == moved)));
}

#[test]
fn config_is_validated() {
    let mut c = config(0, 1);
    assert!(Engine::new(c.clone(), Instant::ZERO).is_err());
    c.node = NodeId(1);
    c.max_datagram = 100;
    assert!(Engine::new(c.clone(), Instant::ZERO).is_err());
    c.max_datagram = 9000;
    c.heartbeat_interval = Duration::ZERO;
    assert!(Engine::new(c.clone(), Instant::ZERO).is_err());
    c.heartbeat_interval = ms(100);
    assert!(Engine::new(c, Instant::ZERO).is_ok());
}
