//! Property: `Forwarder::process_batch` is `Forwarder::process` applied to each frame in order.
//! Two forwarders get the same batches, one frame by frame and one batched; every verdict, every
//! rewritten frame, every counter and the whole session table must agree. Batches repeat flows
//! (a SYN and its retransmission, a new flow's second packet) and mix replies, junk and ARP, so
//! that frames of a batch create and remove the sessions that later frames of the same batch
//! look up with hints prepared before. Frames come with every checksum state a link reports
//! (the batch step's fast path takes only complete ones), batches are spread in time so that
//! sessions expire, and some runs report session changes (which the fast path leaves to the
//! general step) or expire the sessions of a real server set down.

use std::net::SocketAddr;

use proptest::prelude::*;
use slb_core::backend::{BackendId, BackendState};
use slb_core::time::Instant;
use slb_l4::craft::{self, CLIENT_MAC, PORT0_MAC, PORT1_MAC, REAL_MACS};
use slb_l4::frame::{CsumState, FrameBuf};
use slb_l4::fwd::{ChangeFilter, Forwarder, ForwarderConfig, Mode, PortId, UnknownCsum, Verdict};

#[derive(Clone, Debug)]
enum Frame {
    /// Client `client` to a VIP.
    In { client: u8, v6: bool, udp: bool, flags: u8 },
    /// The real server of the `pick`-th session (as the batch starts) back to its client.
    Out { pick: u8, flags: u8 },
    /// An ARP request for the VIP.
    Arp,
    /// Bytes that are not a valid frame, or a frame for another MAC.
    Junk(Vec<u8>),
}

fn frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        6 => (0u8..6, any::<bool>(), any::<bool>(), prop::sample::select(vec![0x02u8, 0x10, 0x11, 0x04, 0x18, 0x12]))
            .prop_map(|(client, v6, udp, flags)| Frame::In { client, v6, udp, flags }),
        4 => (any::<u8>(), prop::sample::select(vec![0x10u8, 0x11, 0x12, 0x04, 0x18]))
            .prop_map(|(pick, flags)| Frame::Out { pick, flags }),
        1 => Just(Frame::Arp),
        1 => prop::collection::vec(any::<u8>(), 0..80).prop_map(Frame::Junk),
    ]
}

fn build(f: &Frame, fwd: &Forwarder) -> Option<(FrameBuf, PortId)> {
    let b = match f {
        Frame::In { client, v6, udp, flags } => {
            let (c, vip) = if *v6 {
                (format!("[fd00:1::{}]:{}", 2 + client, 4000 + u16::from(*client)), "[fd00::100]")
            } else {
                (format!("10.0.1.{}:{}", 2 + client, 4000 + u16::from(*client)), "10.0.0.100")
            };
            let c: SocketAddr = c.parse().unwrap();
            let bytes = if *udp {
                craft::udp(CLIENT_MAC, PORT0_MAC, c, format!("{vip}:53").parse().unwrap(), b"q")
            } else {
                let vip = format!("{vip}:80").parse().unwrap();
                craft::tcp(CLIENT_MAC, PORT0_MAC, c, vip, *flags, 7, &[2, 4, 5, 0xb4], b"")
            };
            (FrameBuf::from_slice(&bytes), PortId(0))
        }
        Frame::Out { pick, flags } => {
            let revs: Vec<_> = fwd.session_views().filter_map(|v| v.reverse).collect();
            let r = *revs.get(usize::from(*pick) % revs.len().max(1))?;
            let mac = REAL_MACS[usize::from(r.src.to_string().ends_with("12"))];
            let bytes = if r.proto == slb_core::flow::Protocol::Udp {
                craft::udp(mac, PORT1_MAC, r.src_addr(), r.dst_addr(), b"a")
            } else {
                craft::tcp(mac, PORT1_MAC, r.src_addr(), r.dst_addr(), *flags, 9, &[], b"")
            };
            (FrameBuf::from_slice(&bytes), PortId(1))
        }
        Frame::Arp => {
            let a = craft::arp_request(CLIENT_MAC, [10, 0, 1, 2].into(), [10, 0, 0, 100].into());
            (FrameBuf::from_slice(&a), PortId(0))
        }
        Frame::Junk(bytes) => (FrameBuf::from_slice(bytes), PortId(0)),
    };
    Some(b)
}

