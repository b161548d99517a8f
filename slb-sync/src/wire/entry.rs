//! Session entries: the zero-copy view and the owned form ([`EntryRepr`], alias of
//! [`SyncedRecord`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use slb_core::flow::Protocol;
use slb_core::session::ConnState;

use super::tlv::{self, TlvIter};
use super::{Error, Result, be16, be32, be64, put16, put32, put64};
use crate::types::{EntryFlags, ForwardMode, NodeId, SessionKey, SessionRecord, SyncedRecord};

/// The owned, validated form of an entry.
pub type EntryRepr = SyncedRecord;

/// Length of an entry's fixed part before the addresses.
pub const ENTRY_FIXED_LEN: usize = 32;

/// Wire flag (not exposed in [`EntryFlags`]): the entry carries a local address.
const FLAG_HAS_LOCAL: u16 = 0x0008;

mod field {
    pub(super) const LEN: usize = 0;
    pub(super) const FAMILIES: usize = 2;
    pub(super) const PROTO: usize = 3;
    pub(super) const MODE: usize = 4;
    pub(super) const STATE: usize = 5;
    pub(super) const FLAGS: usize = 6;
    pub(super) const ORIGIN: usize = 8;
    pub(super) const STAMP: usize = 12;
    pub(super) const TIMEOUT: usize = 20;
    pub(super) const CPORT: usize = 24;
    pub(super) const VPORT: usize = 26;
    pub(super) const RPORT: usize = 28;
    pub(super) const LPORT: usize = 30;
}

const FAM_FRONT_V6: u8 = 0x01;
const FAM_BACK_V6: u8 = 0x02;

/// Length of an entry without extensions, for the given families.
pub const fn entry_len(front_v6: bool, back_v6: bool) -> usize {
    let a = if front_v6 { 16 } else { 4 };
    let b = if back_v6 { 16 } else { 4 };
    ENTRY_FIXED_LEN + 2 * a + 2 * b
}

/// A zero-copy view of one entry at the start of a buffer (which may hold more after it).
#[derive(Debug, Clone, Copy)]
pub struct EntryView<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EntryView<T> {
    /// Wraps `buffer` without checks (for emitting).
    pub fn new_unchecked(buffer: T) -> Self {
        EntryView { buffer }
    }

    /// Wraps `buffer`, checking the length field, the family byte, and that the fixed part and
    /// the addresses fit inside the entry length. After this no accessor can panic.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let v = EntryView { buffer };
        let b = v.buffer.as_ref();
        if b.len() < ENTRY_FIXED_LEN {
            return Err(Error::Truncated);
        }
        let len = usize::from(be16(b, field::LEN));
        if len > b.len() {
            return Err(Error::Truncated);
        }
        let fam = b[field::FAMILIES];
        if fam & !(FAM_FRONT_V6 | FAM_BACK_V6) != 0 {
            return Err(Error::Malformed);
        }
        if len < entry_len(fam & FAM_FRONT_V6 != 0, fam & FAM_BACK_V6 != 0) {
            return Err(Error::Malformed);
        }
        Ok(v)
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// The entry's length, extensions included.
    pub fn total_len(&self) -> usize {
        usize::from(be16(self.b(), field::LEN))
    }

    fn front_len(&self) -> usize {
        if self.b()[field::FAMILIES] & FAM_FRONT_V6 != 0 { 16 } else { 4 }
    }

    fn back_len(&self) -> usize {
        if self.b()[field::FAMILIES] & FAM_BACK_V6 != 0 { 16 } else { 4 }
    }

    /// IP protocol number.
    pub fn proto(&self) -> u8 {
        self.b()[field::PROTO]
    }

    /// Forwarding mode code.
    pub fn mode(&self) -> u8 {
        self.b()[field::MODE]
    }

    /// State code.
    pub fn state(&self) -> u8 {
        self.b()[field::STATE]
    }

    /// Raw flags.
    pub fn flags(&self) -> u16 {
        be16(self.b(), field::FLAGS)
    }

    /// Origin node.
    pub fn origin(&self) -> u32 {
        be32(self.b(), field::ORIGIN)
    }

