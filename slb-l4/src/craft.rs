//! Building frames for tests, benches and fuzz seeds (feature `sim`), with smoltcp's `Repr`s, so
//! that they are valid unless asked otherwise.

use std::net::{IpAddr, SocketAddr};

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, IpAddress, IpProtocol,
    Ipv4Packet, Ipv4Repr, Ipv6Packet, Ipv6Repr, TcpPacket, UdpPacket,
};

use crate::fwd::Mac;
use crate::wire::{ETH_HDR, Kind, L3, fill_l4_checksum, parse};

/// TCP flag bits.
pub mod flags {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// PSH.
    pub const PSH: u8 = 0x08;
    /// ACK.
    pub const ACK: u8 = 0x10;
}

/// Ethernet + IP header around a transport segment `l4` (whose checksum field is then filled).
pub fn ip_frame(
    src_mac: Mac,
    dst_mac: Mac,
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    ttl: u8,
    l4: &[u8],
) -> Vec<u8> {
    let v6 = src.is_ipv6();
    let ip_len = if v6 { 40 } else { 20 };
    let mut f = vec![0u8; ETH_HDR + ip_len + l4.len()];
    EthernetRepr {
        src_addr: EthernetAddress(src_mac),
        dst_addr: EthernetAddress(dst_mac),
        ethertype: if v6 { EthernetProtocol::Ipv6 } else { EthernetProtocol::Ipv4 },
    }
    .emit(&mut EthernetFrame::new_unchecked(&mut f[..]));
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => Ipv4Repr {
            src_addr: s,
            dst_addr: d,
            next_header: IpProtocol::from(proto),
            payload_len: l4.len(),
            hop_limit: ttl,
        }
        .emit(&mut Ipv4Packet::new_unchecked(&mut f[L3..]), &ChecksumCapabilities::default()),
        (IpAddr::V6(s), IpAddr::V6(d)) => Ipv6Repr {
            src_addr: s,
            dst_addr: d,
            next_header: IpProtocol::from(proto),
            payload_len: l4.len(),
            hop_limit: ttl,
        }
        .emit(&mut Ipv6Packet::new_unchecked(&mut f[L3..])),
        _ => panic!("mixed address families"),
    }
    f[L3 + ip_len..].copy_from_slice(l4);
    if let Ok(Kind::Ip(m)) = parse(&f) {
        fill_l4_checksum(&mut f, &m);
    }
    f
}

/// A TCP segment in a frame.
#[allow(clippy::too_many_arguments)] // a test helper mirroring the header's fields
pub fn tcp(
    src_mac: Mac,
    dst_mac: Mac,
    src: SocketAddr,
    dst: SocketAddr,
    flag_bits: u8,
    seq: u32,
    options: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    let opt_len = options.len().div_ceil(4) * 4;
    let hl = 20 + opt_len;
    let mut seg = vec![0u8; hl + payload.len()];
    {
        let mut t = TcpPacket::new_unchecked(&mut seg[..]);
        t.set_src_port(src.port());
        t.set_dst_port(dst.port());
        t.set_seq_number(smoltcp::wire::TcpSeqNumber(seq as i32));
        t.set_header_len(hl as u8);
        t.set_window_len(65535);
    }
    seg[13] = flag_bits;
    seg[20..20 + options.len()].copy_from_slice(options);
    seg[hl..].copy_from_slice(payload);
    ip_frame(src_mac, dst_mac, src.ip(), dst.ip(), 6, 64, &seg)
}

/// A UDP datagram in a frame.
pub fn udp(
    src_mac: Mac,
    dst_mac: Mac,
    src: SocketAddr,
    dst: SocketAddr,
    payload: &[u8],
) -> Vec<u8> {
    let mut seg = vec![0u8; 8 + payload.len()];
    {
        let mut u = UdpPacket::new_unchecked(&mut seg[..]);
        u.set_src_port(src.port());
        u.set_dst_port(dst.port());
        u.set_len((8 + payload.len()) as u16);
    }
    seg[8..].copy_from_slice(payload);
    ip_frame(src_mac, dst_mac, src.ip(), dst.ip(), 17, 64, &seg)
}