fn sessions(f: &Forwarder) -> Vec<String> {
    let mut v: Vec<String> = f
        .session_views()
        .map(|s| format!("{} {:?} {:?}", s.forward, s.reverse, s.session))
        .collect();
    v.sort();
    v
}

/// How a run differs from the default: session-change reporting, `expire_nodest_conn` with
/// real server 0 set down after the first batch, checksums of unknown state trusted.
#[derive(Clone, Copy, Debug)]
struct Setup {
    strict: bool,
    report: bool,
    nodest: bool,
    /// `UnknownCsum::AssumeComplete`: frames of unknown checksum state take the fast path too.
    assume: bool,
}

fn run(mode: Mode, setup: Setup, batches: &[(u16, Vec<(Frame, u8)>)]) -> Result<(), TestCaseError> {
    let cfg = ForwarderConfig {
        strict_tcp: setup.strict,
        expire_nodest_conn: setup.nodest,
        unknown_csum: if setup.assume { UnknownCsum::AssumeComplete } else { UnknownCsum::Detect },
        ..ForwarderConfig::default()
    };
    let mut one = craft::forwarder(mode, cfg);
    let mut many = craft::forwarder(mode, cfg);
    if setup.report {
        for f in [&mut one, &mut many] {
            f.enable_session_changes(ChangeFilter::default(), 1024);
        }
    }
    let mut now = Instant::from_secs(1);
    for (i, (gap, batch)) in batches.iter().enumerate() {
        now += std::time::Duration::from_secs(u64::from(*gap));
        if setup.nodest && i == 1 {
            for f in [&mut one, &mut many] {
                f.set_real_state(BackendId(0), BackendState::Down, now).unwrap();
            }
        }
        // Frames of one batch come from one port (as from a link): split by port in order.
        let built: Vec<(FrameBuf, PortId)> = batch
            .iter()
            .filter_map(|(f, csum)| {
                let (mut b, p) = build(f, &one)?;
                b.meta.csum = [CsumState::Complete, CsumState::Unknown, CsumState::Partial]
                    [usize::from(*csum % 3)];
                Some((b, p))
            })
            .collect();
        for port in [PortId(0), PortId(1)] {
            let mut frames: Vec<FrameBuf> =
                built.iter().filter(|b| b.1 == port).map(|b| b.0.clone()).collect();
            let mut expect = frames.clone();
            let want: Vec<Verdict> = expect.iter_mut().map(|b| one.process(now, b, port)).collect();
            let mut got = vec![Verdict::Host; frames.len()];
            many.process_batch(now, &mut frames, port, &mut got);
            prop_assert_eq!(&got, &want);
            for (g, w) in frames.iter().zip(&expect) {
                prop_assert_eq!(g.as_slice(), w.as_slice());
            }
        }
        let (mut a, mut b) = (FrameBuf::default(), FrameBuf::default());
        loop {
            let (pa, pb) = (one.poll_transmit(&mut a), many.poll_transmit(&mut b));
            prop_assert_eq!(pa, pb);
            if pa.is_none() {
                break;
            }
            prop_assert_eq!(a.as_slice(), b.as_slice());
        }
        prop_assert_eq!(one.expire(now, 64), many.expire(now, 64));
        prop_assert_eq!(one.report().prometheus(), many.report().prometheus());
        prop_assert_eq!(sessions(&one), sessions(&many));
        let changes =
            |f: &mut Forwarder| std::iter::from_fn(|| f.poll_session_change()).collect::<Vec<_>>();
        prop_assert_eq!(changes(&mut one), changes(&mut many));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn a_batch_is_processed_like_its_frames_one_by_one(
        mode in 0u8..3,
        (strict, report, nodest, assume) in (
            any::<bool>(),
            prop::bool::weighted(0.25),
            prop::bool::weighted(0.25),
            prop::bool::weighted(0.3),
        ),
        batches in prop::collection::vec(
            (prop::sample::select(vec![0u16, 7, 61, 301]), prop::collection::vec((frame(), 0u8..4), 0..48)),
            1..8,
        ),
    ) {
        let mode = [Mode::Nat, Mode::FullNat, Mode::Dr][usize::from(mode)];
        run(mode, Setup { strict, report, nodest, assume }, &batches)?;
    }
}
