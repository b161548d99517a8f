//! The PROXY protocol (HAProxy's spec, versions 1 and 2): parsing the header an L4 tier puts in
//! front of a connection, and writing one for upstreams. Pure functions over byte slices (fuzzed:
//! `fuzz/fuzz_targets/l7_proxy_protocol.rs`).
//!
//! [`parse`] returns `Ok(None)` while the bytes seen could still become a valid header, the header
//! and its length once complete, and an error as soon as they cannot (so a malformed header is
//! rejected without waiting for a timeout). Version 1 is at most 107 bytes; version 2 headers
//! longer than [`MAX_V2_LEN`] are refused (their TLVs are skipped, not interpreted).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The version 2 signature.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Longest version 1 header, CRLF included.
pub const V1_MAX: usize = 107;
/// Longest version 2 header accepted (16-byte prefix plus addresses and TLVs).
pub const MAX_V2_LEN: usize = 4096;

/// What a PROXY header says about the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyAddrs {
    /// The original client and the address it connected to.
    Proxied {
        /// The client.
        src: SocketAddr,
        /// The address the client connected to.
        dst: SocketAddr,
    },
    /// No address: a v2 LOCAL command (the L4 tier's own health check), v1 `UNKNOWN`, or a family
    /// other than TCP over IPv4/IPv6. The connection's own addresses apply.
    Unknown,
}

/// A complete header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProxyHeader {
    /// 1 or 2.
    pub version: u8,
    /// Addresses.
    pub addrs: ProxyAddrs,
    /// Bytes the header occupies; the connection's data starts after them.
    pub len: usize,
}

/// Why a header was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// Neither signature.
    #[error("not a PROXY protocol header")]
    NotProxy,
    /// A version 1 header that breaks the grammar.
    #[error("malformed PROXY v1 header: {0}")]
    BadV1(&'static str),
    /// A version 2 header that breaks the format.
    #[error("malformed PROXY v2 header: {0}")]
    BadV2(&'static str),
}

/// True when `buf` starts like a PROXY header (or is a prefix of one of the signatures).
pub fn looks_like_proxy(buf: &[u8]) -> bool {
    let n = buf.len().min(12);
    buf[..n] == V2_SIGNATURE[..n] || buf[..buf.len().min(6)] == b"PROXY "[..buf.len().min(6)]
}

/// Parses a header at the start of `buf`.
pub fn parse(buf: &[u8]) -> Result<Option<ProxyHeader>, ProxyError> {
    if buf.is_empty() {
        return Ok(None);
    }
    let n = buf.len().min(12);
    if buf[..n] == V2_SIGNATURE[..n] {
        return if buf.len() < 16 { Ok(None) } else { parse_v2(buf) };
    }
    let m = buf.len().min(6);
    if buf[..m] == b"PROXY "[..m] {
        return if buf.len() < 6 { Ok(None) } else { parse_v1(buf) };
    }
    Err(ProxyError::NotProxy)
}

fn parse_v1(buf: &[u8]) -> Result<Option<ProxyHeader>, ProxyError> {
    let window = &buf[..buf.len().min(V1_MAX)];
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        if window.len() >= V1_MAX {
            return Err(ProxyError::BadV1("no CRLF within 107 bytes"));
        }
        return match v1_line_error(window) {
            Some(e) => Err(e),
            None => Ok(None),
        };
    };
    // The same checks as on an incomplete line, so that a header is accepted only if every
    // prefix of it was "incomplete" (found by the l7_proxy_protocol fuzz target).
    if let Some(e) = v1_line_error(&buf[..end]) {
        return Err(e);
    }
    let line = std::str::from_utf8(&buf[6..end]).map_err(|_| ProxyError::BadV1("not ASCII"))?;
    let len = end + 2;
    let mut parts = line.split(' ');
    let proto = parts.next().unwrap_or("");
    if proto == "UNKNOWN" {
        return Ok(Some(ProxyHeader { version: 1, addrs: ProxyAddrs::Unknown, len }));
    }
    let v6 = match proto {
        "TCP4" => false,
        "TCP6" => true,
        _ => return Err(ProxyError::BadV1("protocol must be TCP4, TCP6 or UNKNOWN")),
    };
    let (Some(s), Some(d), Some(sp), Some(dp), None) =
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ProxyError::BadV1("expected four fields after the protocol"));
    };
    let ip = |t: &str| -> Result<IpAddr, ProxyError> {
        if v6 {
            t.parse::<Ipv6Addr>().map(IpAddr::V6).map_err(|_| ProxyError::BadV1("bad IPv6 address"))
        } else {
            t.parse::<Ipv4Addr>().map(IpAddr::V4).map_err(|_| ProxyError::BadV1("bad IPv4 address"))
        }
    };
    let port = |t: &str| -> Result<u16, ProxyError> {
        if t.is_empty() || t.len() > 5 || !t.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ProxyError::BadV1("bad port"));
        }
        if t.len() > 1 && t.starts_with('0') {
            return Err(ProxyError::BadV1("port with a leading zero"));
        }
        t.parse().map_err(|_| ProxyError::BadV1("port out of range"))
    };
    let src = SocketAddr::new(ip(s)?, port(sp)?);
    let dst = SocketAddr::new(ip(d)?, port(dp)?);
    Ok(Some(ProxyHeader { version: 1, addrs: ProxyAddrs::Proxied { src, dst }, len }))
}