/// An ICMP (ICMPv6 for IPv6) error of `kind`/`code` from `from` to `to`, quoting the IP packet
/// of `quoted` (a whole frame), truncated to `quote_len` bytes of it.
#[allow(clippy::too_many_arguments)] // a test helper mirroring the header's fields
pub fn icmp_error(
    src_mac: Mac,
    dst_mac: Mac,
    from: IpAddr,
    to: IpAddr,
    kind: u8,
    code: u8,
    extra: u32,
    quoted: &[u8],
    quote_len: usize,
) -> Vec<u8> {
    let q = &quoted[L3..];
    let q = &q[..q.len().min(quote_len)];
    let mut msg = vec![0u8; 8 + q.len()];
    msg[0] = kind;
    msg[1] = code;
    msg[4..8].copy_from_slice(&extra.to_be_bytes());
    msg[8..].copy_from_slice(q);
    let p = if from.is_ipv6() { 58 } else { 1 };
    ip_frame(src_mac, dst_mac, from, to, p, 64, &msg)
}

/// An ARP request from `(mac, ip)` for `target` (the frame the forwarder sends to resolve a
/// next hop).
pub fn arp_request(mac: Mac, ip: std::net::Ipv4Addr, target: std::net::Ipv4Addr) -> Vec<u8> {
    crate::wire::arp::ArpRepr::request(mac, ip, target).to_frame()
}

/// The IP checksum (IPv4) and transport checksum of `frame` are valid; false with a reason
/// otherwise. ICMP errors' quoted headers are not checked (they are usually truncated).
pub fn checksums_ok(frame: &[u8]) -> Result<(), String> {
    match parse(frame) {
        Ok(Kind::Ip(m)) => {
            if !m.v6 && !crate::wire::ipv4_checksum_ok(frame, L3) {
                return Err("IPv4 header checksum".into());
            }
            if m.frag != crate::wire::Frag::No {
                return Ok(());
            }
            let src = IpAddress::from(m.src);
            let dst = IpAddress::from(m.dst);
            let seg = &frame[m.l4..m.end];
            let ok = match m.proto {
                6 => TcpPacket::new_checked(seg).is_ok_and(|t| t.verify_checksum(&src, &dst)),
                17 => UdpPacket::new_checked(seg).is_ok_and(|u| u.verify_checksum(&src, &dst)),
                1 | 58 => {
                    crate::wire::check_l4_checksum(frame, &m) == crate::wire::CsumCheck::Valid
                }
                _ => true,
            };
            if ok { Ok(()) } else { Err(format!("transport checksum (proto {})", m.proto)) }
        }
        Ok(_) => Ok(()),
        Err(_) => Err("malformed".into()),
    }
}

/// MAC of port 0 (client side) of [`forwarder`].
pub const PORT0_MAC: Mac = [2, 0, 0, 0, 1, 1];
/// MAC of port 1 (server side) of [`forwarder`].
pub const PORT1_MAC: Mac = [2, 0, 0, 0, 2, 1];
/// MAC of the client-side next hop used by tests.
pub const CLIENT_MAC: Mac = [2, 0, 0, 0, 1, 2];
/// MACs of real servers 10.0.2.11 and 10.0.2.12 (and fd00:2::11, fd00:2::12).
pub const REAL_MACS: [Mac; 2] = [[2, 0, 0, 0, 2, 0x11], [2, 0, 0, 0, 2, 0x12]];

