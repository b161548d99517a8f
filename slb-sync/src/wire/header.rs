//! The datagram view: fixed header, body and tag.

use super::{Error, Result, TAG_LEN, be16, be32, be64, put16, put32, put64};

/// Length of the fixed header.
pub const HEADER_LEN: usize = 40;
/// The magic bytes every datagram starts with.
pub const MAGIC: [u8; 4] = *b"SLBS";
/// The wire version this implementation speaks.
pub const VERSION: u8 = 1;

mod field {
    pub(super) const MAGIC: usize = 0;
    pub(super) const VERSION: usize = 4;
    pub(super) const TYPE: usize = 5;
    pub(super) const FLAGS: usize = 6;
    pub(super) const CLUSTER: usize = 8;
    pub(super) const NODE: usize = 12;
    pub(super) const EPOCH: usize = 16;
    pub(super) const SEQ: usize = 20;
    pub(super) const STREAM: usize = 28;
    pub(super) const COUNT: usize = 36;
    pub(super) const RESERVED: usize = 38;
}

/// A zero-copy view of a whole datagram (header, body, tag).
///
/// [`Datagram::new_checked`] makes sure the buffer holds a header and a tag; after that every
/// accessor is infallible and cannot panic.
#[derive(Debug, Clone, Copy)]
pub struct Datagram<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Datagram<T> {
    /// Wraps `buffer` without checking it (for emitting into a buffer of known size).
    pub fn new_unchecked(buffer: T) -> Self {
        Datagram { buffer }
    }