    /// Lamport stamp.
    pub fn stamp(&self) -> u64 {
        be64(self.b(), field::STAMP)
    }

    /// Remaining timeout in milliseconds.
    pub fn timeout_ms(&self) -> u32 {
        be32(self.b(), field::TIMEOUT)
    }

    fn addr(&self, at: usize, len: usize, port: usize) -> SocketAddr {
        let b = self.b();
        let ip = if len == 16 {
            let mut a = [0u8; 16];
            a.copy_from_slice(&b[at..at + 16]);
            IpAddr::V6(Ipv6Addr::from(a))
        } else {
            IpAddr::V4(Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3]))
        };
        SocketAddr::new(ip, be16(b, port))
    }

    /// Client address and port.
    pub fn client(&self) -> SocketAddr {
        self.addr(ENTRY_FIXED_LEN, self.front_len(), field::CPORT)
    }

    /// Virtual service address and port.
    pub fn virt(&self) -> SocketAddr {
        let a = self.front_len();
        self.addr(ENTRY_FIXED_LEN + a, a, field::VPORT)
    }

    /// Real server address and port.
    pub fn real(&self) -> SocketAddr {
        let (a, b) = (self.front_len(), self.back_len());
        self.addr(ENTRY_FIXED_LEN + 2 * a, b, field::RPORT)
    }

    /// Local address and port (meaningful when the has-local flag is set).
    pub fn local(&self) -> SocketAddr {
        let (a, b) = (self.front_len(), self.back_len());
        self.addr(ENTRY_FIXED_LEN + 2 * a + b, b, field::LPORT)
    }

    /// The extension region.
    pub fn extensions(&self) -> TlvIter<'_> {
        let start = ENTRY_FIXED_LEN + 2 * self.front_len() + 2 * self.back_len();
        TlvIter::new(&self.b()[start..self.total_len()])
    }
}

fn ip_bytes(ip: IpAddr, out: &mut [u8]) {
    match ip {
        IpAddr::V4(a) => out.copy_from_slice(&a.octets()),
        IpAddr::V6(a) => out.copy_from_slice(&a.octets()),
    }
}

impl SyncedRecord {
    /// Parses a checked entry view. Unknown non-critical extensions are skipped; an unknown
    /// critical one fails with [`Error::UnknownCritical`].
    pub fn parse<T: AsRef<[u8]>>(v: &EntryView<T>) -> Result<SyncedRecord> {
        let proto = Protocol::from_number(v.proto()).ok_or(Error::Malformed)?;
        let mode = ForwardMode::from_code(v.mode()).ok_or(Error::Malformed)?;
        let state = ConnState::from_code(v.state()).ok_or(Error::Malformed)?;
        let raw_flags = v.flags();
        let origin = v.origin();
        if origin == 0 {
            return Err(Error::Malformed);
        }
        let mut record = SessionRecord::new(
            SessionKey { proto, client: v.client(), virt: v.virt() },
            v.real(),
            mode,
            state,
            Duration::from_millis(u64::from(v.timeout_ms())),
        );
        record.flags = EntryFlags(raw_flags & !FLAG_HAS_LOCAL);
        if raw_flags & FLAG_HAS_LOCAL != 0 {
            record.local = Some(v.local());
        }
        for t in v.extensions() {
            let t = t?;
            match t.kind {
                tlv::TLV_SEQ_ADJUST => record.seq_adjust = Some(tlv::parse_seq_adjust(t.value)?),
                tlv::TLV_CLIENT_NEXT_HOP => record.client_next_hop = Some(tlv::parse_mac(t.value)?),
                tlv::TLV_REAL_NEXT_HOP => record.real_next_hop = Some(tlv::parse_mac(t.value)?),
                tlv::TLV_FWMARK => record.fwmark = Some(tlv::parse_u32(t.value)?),
                k if k & tlv::TLV_CRITICAL != 0 => return Err(Error::UnknownCritical(k)),
                _ => {}
            }
        }
        Ok(SyncedRecord { origin: NodeId(origin), stamp: v.stamp(), record })
    }

