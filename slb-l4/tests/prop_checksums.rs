//! Property: every frame the forwarding step emits (forwarded, replied, released, relayed ICMP)
//! has valid IP and transport checksums, whatever mix of modes, families, flags, options,
//! payloads and partial checksums goes in.

use std::net::{IpAddr, SocketAddr};

use proptest::prelude::*;
use slb_core::time::Instant;
use slb_l4::craft::{self, CLIENT_MAC, PORT0_MAC, PORT1_MAC, REAL_MACS};
use slb_l4::frame::{CsumState, FrameBuf};
use slb_l4::fwd::{Forwarder, ForwarderConfig, Mode, PortId, Verdict};
use slb_l4::wire::{self, Kind};

#[derive(Clone, Debug)]
enum Op {
    /// A packet from client `client` to a VIP.
    In { client: u8, v6: bool, udp: bool, flags: u8, payload: u16, mss: bool, csum: u8 },
    /// A packet from the real server of the `pick`-th session back to its client.
    Out { pick: u8, flags: u8, payload: u16, csum: u8 },
    /// An ICMP error about the `pick`-th emitted frame, from the side it was sent to.
    Icmp { pick: u8, quote: u16 },
    /// An echo request to a VIP.
    Echo { v6: bool },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..6, any::<bool>(), any::<bool>(), 0u8..0x40, 0u16..1400, any::<bool>(), 0u8..4)
            .prop_map(|(client, v6, udp, flags, payload, mss, csum)| Op::In { client, v6, udp, flags, payload, mss, csum }),
        3 => (any::<u8>(), 0u8..0x40, 0u16..1400, 0u8..4)
            .prop_map(|(pick, flags, payload, csum)| Op::Out { pick, flags, payload, csum }),
        1 => (any::<u8>(), 20u16..600).prop_map(|(pick, quote)| Op::Icmp { pick, quote }),
        1 => any::<bool>().prop_map(|v6| Op::Echo { v6 }),
    ]
}

/// Applies the checksum variant: 0 valid, 1 partial (detected), 2 partial (link says so),
/// 3 UDP-over-IPv4 without a checksum.
fn mangle(frame: &[u8], csum: u8) -> FrameBuf {
    let mut b = FrameBuf::from_slice(frame);
    let Ok(Kind::Ip(m)) = wire::parse(frame) else { return b };
    let Some(off) = wire::l4_csum_offset(m.proto) else { return b };
    match csum {
        1 | 2 if m.proto != 1 => {
            wire::put16(
                b.as_mut_slice(),
                m.l4 + off,
                wire::pseudo_sum(m.src, m.dst, m.proto, m.l4_len()),
            );
            if csum == 2 {
                b.meta.csum = CsumState::Partial;
            }
        }
        3 if m.proto == 17 && !m.v6 => wire::put16(b.as_mut_slice(), m.l4 + off, 0),
        _ => {}
    }
    b
}