/// What is wrong with the bytes of a v1 line before its CRLF, if anything.
fn v1_line_error(line: &[u8]) -> Option<ProxyError> {
    if line.iter().any(|&b| b == b'\n' || b == 0) {
        return Some(ProxyError::BadV1("stray line feed or NUL"));
    }
    if !line.is_ascii() {
        return Some(ProxyError::BadV1("not ASCII"));
    }
    None
}

fn parse_v2(buf: &[u8]) -> Result<Option<ProxyHeader>, ProxyError> {
    let ver_cmd = buf[12];
    if ver_cmd >> 4 != 2 {
        return Err(ProxyError::BadV2("version is not 2"));
    }
    let local = match ver_cmd & 0x0f {
        0 => true,
        1 => false,
        _ => return Err(ProxyError::BadV2("command is neither LOCAL nor PROXY")),
    };
    let fam = buf[13];
    let body = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    let len = 16 + body;
    if len > MAX_V2_LEN {
        return Err(ProxyError::BadV2("header longer than accepted"));
    }
    if buf.len() < len {
        return Ok(None);
    }
    let b = &buf[16..len];
    let need = match fam >> 4 {
        0 => 0,
        1 => 12,
        2 => 36,
        3 => 216,
        _ => return Err(ProxyError::BadV2("unknown address family")),
    };
    if !matches!(fam & 0x0f, 0..=2) {
        return Err(ProxyError::BadV2("unknown transport"));
    }
    if b.len() < need {
        return Err(ProxyError::BadV2("address block shorter than its family needs"));
    }
    if local {
        return Ok(Some(ProxyHeader { version: 2, addrs: ProxyAddrs::Unknown, len }));
    }
    let addrs = match fam {
        0x11 => {
            let ip = |o: usize| IpAddr::from([b[o], b[o + 1], b[o + 2], b[o + 3]]);
            let port = |o: usize| u16::from_be_bytes([b[o], b[o + 1]]);
            ProxyAddrs::Proxied {
                src: SocketAddr::new(ip(0), port(8)),
                dst: SocketAddr::new(ip(4), port(10)),
            }
        }
        0x21 => {
            let ip = |o: usize| {
                let mut a = [0u8; 16];
                a.copy_from_slice(&b[o..o + 16]);
                IpAddr::from(a)
            };
            let port = |o: usize| u16::from_be_bytes([b[o], b[o + 1]]);
            ProxyAddrs::Proxied {
                src: SocketAddr::new(ip(0), port(32)),
                dst: SocketAddr::new(ip(16), port(34)),
            }
        }
        // UNSPEC, UDP and unix sockets: nothing a TCP proxy can use.
        _ => ProxyAddrs::Unknown,
    };
    Ok(Some(ProxyHeader { version: 2, addrs, len }))
}

