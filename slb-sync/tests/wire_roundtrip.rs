//! Property tests of the wire format: every message round-trips, every entry round-trips
//! through its view, and arbitrary bytes never panic the decoder.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use proptest::prelude::*;
use slb_core::flow::Protocol;
use slb_core::session::ConnState;
use slb_sync::wire::{
    ClusterKey, EntryView, HeaderRepr, Message, NackRange, ResyncAckRange, decode_verified,
};
use slb_sync::{
    EntryFlags, ForwardMode, NodeId, SeqAdjust, SeqDelta, SessionKey, SessionRecord, SyncedRecord,
};

fn ip(v6: bool) -> impl Strategy<Value = IpAddr> {
    if v6 {
        any::<[u8; 16]>().prop_map(IpAddr::from).boxed()
    } else {
        any::<[u8; 4]>().prop_map(IpAddr::from).boxed()
    }
}

fn sock(v6: bool) -> impl Strategy<Value = SocketAddr> {
    (ip(v6), any::<u16>()).prop_map(|(i, p)| SocketAddr::new(i, p))
}

fn delta() -> impl Strategy<Value = SeqDelta> {
    any::<(u32, u32, u32)>().prop_map(|(a, b, c)| SeqDelta { init_seq: a, delta: b, prev_delta: c })
}

fn record() -> impl Strategy<Value = SyncedRecord> {
    (any::<bool>(), any::<bool>()).prop_flat_map(|(front_v6, back_v6)| {
        let key = (
            prop::sample::select(vec![
                Protocol::Tcp,
                Protocol::Udp,
                Protocol::Icmp,
                Protocol::Icmpv6,
            ]),
            sock(front_v6),
            sock(front_v6),
        )
            .prop_map(|(proto, client, virt)| SessionKey { proto, client, virt });
        let mode = prop::sample::select(vec![
            ForwardMode::Nat,
            ForwardMode::FullNat,
            ForwardMode::Dr,
            ForwardMode::Tunnel,
        ]);
        (
            key,
            sock(back_v6),
            proptest::option::of(sock(back_v6)),
            mode,
            prop::sample::select(ConnState::ALL.to_vec()),
            0u32..=u32::MAX,
            any::<u16>().prop_map(|f| EntryFlags(f & !0x0008)),
            proptest::option::of(
                (delta(), delta()).prop_map(|(i, o)| SeqAdjust { inbound: i, outbound: o }),
            ),
            proptest::option::of(any::<[u8; 6]>()),
            proptest::option::of(any::<[u8; 6]>()),
            proptest::option::of(any::<u32>()),
            (1u32.., any::<u64>()),
        )
            .prop_map(
                |(
                    key,
                    real,
                    local,
                    mode,
                    state,
                    ms,
                    flags,
                    seq,
                    cnh,
                    rnh,
                    mark,
                    (origin, stamp),
                )| {
                    let mut r = SessionRecord::new(
                        key,
                        real,
                        mode,
                        state,
                        Duration::from_millis(u64::from(ms)),
                    );
                    r.local = local;
                    r.flags = flags;
                    r.seq_adjust = seq;
                    r.client_next_hop = cnh;
                    r.real_next_hop = rnh;
                    r.fwmark = mark;
                    SyncedRecord { origin: NodeId(origin), stamp, record: r }
                },
            )
    })
}

fn message() -> impl Strategy<Value = Message> {
    let node = any::<u32>().prop_map(NodeId);
    prop_oneof![
        (any::<u64>(), prop::collection::vec(record(), 0..12))
            .prop_map(|(data_seq, entries)| Message::Updates { data_seq, entries }),
        any::<(u64, u64)>()
            .prop_map(|(a, b)| Message::Heartbeat { last_data_seq: a, oldest_retained: b }),
        (node.clone(), any::<u32>(), prop::collection::vec(any::<(u64, u64)>(), 0..20)).prop_map(
            |(target, target_epoch, r)| Message::Nack {
                target,
                target_epoch,
                ranges: r
                    .into_iter()
                    .map(|(a, b)| NackRange { first: a.min(b), last: a.max(b) })
                    .collect(),
            }
        ),
        (node.clone(), any::<u32>())
            .prop_map(|(target, request)| Message::ResyncRequest { target, request }),
        (node.clone(), any::<u32>(), any::<u32>(), prop::collection::vec(record(), 0..8)).prop_map(
            |(target, request, index, entries)| Message::ResyncChunk {
                target,
                request,
                index,
                entries
            }
        ),
        (node.clone(), any::<u32>(), any::<u32>(), any::<u64>()).prop_map(
            |(target, request, chunks, as_of)| Message::ResyncDone {
                target,
                request,
                chunks,
                as_of
            }
        ),
        (
            node,
            any::<u32>(),
            any::<u32>(),
            any::<bool>(),
            prop::collection::vec(any::<(u32, u32)>(), 0..20)
        )
            .prop_map(|(target, request, next_missing, complete, r)| Message::ResyncAck {
                target,
                request,
                next_missing,
                complete,
                missing: r
                    .into_iter()
                    .map(|(a, b)| ResyncAckRange { first: a.min(b), last: a.max(b) })
                    .collect(),
            }),
    ]
}

fn header(seq: u64, flags: u16) -> HeaderRepr {
    HeaderRepr {
        msg_type: 0,
        flags,
        cluster_id: 42,
        node_id: 3,
        epoch: 17,
        seq,
        stream: 0,
        count: 0,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn entries_round_trip(e in record()) {
        let mut buf = vec![0u8; e.buffer_len() + 5];
        let n = e.emit(&mut buf).unwrap();
        prop_assert_eq!(n, e.buffer_len());
        let v = EntryView::new_checked(&buf[..]).unwrap();
        prop_assert_eq!(v.total_len(), n);
        prop_assert_eq!(v.client(), e.record.key.client);
        prop_assert_eq!(v.real(), e.record.real);
        prop_assert_eq!(v.stamp(), e.stamp);
        prop_assert_eq!(SyncedRecord::parse(&v).unwrap(), e);
    }

    #[test]
    fn messages_round_trip_signed(m in message(), seq in any::<u64>(), retransmit in any::<bool>()) {
        let key = ClusterKey::derive(b"k");
        let bytes = m.to_vec(&header(seq, u16::from(retransmit)), &key).unwrap();
        prop_assert_eq!(bytes.len(), m.buffer_len());
        let (h, back) = decode_verified(&key, &bytes).unwrap();
        prop_assert_eq!(h.seq, seq);
        prop_assert_eq!((h.node_id, h.epoch, h.cluster_id), (3, 17, 42));
        prop_assert_eq!(back, m);
        prop_assert!(decode_verified(&ClusterKey::derive(b"other"), &bytes).is_err());
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let _ = decode_verified(&ClusterKey::derive(b"k"), &bytes);
        if let Ok(v) = EntryView::new_checked(&bytes[..]) {
            let _ = (v.client(), v.virt(), v.real(), v.local(), v.extensions().count());
            let _ = SyncedRecord::parse(&v);
        }
    }
}
