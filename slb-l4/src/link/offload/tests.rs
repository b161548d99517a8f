//! The cached rewrite replays the step exactly: flows of every mode, protocol and direction are
//! driven through a forwarder until a frame is steady, its rewrite is derived, and later frames
//! of the flow (other lengths, payloads, TTLs) go both through the step and through the cache:
//! through a model of the XDP program here, and (root, `lab::`) through the program itself in
//! the kernel (`BPF_PROG_TEST_RUN`).

use std::net::SocketAddr;

use super::*;
use crate::craft::{self, CLIENT_MAC, PORT0_MAC, PORT1_MAC};
use crate::frame::CsumState;
use crate::fwd::{ForwarderConfig, Mode, PortId, UnknownCsum};

/// What the XDP program does with a frame whose key has `val` in the cache: `false` when it
/// leaves the frame (untouched) to user space.
fn model(val: &[u8; v::LEN], f: &mut [u8]) -> bool {
    let u32_at = |at: usize| u32::from_ne_bytes(val[at..at + 4].try_into().unwrap());
    let tcp = f[23] == 6;
    if tcp && f[47] & 0x07 != 0 {
        return false;
    }
    if u32_at(v::FLAGS) & v::TTL_DEC != 0 {
        if f[22] <= 1 {
            return false;
        }
        f[22] -= 1;
    }
    let put =
        |f: &mut [u8], at: usize, w: u32| f[at..at + 2].copy_from_slice(&(w as u16).to_ne_bytes());
    let ip = apply(word(f, 24), u32_at(v::IP_DELTA));
    put(f, 24, ip);
    let at = if tcp { 50 } else { 40 };
    let c = word(f, at);
    if tcp || c != 0 {
        let s = apply(c, u32_at(v::L4_DELTA));
        put(f, at, if !tcp && s == 0 { 0xffff } else { s });
    }
    f[0..12].copy_from_slice(&val[v::MACS..v::MACS + 12]);
    f[26..34].copy_from_slice(&val[v::ADDRS..v::ADDRS + 8]);
    f[34..38].copy_from_slice(&val[v::PORTS..v::PORTS + 4]);
    true
}

/// A flow's cached rewrite and later frames of the flow with what the step made of them
/// (`None`: not forwarded).
pub(super) struct Case {
    pub(super) name: String,
    pub(super) key: [u8; k::LEN],
    pub(super) val: [u8; v::LEN],
    pub(super) later: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

struct Rig {
    fwd: Forwarder,
    now: Instant,
}

impl Rig {
    /// One frame through `process_batch`: (head before, frame after, verdict).
    fn step(&mut self, frame: &[u8], port: PortId) -> (Snap, FrameBuf, Verdict) {
        self.now = self.now.saturating_add(Duration::from_millis(1));
        let mut b = FrameBuf::from_slice(frame);
        b.meta.csum = CsumState::Complete;
        let mut snap = Snap::default();
        snap.take(&b);
        let mut v = [Verdict::Host];
        self.fwd.process_batch(self.now, std::slice::from_mut(&mut b), port, &mut v);
        (snap, b, v[0])
    }

    /// A NAT forwarder that trusts checksums, as the XDP links configure it.
    fn nat() -> Rig {
        let cfg = ForwarderConfig {
            unknown_csum: UnknownCsum::AssumeComplete,
            ..ForwarderConfig::default()
        };
        Rig { fwd: craft::forwarder(Mode::Nat, cfg), now: Instant::from_secs(1) }
    }

    /// A segment of client 10.0.1.7:4321 to the VIP's port 80.
    fn seg(flags: u8) -> Vec<u8> {
        let client: SocketAddr = "10.0.1.7:4321".parse().unwrap();
        let vip: SocketAddr = "10.0.0.100:80".parse().unwrap();
        craft::tcp(CLIENT_MAC, PORT0_MAC, client, vip, flags, 1000, &[], b"")
    }