    /// Checks that the record can be encoded: client and virtual address of one family, real
    /// and local address of one family, a non-zero origin.
    pub fn check_encodable(&self) -> Result<()> {
        let r = &self.record;
        if r.key.client.is_ipv6() != r.key.virt.is_ipv6() || self.origin.0 == 0 {
            return Err(Error::Malformed);
        }
        if let Some(l) = r.local {
            if l.is_ipv6() != r.real.is_ipv6() {
                return Err(Error::Malformed);
            }
        }
        Ok(())
    }

    /// Bytes the encoded entry takes.
    pub fn buffer_len(&self) -> usize {
        let r = &self.record;
        let mut n = entry_len(r.key.client.is_ipv6(), r.real.is_ipv6());
        if r.seq_adjust.is_some() {
            n += 2 + tlv::SEQ_ADJUST_LEN;
        }
        n += usize::from(r.client_next_hop.is_some()) * 8;
        n += usize::from(r.real_next_hop.is_some()) * 8;
        n += usize::from(r.fwmark.is_some()) * 6;
        n
    }

    /// Encodes the entry at the start of `out`; returns the bytes written.
    pub fn emit(&self, out: &mut [u8]) -> Result<usize> {
        self.check_encodable()?;
        let len = self.buffer_len();
        if out.len() < len {
            return Err(Error::Exhausted);
        }
        let r = &self.record;
        let front_v6 = r.key.client.is_ipv6();
        let back_v6 = r.real.is_ipv6();
        let out = &mut out[..len];
        put16(out, field::LEN, len as u16);
        out[field::FAMILIES] =
            if front_v6 { FAM_FRONT_V6 } else { 0 } | if back_v6 { FAM_BACK_V6 } else { 0 };
        out[field::PROTO] = r.key.proto.number();
        out[field::MODE] = r.mode.code();
        out[field::STATE] = r.state.code();
        let mut flags = r.flags.0 & !FLAG_HAS_LOCAL;
        if r.local.is_some() {
            flags |= FLAG_HAS_LOCAL;
        }
        put16(out, field::FLAGS, flags);
        put32(out, field::ORIGIN, self.origin.0);
        put64(out, field::STAMP, self.stamp);
        let ms = u32::try_from(r.timeout.as_millis()).unwrap_or(u32::MAX);
        put32(out, field::TIMEOUT, ms);
        put16(out, field::CPORT, r.key.client.port());
        put16(out, field::VPORT, r.key.virt.port());
        put16(out, field::RPORT, r.real.port());
        put16(out, field::LPORT, r.local.map_or(0, |l| l.port()));
        let a = if front_v6 { 16 } else { 4 };
        let b = if back_v6 { 16 } else { 4 };
        let mut at = ENTRY_FIXED_LEN;
        ip_bytes(r.key.client.ip(), &mut out[at..at + a]);
        at += a;
        ip_bytes(r.key.virt.ip(), &mut out[at..at + a]);
        at += a;
        ip_bytes(r.real.ip(), &mut out[at..at + b]);
        at += b;
        match r.local {
            Some(l) => ip_bytes(l.ip(), &mut out[at..at + b]),
            None => out[at..at + b].fill(0),
        }
        at += b;
        if let Some(s) = &r.seq_adjust {
            at += tlv::emit_tlv(
                &mut out[at..],
                tlv::TLV_SEQ_ADJUST,
                |v| tlv::write_seq_adjust(v, s),
                tlv::SEQ_ADJUST_LEN,
            );
        }
        if let Some(m) = r.client_next_hop {
            at += tlv::emit_tlv(
                &mut out[at..],
                tlv::TLV_CLIENT_NEXT_HOP,
                |v| v.copy_from_slice(&m),
                6,
            );
        }
        if let Some(m) = r.real_next_hop {
            at +=
                tlv::emit_tlv(&mut out[at..], tlv::TLV_REAL_NEXT_HOP, |v| v.copy_from_slice(&m), 6);
        }
        if let Some(f) = r.fwmark {
            at += tlv::emit_tlv(&mut out[at..], tlv::TLV_FWMARK, |v| put32(v, 0, f), 4);
        }
        debug_assert_eq!(at, len);
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{SeqAdjust, SeqDelta};

    fn sample() -> SyncedRecord {
        let mut record = SessionRecord::new(
            SessionKey {
                proto: Protocol::Tcp,
                client: "192.0.2.1:40000".parse().unwrap(),
                virt: "198.51.100.10:80".parse().unwrap(),
            },
            "10.0.2.11:8080".parse().unwrap(),
            ForwardMode::FullNat,
            ConnState::Established,
            Duration::from_millis(899_123),
        );
        record.local = Some("10.0.2.1:5001".parse().unwrap());
        SyncedRecord { origin: NodeId(3), stamp: 42, record }
    }

    #[test]
    fn ipv4_entry_is_48_bytes_and_round_trips() {
        let e = sample();
        assert_eq!(e.buffer_len(), 48);
        let mut buf = [0u8; 64];
        assert_eq!(e.emit(&mut buf), Ok(48));
        let v = EntryView::new_checked(&buf[..]).unwrap();
        assert_eq!(v.total_len(), 48);
        assert_eq!(SyncedRecord::parse(&v).unwrap(), e);
    }

    #[test]
    fn extensions_round_trip_and_unknown_ones_are_handled() {
        let mut e = sample();
        e.record.key.client = "[2001:db8::1]:1234".parse().unwrap();
        e.record.key.virt = "[2001:db8::100]:443".parse().unwrap();
        e.record.seq_adjust = Some(SeqAdjust {
            inbound: SeqDelta { init_seq: 1, delta: 2, prev_delta: 3 },
            outbound: SeqDelta { init_seq: 4, delta: u32::MAX, prev_delta: 6 },
        });
        e.record.client_next_hop = Some([2, 0, 0, 0, 0, 1]);
        e.record.real_next_hop = Some([2, 0, 0, 0, 0, 2]);
        e.record.fwmark = Some(77);
        let n = e.buffer_len();
        assert_eq!(n, entry_len(true, false) + 26 + 8 + 8 + 6);
        let mut buf = vec![0u8; n + 3];
        e.emit(&mut buf).unwrap();
        assert_eq!(SyncedRecord::parse(&EntryView::new_checked(&buf[..]).unwrap()).unwrap(), e);

        // Append an unknown non-critical extension: skipped.
        buf[n..n + 3].copy_from_slice(&[0x10, 1, 0xaa]);
        buf[..2].copy_from_slice(&((n + 3) as u16).to_be_bytes());
        assert_eq!(SyncedRecord::parse(&EntryView::new_checked(&buf[..]).unwrap()).unwrap(), e);
        // Critical: the entry is refused.
        buf[n] = 0x90;
        assert_eq!(
            SyncedRecord::parse(&EntryView::new_checked(&buf[..]).unwrap()),
            Err(Error::UnknownCritical(0x90))
        );
    }

    #[test]
    fn bad_entries_are_rejected() {
        let e = sample();
        let mut buf = [0u8; 48];
        e.emit(&mut buf).unwrap();
        assert_eq!(EntryView::new_checked(&buf[..47]).unwrap_err(), Error::Truncated);
        let mut b = buf;
        b[1] = 47; // shorter than the fixed part with addresses
        assert_eq!(EntryView::new_checked(&b[..]).unwrap_err(), Error::Malformed);
        let mut b = buf;
        b[2] = 0x04;
        assert_eq!(EntryView::new_checked(&b[..]).unwrap_err(), Error::Malformed);
        let mut b = buf;
        b[5] = 0; // state code 0
        assert_eq!(
            SyncedRecord::parse(&EntryView::new_checked(&b[..]).unwrap()),
            Err(Error::Malformed)
        );
        let mut mixed = e.clone();
        mixed.record.local = Some("[::1]:1".parse().unwrap());
        assert_eq!(mixed.emit(&mut [0u8; 128]), Err(Error::Malformed));
        assert_eq!(e.emit(&mut [0u8; 47]), Err(Error::Exhausted));
    }
}