/// A forwarder on the lab's shape: port 0 = 10.0.1.1/24 + fd00:1::1/64 (clients), port 1 =
/// 10.0.2.1/24 + fd00:2::1/64 (real servers 10.0.2.11-12 / fd00:2::11-12, static neighbours),
/// local addresses 10.0.2.100 and fd00:2::100, services TCP :80 and UDP :53 on 10.0.0.100 and
/// fd00::100 in `mode` (Maglev by flow). For DR the servers are reached on port 1 as well.
pub fn forwarder(
    mode: crate::fwd::Mode,
    cfg: crate::fwd::ForwarderConfig,
) -> crate::fwd::Forwarder {
    use crate::fwd::{Forwarder, PortConfig, ServiceConfig};
    use slb_core::flow::Protocol;
    use slb_core::sched::{SchedulerConfig, SchedulerKind};
    let p = |s: &str| s.parse::<crate::fwd::Cidr>().unwrap_or_else(|e| panic!("{e}"));
    let ip = |s: &str| s.parse::<IpAddr>().unwrap_or_else(|e| panic!("{e}"));
    let mut f = Forwarder::new(cfg);
    let _ = f.add_port(
        PortConfig::new(PORT0_MAC).with_addr(p("10.0.1.1/24")).with_addr(p("fd00:1::1/64")),
    );
    let _ = f.add_port(
        PortConfig::new(PORT1_MAC).with_addr(p("10.0.2.1/24")).with_addr(p("fd00:2::1/64")),
    );
    for (i, mac) in REAL_MACS.iter().enumerate() {
        f.add_neighbour(ip(&format!("10.0.2.{}", 11 + i)), *mac);
        f.add_neighbour(ip(&format!("fd00:2::{}", 11 + i)), *mac);
    }
    f.add_local_addr(ip("10.0.2.100"));
    f.add_local_addr(ip("fd00:2::100"));
    let maglev = SchedulerConfig::new(SchedulerKind::Maglev { table_size: 251 });
    for (proto, port) in [(Protocol::Tcp, 80), (Protocol::Udp, 53)] {
        for (vip, pre) in [("10.0.0.100", "10.0.2."), ("fd00::100", "fd00:2::")] {
            let mut s = ServiceConfig::new(proto, ip(vip), port, mode, maglev);
            for i in 0..2 {
                s = s.with_real(SocketAddr::new(ip(&format!("{pre}{}", 11 + i)), port));
            }
            let _ = f.add_service(s);
        }
    }
    f
}

/// The `l4_frame` fuzz target's body, shared with the corpus replay test: feeds the frames of
/// `data` to a forwarder, then (see `replay_batched`) to two more, one frame by frame and one
/// in batches, which must agree. Input: one mode byte (NAT, FULLNAT, DR by value mod 3; bit 7: also
/// print the counters at the end), then records of
/// `[ctrl, len_lo, len_hi, frame...]`: ctrl bit 0 = port, bits 1-2 = checksum state the link
/// reports, bits 3-7 = milliseconds to advance the clock. Several frames per input let the
/// fuzzer build sessions and reach the session, ICMP relay and neighbour paths. Panics only on a
/// broken invariant (an emitted frame on a port that does not exist or beyond its buffer).
pub fn replay(data: &[u8]) {
    use crate::frame::{FrameBuf, HEADROOM};
    use crate::fwd::{ForwarderConfig, Mode, PortId, Verdict};
    use slb_core::time::Instant;
    let Some((&mode_byte, mut rest)) = data.split_first() else { return };
    let mode = [Mode::Nat, Mode::FullNat, Mode::Dr][usize::from(mode_byte % 3)];
    let cfg = ForwarderConfig { strict_tcp: mode != Mode::Dr, ..ForwarderConfig::default() };
    let mut fwd = forwarder(mode, cfg);
    let mut now = Instant::ZERO;
    let mut buf = FrameBuf::default();
    let mut records = Vec::new();
    while rest.len() >= 3 {
        let ctrl = rest[0];
        let len = usize::from(u16::from_le_bytes([rest[1], rest[2]]));
        rest = &rest[3..];
        let (frame, tail) = rest.split_at(len.min(rest.len()));
        rest = tail;
        records.push((ctrl, frame));
        now += std::time::Duration::from_millis(u64::from(ctrl >> 3));
        buf.fill(frame);
        buf.meta.csum = replay_csum(ctrl);
        let v = fwd.process(now, &mut buf, PortId(ctrl & 1));
        if let Verdict::Forward(p) | Verdict::Reply(p) | Verdict::Solicit(p) = v {
            assert!(p.0 < 2, "emitted on a port that does not exist: {v:?}");
            assert!(buf.len() <= buf.capacity() + HEADROOM);
        }
        while let Some(p) = fwd.poll_transmit(&mut buf) {
            assert!(p.0 < 2);
        }
        fwd.expire(now, 16);
    }
    if mode_byte & 0x80 != 0 {
        // Counters are printed for a share of the inputs only: string formatting is costly
        // under the sanitizers and would slow every run down.
        let _ = fwd.report().prometheus();
        let _ = fwd.report().ipvsadm();
    }
    replay_batched(mode, cfg, &records);
}