/// Both addresses in one family (IPv4 ones mapped into IPv6 when the other is IPv6).
fn same_family(src: SocketAddr, dst: SocketAddr) -> (SocketAddr, SocketAddr) {
    let v6 = |a: SocketAddr| match a.ip() {
        IpAddr::V4(v) => SocketAddr::new(IpAddr::V6(v.to_ipv6_mapped()), a.port()),
        IpAddr::V6(_) => a,
    };
    if src.is_ipv4() == dst.is_ipv4() { (src, dst) } else { (v6(src), v6(dst)) }
}

/// Appends a version 1 header for a connection from `src` to `dst`.
pub fn write_v1(src: SocketAddr, dst: SocketAddr, out: &mut Vec<u8>) {
    let (src, dst) = same_family(src, dst);
    let proto = if src.is_ipv4() { "TCP4" } else { "TCP6" };
    let line = format!("PROXY {proto} {} {} {} {}\r\n", src.ip(), dst.ip(), src.port(), dst.port());
    out.extend_from_slice(line.as_bytes());
}

/// Appends a version 2 header (PROXY command, TCP) for a connection from `src` to `dst`.
pub fn write_v2(src: SocketAddr, dst: SocketAddr, out: &mut Vec<u8>) {
    let (src, dst) = same_family(src, dst);
    out.extend_from_slice(&V2_SIGNATURE);
    out.push(0x21);
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            out.push(0x11);
            out.extend_from_slice(&12u16.to_be_bytes());
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            out.push(0x21);
            out.extend_from_slice(&36u16.to_be_bytes());
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
        }
        _ => unreachable!("same_family maps both addresses into one family"),
    }
    out.extend_from_slice(&src.port().to_be_bytes());
    out.extend_from_slice(&dst.port().to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn v1_examples() {
        let h = parse(b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\nGET /").unwrap().unwrap();
        assert_eq!(h.version, 1);
        assert_eq!(
            h.addrs,
            ProxyAddrs::Proxied { src: sa("192.0.2.1:56324"), dst: sa("198.51.100.2:443") }
        );
        assert_eq!(h.len, 45);
        let h = parse(b"PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n").unwrap().unwrap();
        assert_eq!(
            h.addrs,
            ProxyAddrs::Proxied { src: sa("[2001:db8::1]:1"), dst: sa("[2001:db8::2]:2") }
        );
        assert_eq!(
            parse(b"PROXY UNKNOWN ffff::1 x\r\n").unwrap().unwrap().addrs,
            ProxyAddrs::Unknown
        );
        assert_eq!(parse(b"PROXY TCP4 192.0.2.1 198.51.100.2 5").unwrap(), None, "incomplete");
        assert_eq!(parse(b"PRO").unwrap(), None);
        for bad in [
            &b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 65536\r\n"[..],
            b"PROXY TCP4 192.0.2.1  198.51.100.2 1 2\r\n",
            b"PROXY TCP6 192.0.2.1 198.51.100.2 1 2\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 01 2\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 1 2 3\r\n",
            b"PROXY UDP4 192.0.2.1 198.51.100.2 1 2\r\n",
            b"PROXY TCP4 192.0.2.1\n",
        ] {
            assert!(parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let long = [b"PROXY TCP4 ".as_slice(), &[b'1'; 120]].concat();
        assert!(parse(&long).is_err());
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Err(ProxyError::NotProxy));
    }

    #[test]
    fn v2_round_trips_and_rejects() {
        for (s, d) in [
            ("192.0.2.1:1234", "198.51.100.2:80"),
            ("[2001:db8::1]:1", "[2001:db8::2]:443"),
            ("192.0.2.1:1234", "[2001:db8::2]:443"),
        ] {
            let (s, d) = (sa(s), sa(d));
            let mut out = Vec::new();
            write_v2(s, d, &mut out);
            out.extend_from_slice(b"rest");
            let h = parse(&out).unwrap().unwrap();
            let (ws, wd) = same_family(s, d);
            assert_eq!(
                h,
                ProxyHeader {
                    version: 2,
                    addrs: ProxyAddrs::Proxied { src: ws, dst: wd },
                    len: out.len() - 4
                }
            );
            for cut in 0..h.len {
                assert_eq!(parse(&out[..cut]), Ok(None), "prefix of {cut} bytes");
            }
            let mut v1 = Vec::new();
            write_v1(s, d, &mut v1);
            assert_eq!(parse(&v1).unwrap().unwrap().addrs, h.addrs);
        }
        let mut local = V2_SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0, 0]);
        assert_eq!(parse(&local).unwrap().unwrap().addrs, ProxyAddrs::Unknown);
        let mut bad = local.clone();
        bad[12] = 0x31;
        assert!(parse(&bad).is_err(), "version 3");
        let mut short = V2_SIGNATURE.to_vec();
        short.extend_from_slice(&[0x21, 0x11, 0, 4, 1, 2, 3, 4]);
        assert!(parse(&short).is_err(), "IPv4 block needs 12 bytes");
        let mut huge = V2_SIGNATURE.to_vec();
        huge.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert!(parse(&huge).is_err(), "longer than accepted");
    }
}

