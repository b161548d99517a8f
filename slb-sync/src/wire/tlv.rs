//! Entry extensions: type, length, value.
//!
//! Unknown extensions are skipped unless bit 7 of their type marks them critical, in which case
//! the entry that carries them is skipped (a newer sender needs the receiver to understand it).

use super::{Error, Result, be32, put32};
use crate::types::{MacAddr, SeqAdjust, SeqDelta};

pub(crate) const TLV_SEQ_ADJUST: u8 = 1;
pub(crate) const TLV_CLIENT_NEXT_HOP: u8 = 2;
pub(crate) const TLV_REAL_NEXT_HOP: u8 = 3;
pub(crate) const TLV_FWMARK: u8 = 4;
pub(crate) const TLV_CRITICAL: u8 = 0x80;

pub(crate) const SEQ_ADJUST_LEN: usize = 24;

/// One extension, borrowed from the entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tlv<'a> {
    /// Type code (bit 7: critical).
    pub kind: u8,
    /// Value bytes.
    pub value: &'a [u8],
}

/// Iterates over the extensions of an entry. Yields `Err(Truncated)` once and stops if the last
/// extension overruns the region.
#[derive(Clone, Debug)]
pub struct TlvIter<'a> {
    rest: &'a [u8],
}

impl<'a> TlvIter<'a> {
    /// Iterates over `region`.
    pub fn new(region: &'a [u8]) -> Self {
        TlvIter { rest: region }
    }
}

impl<'a> Iterator for TlvIter<'a> {
    type Item = Result<Tlv<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let Some((&[kind, len], tail)) = self.rest.split_first_chunk::<2>() else {
            self.rest = &[];
            return Some(Err(Error::Truncated));
        };
        let len = usize::from(len);
        if tail.len() < len {
            self.rest = &[];
            return Some(Err(Error::Truncated));
        }
        let (value, rest) = tail.split_at(len);
        self.rest = rest;
        Some(Ok(Tlv { kind, value }))
    }
}

pub(crate) fn parse_seq_adjust(v: &[u8]) -> Result<SeqAdjust> {
    if v.len() != SEQ_ADJUST_LEN {
        return Err(Error::Malformed);
    }
    let d = |at: usize| SeqDelta {
        init_seq: be32(v, at),
        delta: be32(v, at + 4),
        prev_delta: be32(v, at + 8),
    };
    Ok(SeqAdjust { inbound: d(0), outbound: d(12) })
}

pub(crate) fn parse_mac(v: &[u8]) -> Result<MacAddr> {
    v.try_into().map_err(|_| Error::Malformed)
}

pub(crate) fn parse_u32(v: &[u8]) -> Result<u32> {
    if v.len() != 4 {
        return Err(Error::Malformed);
    }
    Ok(be32(v, 0))
}

/// Writes one extension at the start of `out`; returns bytes written. `out` must hold
/// `2 + value_len`.
pub(crate) fn emit_tlv(
    out: &mut [u8],
    kind: u8,
    value: impl FnOnce(&mut [u8]),
    value_len: usize,
) -> usize {
    out[0] = kind;
    out[1] = value_len as u8;
    value(&mut out[2..2 + value_len]);
    2 + value_len
}

pub(crate) fn write_seq_adjust(out: &mut [u8], s: &SeqAdjust) {
    for (i, d) in [s.inbound, s.outbound].iter().enumerate() {
        put32(out, i * 12, d.init_seq);
        put32(out, i * 12 + 4, d.delta);
        put32(out, i * 12 + 8, d.prev_delta);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iterates_and_stops_at_overrun() {
        let region = [4u8, 4, 0, 0, 0, 9, 0x85, 1, 7, 3, 5, 1];
        let items: Vec<_> = TlvIter::new(&region).collect();
        assert_eq!(items.len(), 3);
        assert_eq!(items[0], Ok(Tlv { kind: 4, value: &[0, 0, 0, 9] }));
        assert_eq!(items[1], Ok(Tlv { kind: 0x85, value: &[7] }));
        assert_eq!(items[2], Err(Error::Truncated));
        assert_eq!(TlvIter::new(&[1]).collect::<Vec<_>>(), vec![Err(Error::Truncated)]);
    }
}