/// The checksum state a replay record's `ctrl` byte gives its frame.
fn replay_csum(ctrl: u8) -> crate::frame::CsumState {
    use crate::frame::CsumState;
    match (ctrl >> 1) & 3 {
        0 => CsumState::Unknown,
        1 => CsumState::Complete,
        _ => CsumState::Partial,
    }
}

/// [`replay`]'s records through two forwarders: one calls `process` per frame, the other
/// `process_batch` on each run of consecutive frames of one port (up to 64), both at one clock
/// reading per run (advanced by the run's records together). Panics unless they agree on every
/// verdict, every frame's bytes, the frames they queue, the sessions they expire and every
/// counter.
fn replay_batched(
    mode: crate::fwd::Mode,
    cfg: crate::fwd::ForwarderConfig,
    records: &[(u8, &[u8])],
) {
    use crate::frame::FrameBuf;
    use crate::fwd::{PortId, Verdict};
    use slb_core::time::Instant;
    let mut one = forwarder(mode, cfg);
    let mut many = forwarder(mode, cfg);
    let mut now = Instant::ZERO;
    let mut i = 0;
    while i < records.len() {
        let port = records[i].0 & 1;
        let mut j = i + 1;
        while j < records.len() && j - i < 64 && records[j].0 & 1 == port {
            j += 1;
        }
        let ms: u64 = records[i..j].iter().map(|r| u64::from(r.0 >> 3)).sum();
        now += std::time::Duration::from_millis(ms);
        let mut batch: Vec<FrameBuf> = records[i..j]
            .iter()
            .map(|&(ctrl, f)| {
                let mut b = FrameBuf::default();
                b.fill(f);
                b.meta.csum = replay_csum(ctrl);
                b
            })
            .collect();
        let mut each = batch.clone();
        let want: Vec<Verdict> =
            each.iter_mut().map(|b| one.process(now, b, PortId(port))).collect();
        let mut got = vec![Verdict::Host; batch.len()];
        many.process_batch(now, &mut batch, PortId(port), &mut got);
        assert_eq!(got, want, "process_batch and process disagree");
        for (g, w) in batch.iter().zip(&each) {
            assert_eq!(g.as_slice(), w.as_slice(), "process_batch rewrote a frame differently");
        }
        let (mut a, mut b) = (FrameBuf::default(), FrameBuf::default());
        loop {
            let (pa, pb) = (one.poll_transmit(&mut a), many.poll_transmit(&mut b));
            assert_eq!(pa, pb);
            if pa.is_none() {
                break;
            }
            assert_eq!(a.as_slice(), b.as_slice());
        }
        assert_eq!(one.expire(now, 16), many.expire(now, 16));
        assert_eq!(one.stats(), many.stats());
        assert_eq!(one.sessions().len(), many.sessions().len());
        i = j;
    }
}