    /// Wraps `buffer`, checking that it can hold a header and a tag.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let d = Datagram { buffer };
        d.check_len()?;
        Ok(d)
    }

    /// Checks that the buffer holds a header and a tag.
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < HEADER_LEN + TAG_LEN {
            Err(Error::Truncated)
        } else {
            Ok(())
        }
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// The magic bytes.
    pub fn magic(&self) -> [u8; 4] {
        let mut m = [0; 4];
        m.copy_from_slice(&self.b()[field::MAGIC..field::MAGIC + 4]);
        m
    }

    /// The version.
    pub fn version(&self) -> u8 {
        self.b()[field::VERSION]
    }

    /// The raw message type.
    pub fn msg_type(&self) -> u8 {
        self.b()[field::TYPE]
    }

    /// Header flags.
    pub fn flags(&self) -> u16 {
        be16(self.b(), field::FLAGS)
    }

    /// Cluster id.
    pub fn cluster_id(&self) -> u32 {
        be32(self.b(), field::CLUSTER)
    }

    /// Sender node id.
    pub fn node_id(&self) -> u32 {
        be32(self.b(), field::NODE)
    }

    /// Sender epoch.
    pub fn epoch(&self) -> u32 {
        be32(self.b(), field::EPOCH)
    }

    /// Per-datagram sequence number.
    pub fn seq(&self) -> u64 {
        be64(self.b(), field::SEQ)
    }

    /// Type-specific stream number.
    pub fn stream(&self) -> u64 {
        be64(self.b(), field::STREAM)
    }

    /// Count of entries or ranges in the body.
    pub fn count(&self) -> u16 {
        be16(self.b(), field::COUNT)
    }

    /// Everything the tag covers (header and body).
    pub fn signed_part(&self) -> &[u8] {
        let b = self.b();
        &b[..b.len() - TAG_LEN]
    }

    /// The body.
    pub fn body(&self) -> &[u8] {
        let b = self.b();
        &b[HEADER_LEN..b.len() - TAG_LEN]
    }

    /// The tag.
    pub fn tag(&self) -> &[u8] {
        let b = self.b();
        &b[b.len() - TAG_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Datagram<T> {
    fn bm(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }

    /// Sets the header flags.
    pub fn set_flags(&mut self, v: u16) {
        put16(self.bm(), field::FLAGS, v)
    }

    /// Sets the per-datagram sequence number.
    pub fn set_seq(&mut self, v: u64) {
        put64(self.bm(), field::SEQ, v)
    }

    /// Sets the stream number.
    pub fn set_stream(&mut self, v: u64) {
        put64(self.bm(), field::STREAM, v)
    }

    /// Sets the count.
    pub fn set_count(&mut self, v: u16) {
        put16(self.bm(), field::COUNT, v)
    }

    /// The body, writable.
    pub fn body_mut(&mut self) -> &mut [u8] {
        let len = self.buffer.as_ref().len();
        &mut self.bm()[HEADER_LEN..len - TAG_LEN]
    }

    /// Splits into (signed part, tag), writable tag.
    pub fn split_tag_mut(&mut self) -> (&[u8], &mut [u8]) {
        let len = self.buffer.as_ref().len();
        let (a, b) = self.bm().split_at_mut(len - TAG_LEN);
        (a, b)
    }
}

/// The owned, validated header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeaderRepr {
    /// Message type code.
    pub msg_type: u8,
    /// Header flags.
    pub flags: u16,
    /// Cluster id.
    pub cluster_id: u32,
    /// Sender node id.
    pub node_id: u32,
    /// Sender epoch.
    pub epoch: u32,
    /// Per-datagram sequence number.
    pub seq: u64,
    /// Type-specific stream number.
    pub stream: u64,
    /// Entries or ranges in the body.
    pub count: u16,
}

impl HeaderRepr {
    /// Parses and validates the header (magic, version, sender id). The message type is not
    /// checked here.
    pub fn parse<T: AsRef<[u8]>>(d: &Datagram<T>) -> Result<HeaderRepr> {
        if d.magic() != MAGIC {
            return Err(Error::BadMagic);
        }
        if d.version() != VERSION {
            return Err(Error::Version(d.version()));
        }
        if d.node_id() == 0 {
            return Err(Error::Malformed);
        }
        Ok(HeaderRepr {
            msg_type: d.msg_type(),
            flags: d.flags(),
            cluster_id: d.cluster_id(),
            node_id: d.node_id(),
            epoch: d.epoch(),
            seq: d.seq(),
            stream: d.stream(),
            count: d.count(),
        })
    }

    /// Bytes the header takes.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header into the first [`HEADER_LEN`] bytes of `d`'s buffer.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, d: &mut Datagram<T>) {
        let b = d.bm();
        b[field::MAGIC..field::MAGIC + 4].copy_from_slice(&MAGIC);
        b[field::VERSION] = VERSION;
        b[field::TYPE] = self.msg_type;
        put16(b, field::FLAGS, self.flags);
        put32(b, field::CLUSTER, self.cluster_id);
        put32(b, field::NODE, self.node_id);
        put32(b, field::EPOCH, self.epoch);
        put64(b, field::SEQ, self.seq);
        put64(b, field::STREAM, self.stream);
        put16(b, field::COUNT, self.count);
        put16(b, field::RESERVED, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_buffers_are_rejected_and_fields_round_trip() {
        assert_eq!(
            Datagram::new_checked(&[0u8; HEADER_LEN + TAG_LEN - 1][..]).unwrap_err(),
            Error::Truncated
        );
        let h = HeaderRepr {
            msg_type: 2,
            flags: 3,
            cluster_id: 0xdead_beef,
            node_id: 7,
            epoch: 9,
            seq: u64::MAX - 1,
            stream: 1 << 40,
            count: 29,
        };
        let mut buf = vec![0u8; HEADER_LEN + 8 + TAG_LEN];
        let mut d = Datagram::new_unchecked(&mut buf[..]);
        h.emit(&mut d);
        let d = Datagram::new_checked(&buf[..]).unwrap();
        assert_eq!(HeaderRepr::parse(&d).unwrap(), h);
        assert_eq!(d.body().len(), 8);
        let mut bad = buf.clone();
        bad[4] = 2;
        assert_eq!(
            HeaderRepr::parse(&Datagram::new_checked(&bad[..]).unwrap()),
            Err(Error::Version(2))
        );
        bad[0] = b'X';
        assert_eq!(
            HeaderRepr::parse(&Datagram::new_checked(&bad[..]).unwrap()),
            Err(Error::BadMagic)
        );
    }
}