fn run(mode: Mode, ops: &[Op]) -> Result<(), TestCaseError> {
    let mut f: Forwarder = craft::forwarder(mode, ForwarderConfig::default());
    let mut now = Instant::ZERO;
    let mut emitted: Vec<(PortId, Vec<u8>)> = Vec::new();
    for op in ops {
        now += std::time::Duration::from_millis(3);
        let (mut buf, port) = match op {
            Op::In { client, v6, udp, flags, payload, mss, csum } => {
                let (c, vip) = if *v6 {
                    (
                        format!("[fd00:1::{}]:{}", 2 + client, 4000 + u16::from(*client)),
                        "[fd00::100]",
                    )
                } else {
                    (format!("10.0.1.{}:{}", 2 + client, 4000 + u16::from(*client)), "10.0.0.100")
                };
                let c: SocketAddr = c.parse().unwrap();
                let data = vec![0xa5u8; usize::from(*payload)];
                let frame = if *udp {
                    craft::udp(
                        CLIENT_MAC,
                        PORT0_MAC,
                        c,
                        format!("{vip}:53").parse().unwrap(),
                        &data,
                    )
                } else {
                    let opts: &[u8] = if *mss { &[2, 4, 5, 0xb4, 4, 2, 1, 1] } else { &[] };
                    craft::tcp(
                        CLIENT_MAC,
                        PORT0_MAC,
                        c,
                        format!("{vip}:80").parse().unwrap(),
                        *flags,
                        1,
                        opts,
                        &data,
                    )
                };
                (mangle(&frame, *csum), PortId(0))
            }
            Op::Out { pick, flags, payload, csum } => {
                let views: Vec<_> = f.session_views().filter_map(|v| v.reverse).collect();
                if views.is_empty() {
                    continue;
                }
                let r = views[usize::from(*pick) % views.len()];
                let data = vec![0x5au8; usize::from(*payload)];
                let mac = REAL_MACS[usize::from(r.src.to_string().ends_with("12"))];
                let frame = if r.proto == slb_core::flow::Protocol::Udp {
                    craft::udp(mac, PORT1_MAC, r.src_addr(), r.dst_addr(), &data)
                } else {
                    craft::tcp(
                        mac,
                        PORT1_MAC,
                        r.src_addr(),
                        r.dst_addr(),
                        *flags,
                        1,
                        &[2, 4, 5, 0xb4],
                        &data,
                    )
                };
                (mangle(&frame, *csum), PortId(1))
            }
            Op::Icmp { pick, quote } => {
                let ip_frames: Vec<_> = emitted.iter().filter(|(_, e)| matches!(wire::parse(e), Ok(Kind::Ip(m)) if m.proto != 1 && m.proto != 58)).collect();
                if ip_frames.is_empty() {
                    continue;
                }
                let (p, q) = ip_frames[usize::from(*pick) % ip_frames.len()];
                let Ok(Kind::Ip(m)) = wire::parse(q) else { continue };
                let (from, mac): (IpAddr, _) = match (p.0, m.v6) {
                    (0, false) => ("10.0.1.254".parse().unwrap(), CLIENT_MAC),
                    (0, true) => ("fd00:1::fe".parse().unwrap(), CLIENT_MAC),
                    (_, false) => ("10.0.2.254".parse().unwrap(), REAL_MACS[0]),
                    (_, true) => ("fd00:2::fe".parse().unwrap(), REAL_MACS[0]),
                };
                let (kind, code) = if m.v6 { (1, 4) } else { (3, 3) };
                let our = if p.0 == 0 { PORT0_MAC } else { PORT1_MAC };
                let e =
                    craft::icmp_error(mac, our, from, m.src, kind, code, 0, q, usize::from(*quote));
                (FrameBuf::from_slice(&e), *p)
            }
            Op::Echo { v6 } => {
                let (s, d): (IpAddr, IpAddr) = if *v6 {
                    ("fd00:1::2".parse().unwrap(), "fd00::100".parse().unwrap())
                } else {
                    ("10.0.1.2".parse().unwrap(), "10.0.0.100".parse().unwrap())
                };
                let ty = if *v6 { 128 } else { 8 };
                let frame = craft::ip_frame(
                    CLIENT_MAC,
                    PORT0_MAC,
                    s,
                    d,
                    if *v6 { 58 } else { 1 },
                    64,
                    &[ty, 0, 0, 0, 0, 1, 0, 2, 9, 9],
                );
                (FrameBuf::from_slice(&frame), PortId(0))
            }
        };
        let v = f.process(now, &mut buf, port);
        let mut out = Vec::new();
        if let Verdict::Forward(p) | Verdict::Reply(p) | Verdict::Solicit(p) = v {
            out.push((p, buf.as_slice().to_vec()));
        }
        while let Some(p) = f.poll_transmit(&mut buf) {
            out.push((p, buf.as_slice().to_vec()));
        }
        for (p, frame) in out {
            if let Err(e) = craft::checksums_ok(&frame) {
                return Err(TestCaseError::fail(format!("{mode:?} {op:?} -> {v:?}: {e}")));
            }
            emitted.push((p, frame));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn every_emitted_frame_has_valid_checksums(mode in 0u8..3, ops in proptest::collection::vec(op(), 1..40)) {
        let mode = [Mode::Nat, Mode::FullNat, Mode::Dr][usize::from(mode)];
        run(mode, &ops)?;
    }
}