    /// The client's SYN, the server's SYN-ACK, and the client's ACK (returned after its step).
    fn handshake(&mut self) -> FrameBuf {
        let (_, s, _) = self.step(&Rig::seg(0x02), PortId(0));
        let s = s.as_slice().to_vec();
        let (from, to) = (addr_of(&s, false), addr_of(&s, true));
        let synack = craft::tcp(mac_of(&s, 0), PORT1_MAC, from, to, 0x12, 1, &[], b"");
        self.step(&synack, PortId(1));
        self.step(&Rig::seg(0x10), PortId(0)).1
    }

    /// The step's output for `frame`, if forwarded.
    fn output(&mut self, frame: &[u8], port: PortId) -> Option<Vec<u8>> {
        let (_, b, v) = self.step(frame, port);
        matches!(v, Verdict::Forward(_)).then(|| b.as_slice().to_vec())
    }
}

fn addr_of(f: &[u8], src: bool) -> SocketAddr {
    let (a, p) = if src { (26, 34) } else { (30, 36) };
    let ip = std::net::Ipv4Addr::new(f[a], f[a + 1], f[a + 2], f[a + 3]);
    SocketAddr::new(ip.into(), u16::from_be_bytes([f[p], f[p + 1]]))
}

fn mac_of(f: &[u8], at: usize) -> crate::fwd::Mac {
    f[at..at + 6].try_into().unwrap()
}

fn with_ttl(mut f: Vec<u8>, ttl: u8) -> Vec<u8> {
    // Rewrite the TTL and recompute the header checksum in full.
    f[22] = ttl;
    f[24..26].fill(0);
    let c = !csum::sum(&f[14..34]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    f
}

/// Drives one TCP and one UDP flow per mode until their frames are steady in each direction
/// the director sees, and collects the cases.
pub(super) fn cases() -> Vec<Case> {
    let mut out = Vec::new();
    for mode in [Mode::Nat, Mode::FullNat, Mode::Dr] {
        for tcp in [true, false] {
            let cfg = ForwarderConfig {
                unknown_csum: UnknownCsum::AssumeComplete,
                ..ForwarderConfig::default()
            };
            let mut rig = Rig { fwd: craft::forwarder(mode, cfg), now: Instant::from_secs(1) };
            let client: SocketAddr = "10.0.1.7:4321".parse().unwrap();
            let vip: SocketAddr =
                if tcp { "10.0.0.100:80" } else { "10.0.0.100:53" }.parse().unwrap();
            let inbound = |flags: u8, payload: &[u8]| {
                if tcp {
                    craft::tcp(CLIENT_MAC, PORT0_MAC, client, vip, flags, 1000, &[], payload)
                } else {
                    craft::udp(CLIENT_MAC, PORT0_MAC, client, vip, payload)
                }
            };
            // The first frame (TCP: the SYN) shows the real server's side of the flow.
            let first = if tcp { inbound(0x02, b"") } else { inbound(0, b"aaaaa") };
            let (_, to_real, verdict) = rig.step(&first, PortId(0));
            assert!(matches!(verdict, Verdict::Forward(_)), "{mode:?}: {verdict:?}");
            let real_side = to_real.as_slice().to_vec();
            // Then until the inbound direction is steady: TCP the server's SYN-ACK (not
            // through the director in DR), the ACK that establishes and data; UDP two more.
            let mut opening = Vec::new();
            if tcp {
                if mode != Mode::Dr {
                    let s = &real_side;
                    let (from, to) = (addr_of(s, false), addr_of(s, true));
                    let synack =
                        craft::tcp(mac_of(s, 0), PORT1_MAC, from, to, 0x12, 5000, &[], b"");
                    opening.push((synack, PortId(1)));
                }
                opening.push((inbound(0x10, b""), PortId(0)));
                opening.push((inbound(0x18, b"data"), PortId(0)));
            } else {
                opening.push((inbound(0, b"bbbbb"), PortId(0)));
                opening.push((inbound(0, b"ccccc"), PortId(0)));
            }
            let mut last = None;
            for (i, (f, port)) in opening.iter().enumerate() {
                let r = rig.step(f, *port);
                assert!(matches!(r.2, Verdict::Forward(_)), "{mode:?} {i}: {:?}", r.2);
                last = Some(r);
            }
            let (snap, after, verdict) = last.unwrap();
            assert!(after.meta.steady, "{mode:?} tcp={tcp}: the last opening frame is steady");
            let Verdict::Forward(_) = verdict else { unreachable!() };
            let (key, val) = derive(&snap.head, snap.len, after.as_slice(), 7)
                .unwrap_or_else(|e| panic!("{mode:?} tcp={tcp}: {e:?}"));
            let later_in: Vec<Vec<u8>> = vec![
                inbound(0x10, b""),
                inbound(0x18, b"a longer payload than before"),
                with_ttl(inbound(0x10, b"x"), 2),
                with_ttl(inbound(0x10, b"y"), 1),
                inbound(0x11, b""),
            ];
            let mut flows = vec![(format!("{mode:?} tcp={tcp} in"), key, val, later_in, PortId(0))];
            // The reply direction (not through the director in DR).
            if mode != Mode::Dr {
                let s = real_side;
                let reply = |flags: u8, payload: &[u8]| {
                    let (from, to) = (addr_of(&s, false), addr_of(&s, true));
                    if tcp {
                        craft::tcp(mac_of(&s, 0), PORT1_MAC, from, to, flags, 5001, &[], payload)
                    } else {
                        craft::udp(mac_of(&s, 0), PORT1_MAC, from, to, payload)
                    }
                };
                let mut last = None;
                for i in 0..3 {
                    last = Some(rig.step(&reply(0x18, &[b'r'; 7][..4 + i]), PortId(1)));
                }
                let (snap, after, _) = last.unwrap();
                assert!(after.meta.steady, "{mode:?} tcp={tcp}: replies are steady");
                let (key, val) = derive(&snap.head, snap.len, after.as_slice(), 9)
                    .unwrap_or_else(|e| panic!("{mode:?} tcp={tcp} out: {e:?}"));
                let later_out = vec![reply(0x10, b""), reply(0x18, b"another reply, longer")];
                // Replies first: the inbound FIN ends the session.
                flows
                    .insert(0, (format!("{mode:?} tcp={tcp} out"), key, val, later_out, PortId(1)));
            }
            for (name, key, val, frames, port) in flows {
                let later = frames.into_iter().map(|f| (f.clone(), rig.output(&f, port))).collect();
                out.push(Case { name, key, val, later });
            }
        }
    }
    out
}

#[test]
fn the_cached_rewrite_replays_the_step_on_later_frames() {
    let cases = cases();
    assert_eq!(cases.len(), 10, "3 modes x 2 protocols inbound, 2 modes x 2 outbound");
    let mut replayed = 0;
    for c in &cases {
        for (i, (frame, step)) in c.later.iter().enumerate() {
            assert_eq!(key_of(frame), Some(c.key), "{} {i}: same flow", c.name);
            let mut f = frame.clone();
            if model(&c.val, &mut f) {
                // What the cache forwards, the step forwards identically.
                assert_eq!(Some(&f), step.as_ref(), "{} frame {i}", c.name);
                replayed += 1;
            } else {
                assert_eq!(&f, frame, "{} frame {i}: left untouched", c.name);
            }
        }
    }
    assert!(replayed >= 30, "most later frames replayed: {replayed}");
}

#[test]
fn frames_the_cache_must_not_replay_are_refused() {
    let cases = cases();
    let c = &cases[0];
    let (frame, step) = &c.later[0];
    let step = step.as_ref().unwrap();
    assert!(derive(frame, frame.len(), step, 1).is_ok());
    // A checksum the arithmetic does not reproduce (the step recomputed it in full, say).
    let mut bad = step.clone();
    bad[25] ^= 1;
    assert_eq!(derive(frame, frame.len(), &bad, 1), Err(Refusal::Checksum));
    let mut bad = step.clone();
    bad[51] ^= 1;
    assert_eq!(derive(frame, frame.len(), &bad, 1), Err(Refusal::Checksum));
    // A length change (TOA), a SYN, a TTL drop of two, an IP option.
    assert_eq!(derive(frame, frame.len() + 8, step, 1), Err(Refusal::Change));
    let mut syn = frame.clone();
    syn[47] = 0x02;
    assert_eq!(derive(&syn, syn.len(), step, 1), Err(Refusal::Change));
    let mut ttl = step.clone();
    ttl[22] -= 1;
    assert_eq!(derive(frame, frame.len(), &ttl, 1), Err(Refusal::Change));
    let mut opt = frame.clone();
    opt[14] = 0x46;
    assert_eq!(derive(&opt, opt.len(), step, 1), Err(Refusal::Shape));
}

#[test]
fn only_established_frames_of_the_fast_path_are_steady() {
    let mut rig = Rig::nat();
    let seg = Rig::seg;
    let (_, syn, _) = rig.step(&seg(0x02), PortId(0));
    assert!(!syn.meta.steady, "a SYN");
    let (_, syn, _) = rig.step(&seg(0x02), PortId(0));
    assert!(!syn.meta.steady, "a retransmitted SYN");
    // Partial checksums never take the fast path.
    let mut b = FrameBuf::from_slice(&seg(0x10));
    b.meta.csum = CsumState::Partial;
    let mut v = [Verdict::Host];
    rig.fwd.process_batch(rig.now, std::slice::from_mut(&mut b), PortId(0), &mut v);
    assert!(!b.meta.steady);
    // A stale flag from an earlier use of the buffer is cleared.
    let mut b = FrameBuf::from_slice(&craft::arp_request(
        CLIENT_MAC,
        [10, 0, 1, 9].into(),
        [10, 0, 1, 1].into(),
    ));
    b.meta.steady = true;
    rig.fwd.process_batch(rig.now, std::slice::from_mut(&mut b), PortId(0), &mut v);
    assert!(!b.meta.steady);
}

#[test]
fn the_forwarder_counts_offloaded_traffic_and_says_when_to_stop() {
    let cases = cases();
    let c = &cases[0];
    let mut rig = Rig::nat();
    // No session: stop.
    assert!(!rig.fwd.offload_refresh(rig.now, &flow_key(&c.key), 5, 500));
    // Established (as in `cases`): go on, and the packets count for the service.
    rig.handshake();
    let before = rig.fwd.report().prometheus();
    let later = rig.now.saturating_add(Duration::from_secs(600));
    assert!(rig.fwd.offload_refresh(later, &flow_key(&c.key), 5, 500));
    assert_eq!(rig.fwd.stats().offloaded, 5);
    assert_ne!(before, rig.fwd.report().prometheus());
    // The refresh kept the session alive past its original idle timeout (900 s established).
    let at = later.saturating_add(Duration::from_secs(800));
    assert!(rig.fwd.offload_refresh(at, &flow_key(&c.key), 0, 0));
    // A FIN moves it out of Established: stop.
    rig.step(&Rig::seg(0x11), PortId(0));
    assert!(!rig.fwd.offload_refresh(at, &flow_key(&c.key), 0, 0));
}

#[test]
fn offloaded_packets_resync_a_cluster_session_as_their_own_steps_would() {
    use crate::fwd::ChangeFilter;
    let mut rig = Rig::nat();
    rig.fwd.enable_session_changes(ChangeFilter { threshold: 3, period: 50 }, 64);
    let seg = Rig::seg;
    let ack = rig.handshake();
    // With a cluster the fast path still serves (and marks) what the sync does not report:
    // the inbound packets 2 (the state change) and 3 (the filter's threshold) are reported.
    let (_, third, _) = rig.step(&seg(0x18), PortId(0));
    let (_, fourth, _) = rig.step(&seg(0x18), PortId(0));
    assert!(!ack.meta.steady && !third.meta.steady && fourth.meta.steady);
    let drained = std::iter::from_fn(|| rig.fwd.poll_session_change()).count();
    assert!(drained >= 2, "SYN and establishment reported: {drained}");
    let key = flow_key(&key_of(&seg(0x10)).unwrap());
    // Inbound count 4 -> 40: no count of the filter (53, 103, ...) passed.
    assert!(rig.fwd.offload_refresh(rig.now, &key, 36, 3600));
    assert_eq!(rig.fwd.poll_session_change(), None);
    // 40 -> 60 passes 53: one resync, as the 53rd packet's step would have sent.
    assert!(rig.fwd.offload_refresh(rig.now, &key, 20, 2000));
    assert!(rig.fwd.poll_session_change().is_some());
    assert_eq!(rig.fwd.poll_session_change(), None);
    // A burst longer than the period always passes one.
    assert!(rig.fwd.offload_refresh(rig.now, &key, 50, 5000));
    assert!(rig.fwd.poll_session_change().is_some());
}

/// The XDP program itself, run by the kernel on the same frames (root).
#[cfg(feature = "lab")]
mod lab {
    use super::super::super::sys::bpf::{self, MAP_HASH, MAP_XSK, Map};
    use super::super::super::xdp_prog::{XDP_PASS, XDP_REDIRECT, program};
    use super::*;

    #[test]
    fn the_xdp_program_replays_the_step_like_the_model() {
        if crate::lab::skip_unless_root("link::offload::tests::lab") {
            return;
        }
        let hosts = Map::create(MAP_HASH, 4, 4, 1).unwrap();
        let xsks = Map::create(MAP_XSK, 4, 4, 1).unwrap();
        let cache = FlowOffload::new(64).unwrap();
        let prog = bpf::load_xdp(&program(hosts.fd(), xsks.fd(), Some(cache.fd())), "slb_test")
            .unwrap_or_else(|e| panic!("{e}"));
        let mut replayed = 0;
        for c in cases() {
            cache.map.update(&c.key, &c.val).unwrap();
            let (mut packets, mut bytes) = (0u64, 0u64);
            for (i, (frame, _)) in c.later.iter().enumerate() {
                let mut want = frame.clone();
                let forwarded = model(&c.val, &mut want);
                let mut got = frame.clone();
                let verdict = bpf::test_run(&prog, &mut got).unwrap();
                let expect = if forwarded { XDP_REDIRECT } else { XDP_PASS };
                assert_eq!(verdict as i32, expect, "{} frame {i}", c.name);
                assert_eq!(got, want, "{} frame {i}", c.name);
                if forwarded {
                    packets += 1;
                    bytes += u64::from(u16::from_be_bytes([frame[16], frame[17]]));
                    replayed += 1;
                }
            }
            let mut val = [0u8; v::LEN];
            assert!(cache.map.lookup(&c.key, &mut val).unwrap());
            let counter = |at: usize| u64::from_ne_bytes(val[at..at + 8].try_into().unwrap());
            assert_eq!((counter(v::PACKETS), counter(v::BYTES)), (packets, bytes), "{}", c.name);
            // The flow map is looked up before the transit checks: a frame of another
            // ethertype with the flow's bytes is still not the flow's.
            let mut other = c.later[0].0.clone();
            other[12..14].copy_from_slice(&[0x86, 0xdd]);
            let mut got = other.clone();
            assert_eq!(bpf::test_run(&prog, &mut got).unwrap() as i32, XDP_PASS, "{}", c.name);
            assert_eq!(got, other, "{}", c.name);
            assert!(cache.map.delete(&c.key).unwrap());
            // Without the flow: the frame is left to the socket (here: none, so the kernel).
            let (frame, _) = &c.later[0];
            let mut got = frame.clone();
            assert_eq!(bpf::test_run(&prog, &mut got).unwrap() as i32, XDP_PASS);
            assert_eq!(&got, frame);
        }
        assert!(replayed >= 30);
    }
}

proptest::proptest! {
    /// Frame heads are untrusted bytes: deriving an entry from any pair of them never panics,
    /// and an entry is derived only from a pair of IPv4 TCP/UDP heads of one flow shape.
    #[test]
    fn deriving_from_arbitrary_bytes_never_panics(
        before in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80),
        after in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80),
        len in 0usize..2000,
    ) {
        if let Ok((key, _)) = derive(&before, len, &after, 3) {
            proptest::prop_assert_eq!(key_of(&before), Some(key));
            proptest::prop_assert!(key_of(&after).is_some() && len == after.len());
        }
    }
}