/// A set of networks, for deciding whose PROXY headers to believe.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Networks(Vec<(IpAddr, u8)>);

impl Networks {
    /// Parses `"10.0.0.0/8"`, `"2001:db8::/32"` or a bare address (a single host).
    pub fn parse(list: &[String]) -> Result<Networks, String> {
        let mut nets = Vec::with_capacity(list.len());
        for s in list {
            let (ip, len) = match s.split_once('/') {
                Some((ip, len)) => (ip, Some(len)),
                None => (s.as_str(), None),
            };
            let ip: IpAddr = ip.trim().parse().map_err(|_| format!("{s:?}: not an address"))?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let len = match len {
                Some(l) => l
                    .trim()
                    .parse::<u8>()
                    .ok()
                    .filter(|l| *l <= max)
                    .ok_or_else(|| format!("{s:?}: prefix length must be 0 to {max}"))?,
                None => max,
            };
            nets.push((ip, len));
        }
        Ok(Networks(nets))
    }

    /// True when there are no networks.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// True when `ip` is in one of the networks (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v) => v.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.0.iter().any(|&(net, len)| match (net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len)) };
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = if len == 0 { 0 } else { u128::MAX << (128 - u32::from(len)) };
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        })
    }
}

#[cfg(test)]
mod net_tests {
    use super::*;

    #[test]
    fn networks_match_by_prefix() {
        let n = Networks::parse(&["10.0.0.0/8".into(), "192.0.2.7".into(), "2001:db8::/32".into()])
            .unwrap();
        assert!(n.contains("10.200.1.1".parse().unwrap()));
        assert!(n.contains("::ffff:10.1.1.1".parse().unwrap()));
        assert!(n.contains("192.0.2.7".parse().unwrap()));
        assert!(!n.contains("192.0.2.8".parse().unwrap()));
        assert!(n.contains("2001:db8:1::5".parse().unwrap()));
        assert!(!n.contains("2001:db9::5".parse().unwrap()));
        assert!(Networks::parse(&["10.0.0.0/33".into()]).is_err());
        assert!(Networks::parse(&["ten".into()]).is_err());
    }
}
