//! TCP options the director touches: the TOA option (client address for FULLNAT backends) and
//! the MSS clamp that makes room for it.
//!
//! TOA ("TCP Option Address", Alibaba's FULLNAT): kind 254, length 8, then the client's port
//! (2 bytes) and IPv4 address (4 bytes), network order. For IPv6 clients the same kind carries
//! length 20 (port + 16-byte address). A backend that has no TOA kernel module can read the option
//! from a captured SYN or handshake ACK with [`parse_toa`] / [`parse_toa_any`].
//!
//! The option walker here never panics: a malformed option list (a length of 0 or 1, or running
//! past the end) simply ends the walk.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// TCP option kind of TOA.
pub const TOA_KIND: u8 = 254;
/// Length of the IPv4 TOA option.
pub const TOA_LEN_V4: usize = 8;
/// Length of the IPv6 TOA option.
pub const TOA_LEN_V6: usize = 20;
/// TCP option kind of MSS.
pub const MSS_KIND: u8 = 2;

/// One option found by [`options`]: its kind and where it sits in the option bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OptionRef {
    /// Option kind.
    pub kind: u8,
    /// Offset of the kind byte.
    pub at: usize,
    /// Total length including kind and length bytes (1 for NOP).
    pub len: usize,
}

/// Iterates over the options in `opts` (the bytes between the fixed TCP header and the
/// payload), stopping at end-of-list or at the first malformed option.
pub fn options(opts: &[u8]) -> impl Iterator<Item = OptionRef> + '_ {
    let mut at = 0usize;
    std::iter::from_fn(move || {
        let kind = *opts.get(at)?;
        match kind {
            0 => None,
            1 => {
                at += 1;
                Some(OptionRef { kind, at: at - 1, len: 1 })
            }
            _ => {
                let len = usize::from(*opts.get(at + 1)?);
                if len < 2 || at + len > opts.len() {
                    return None;
                }
                at += len;
                Some(OptionRef { kind, at: at - len, len })
            }
        }
    })
}

/// The client address in a TOA option of `opts`, IPv4 form only.
pub fn parse_toa(opts: &[u8]) -> Option<SocketAddrV4> {
    match parse_toa_any(opts)? {
        SocketAddr::V4(a) => Some(a),
        SocketAddr::V6(_) => None,
    }
}

/// The client address in a TOA option of `opts`, IPv4 or IPv6 form.
pub fn parse_toa_any(opts: &[u8]) -> Option<SocketAddr> {
    let o = options(opts).find(|o| o.kind == TOA_KIND)?;
    let b = &opts[o.at..o.at + o.len];
    let port = u16::from_be_bytes([b[2], b[3]]);
    match o.len {
        TOA_LEN_V4 => {
            let ip = Ipv4Addr::new(b[4], b[5], b[6], b[7]);
            Some(SocketAddr::V4(SocketAddrV4::new(ip, port)))
        }
        TOA_LEN_V6 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(&b[4..20]);
            Some(SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(a), port, 0, 0)))
        }
        _ => None,
    }
}

/// The TOA option for `client`: 8 bytes for IPv4, 20 for IPv6. Returns the buffer and length.
pub fn toa_option(client: SocketAddr) -> ([u8; TOA_LEN_V6], usize) {
    let mut b = [0u8; TOA_LEN_V6];
    b[0] = TOA_KIND;
    b[2..4].copy_from_slice(&client.port().to_be_bytes());
    match client {
        SocketAddr::V4(a) => {
            b[1] = TOA_LEN_V4 as u8;
            b[4..8].copy_from_slice(&a.ip().octets());
            (b, TOA_LEN_V4)
        }
        SocketAddr::V6(a) => {
            b[1] = TOA_LEN_V6 as u8;
            b[4..20].copy_from_slice(&a.ip().octets());
            (b, TOA_LEN_V6)
        }
    }
}

/// The MSS announced in `opts`, if any.
pub fn mss(opts: &[u8]) -> Option<u16> {
    let o = options(opts).find(|o| o.kind == MSS_KIND && o.len == 4)?;
    Some(u16::from_be_bytes([opts[o.at + 2], opts[o.at + 3]]))
}

/// Lowers the MSS option in `opts` by `by` bytes (never below 88); returns the old and new values when an MSS option was found and changed.
pub fn clamp_mss(opts: &mut [u8], by: u16) -> Option<(u16, u16)> {
    let o = options(opts).find(|o| o.kind == MSS_KIND && o.len == 4)?;
    let old = u16::from_be_bytes([opts[o.at + 2], opts[o.at + 3]]);
    let new = old.saturating_sub(by).max(88);
    if new == old {
        return None;
    }
    opts[o.at + 2..o.at + 4].copy_from_slice(&new.to_be_bytes());
    Some((old, new))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toa_round_trips_among_other_options() {
        let client: SocketAddr = "10.0.1.2:40000".parse().unwrap();
        let (toa, n) = toa_option(client);
        let mut opts = vec![2, 4, 0x05, 0xb4, 1, 1, 4, 2];
        opts.extend_from_slice(&toa[..n]);
        assert_eq!(parse_toa(&opts), Some("10.0.1.2:40000".parse().unwrap()));
        let six: SocketAddr = "[2001:db8::7]:443".parse().unwrap();
        let (toa6, n6) = toa_option(six);
        assert_eq!(n6, 20);
        assert_eq!(parse_toa_any(&toa6[..n6]), Some(six));
        assert_eq!(parse_toa(&toa6[..n6]), None);
        assert_eq!(mss(&opts), Some(1460));
        assert_eq!(clamp_mss(&mut opts, 8), Some((1460, 1452)));
        assert_eq!(mss(&opts), Some(1452));
    }

    #[test]
    fn malformed_options_end_the_walk() {
        assert_eq!(parse_toa(&[254, 0, 1, 2, 3, 4, 5, 6]), None, "length 0");
        assert_eq!(parse_toa(&[254, 8, 1, 2]), None, "runs past the end");
        assert_eq!(parse_toa(&[0, 254, 8, 0, 80, 1, 2, 3, 4]), None, "after end-of-list");
        assert_eq!(parse_toa(&[254, 9, 0, 80, 1, 2, 3, 4, 0]), None, "odd length");
        assert_eq!(options(&[1, 1, 3]).count(), 2);
    }
}
