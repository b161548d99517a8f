//! Messages: the owned form of a whole datagram, and a zero-copy iterator over entries.

use super::entry::EntryView;
use super::{
    ClusterKey, Datagram, Error, FLAG_COMPLETE, HEADER_LEN, HeaderRepr, Result, TAG_LEN, be32,
    be64, put32, put64,
};
use crate::types::{NodeId, SyncedRecord};

/// Most ranges the engine puts in one NACK or resync ack.
pub const MAX_NACK_RANGES_PER_MSG: usize = 64;

/// Message type codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MessageType {
    /// Session updates (the reliable data stream).
    Updates = 1,
    /// Liveness and stream position.
    Heartbeat = 2,
    /// Request to retransmit data sequence numbers.
    Nack = 3,
    /// Request for a table snapshot.
    ResyncRequest = 4,
    /// Part of a snapshot.
    ResyncChunk = 5,
    /// End of a snapshot.
    ResyncDone = 6,
    /// Snapshot progress from the requester.
    ResyncAck = 7,
}

impl MessageType {
    /// The type with code `c`.
    pub fn from_code(c: u8) -> Option<MessageType> {
        Some(match c {
            1 => MessageType::Updates,
            2 => MessageType::Heartbeat,
            3 => MessageType::Nack,
            4 => MessageType::ResyncRequest,
            5 => MessageType::ResyncChunk,
            6 => MessageType::ResyncDone,
            7 => MessageType::ResyncAck,
            _ => return None,
        })
    }
}

/// An inclusive range of data sequence numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NackRange {
    /// First missing sequence number.
    pub first: u64,
    /// Last missing sequence number (>= `first`).
    pub last: u64,
}

/// An inclusive range of resync chunk indexes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ResyncAckRange {
    /// First missing chunk.
    pub first: u32,
    /// Last missing chunk (>= `first`).
    pub last: u32,
}

/// One message, owned.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Message {
    /// Session updates.
    Updates {
        /// Data sequence number of this datagram.
        data_seq: u64,
        /// The entries.
        entries: Vec<SyncedRecord>,
    },
    /// Heartbeat.
    Heartbeat {
        /// Last data sequence number sent (0: none yet).
        last_data_seq: u64,
        /// Oldest data sequence number a NACK can still recover.
        oldest_retained: u64,
    },
    /// Negative acknowledgement.
    Nack {
        /// The sender of the missing data.
        target: NodeId,
        /// The target's epoch the ranges refer to.
        target_epoch: u32,
        /// Missing ranges.
        ranges: Vec<NackRange>,
    },
    /// Snapshot request.
    ResyncRequest {
        /// Who should answer ([`NodeId::ALL`]: every node).
        target: NodeId,
        /// Request id chosen by the requester.
        request: u32,
    },
    /// Snapshot chunk.
    ResyncChunk {
        /// The requester.
        target: NodeId,
        /// The request answered.
        request: u32,
        /// Chunk index.
        index: u32,
        /// The entries.
        entries: Vec<SyncedRecord>,
    },
    /// End of a snapshot.
    ResyncDone {
        /// The requester.
        target: NodeId,
        /// The request answered.
        request: u32,
        /// Number of chunks.
        chunks: u32,
        /// The sender's last data sequence number when the snapshot was taken.
        as_of: u64,
    },
    /// Snapshot progress.
    ResyncAck {
        /// The snapshot's sender.
        target: NodeId,
        /// The request.
        request: u32,
        /// Lowest chunk not yet received.
        next_missing: u32,
        /// The requester has every chunk.
        complete: bool,
        /// Missing chunk ranges above `next_missing`.
        missing: Vec<ResyncAckRange>,
    },
}

/// Iterates over the entries of an updates or resync-chunk body without copying it.
///
/// Yields one item per entry the header's count announces. An entry with a bad field or an
/// unknown critical extension yields its error and iteration continues with the next entry (the
/// length field still delimits it); a structural error (truncation, a length that does not fit)
/// yields one error and ends the iteration, as do bytes left after the last entry.
#[derive(Clone, Debug)]
pub struct Entries<'a> {
    rest: &'a [u8],
    left: u16,
    done: bool,
}

impl<'a> Entries<'a> {
    /// Iterates over `count` entries in `body`.
    pub fn new(body: &'a [u8], count: u16) -> Self {
        Entries { rest: body, left: count, done: false }
    }
}

impl Iterator for Entries<'_> {
    type Item = Result<SyncedRecord>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if self.left == 0 {
            self.done = true;
            return if self.rest.is_empty() { None } else { Some(Err(Error::Malformed)) };
        }
        self.left -= 1;
        let view = match EntryView::new_checked(self.rest) {
            Ok(v) => v,
            Err(e) => {
                self.done = true;
                return Some(Err(e));
            }
        };
        let len = view.total_len();
        let item = SyncedRecord::parse(&view);
        self.rest = &self.rest[len..];
        Some(item)
    }
}

fn prefix(body: &[u8], n: usize) -> Result<&[u8]> {
    body.get(..n).ok_or(Error::Truncated)
}

fn node(body: &[u8]) -> NodeId {
    NodeId(be32(body, 0))
}

impl Message {
    /// The message's type.
    pub fn msg_type(&self) -> MessageType {
        match self {
            Message::Updates { .. } => MessageType::Updates,
            Message::Heartbeat { .. } => MessageType::Heartbeat,
            Message::Nack { .. } => MessageType::Nack,
            Message::ResyncRequest { .. } => MessageType::ResyncRequest,
            Message::ResyncChunk { .. } => MessageType::ResyncChunk,
            Message::ResyncDone { .. } => MessageType::ResyncDone,
            Message::ResyncAck { .. } => MessageType::ResyncAck,
        }
    }

    /// Parses the body of an authenticated datagram whose header is `h`.
    ///
    /// Entries are parsed strictly here (any bad entry fails the message); the engine instead
    /// iterates with [`Entries`] and skips single bad entries.
    pub fn parse(h: &HeaderRepr, body: &[u8]) -> Result<Message> {
        let ty = MessageType::from_code(h.msg_type).ok_or(Error::UnknownType(h.msg_type))?;
        let entries = |b: &[u8]| Entries::new(b, h.count).collect::<Result<Vec<SyncedRecord>>>();
        let count = usize::from(h.count);
        Ok(match ty {
            MessageType::Updates => {
                Message::Updates { data_seq: h.stream, entries: entries(body)? }
            }
            MessageType::Heartbeat => {
                let b = prefix(body, 8)?;
                Message::Heartbeat { last_data_seq: h.stream, oldest_retained: be64(b, 0) }
            }
            MessageType::Nack => {
                let b = prefix(body, 8 + 16 * count)?;
                let ranges = (0..count)
                    .map(|i| {
                        let at = 8 + 16 * i;
                        let r = NackRange { first: be64(b, at), last: be64(b, at + 8) };
                        if r.first > r.last { Err(Error::Malformed) } else { Ok(r) }
                    })
                    .collect::<Result<_>>()?;
                Message::Nack { target: node(b), target_epoch: be32(b, 4), ranges }
            }
            MessageType::ResyncRequest => {
                let b = prefix(body, 8)?;
                Message::ResyncRequest { target: node(b), request: be32(b, 4) }
            }
            MessageType::ResyncChunk => {
                let b = prefix(body, 8)?;
                let index = u32::try_from(h.stream).map_err(|_| Error::Malformed)?;
                Message::ResyncChunk {
                    target: node(b),
                    request: be32(b, 4),
                    index,
                    entries: entries(&body[8..])?,
                }
            }
            MessageType::ResyncDone => {
                let b = prefix(body, 12)?;
                Message::ResyncDone {
                    target: node(b),
                    request: be32(b, 4),
                    chunks: be32(b, 8),
                    as_of: h.stream,
                }
            }
            MessageType::ResyncAck => {
                let b = prefix(body, 12 + 8 * count)?;
                let missing = (0..count)
                    .map(|i| {
                        let at = 12 + 8 * i;
                        let r = ResyncAckRange { first: be32(b, at), last: be32(b, at + 4) };
                        if r.first > r.last { Err(Error::Malformed) } else { Ok(r) }
                    })
                    .collect::<Result<_>>()?;
                Message::ResyncAck {
                    target: node(b),
                    request: be32(b, 4),
                    next_missing: be32(b, 8),
                    complete: h.flags & FLAG_COMPLETE != 0,
                    missing,
                }
            }
        })
    }

    fn stream(&self) -> u64 {
        match self {
            Message::Updates { data_seq, .. } => *data_seq,
            Message::Heartbeat { last_data_seq, .. } => *last_data_seq,
            Message::ResyncChunk { index, .. } => u64::from(*index),
            Message::ResyncDone { as_of, .. } => *as_of,
            _ => 0,
        }
    }

    fn count(&self) -> usize {
        match self {
            Message::Updates { entries, .. } | Message::ResyncChunk { entries, .. } => {
                entries.len()
            }
            Message::Nack { ranges, .. } => ranges.len(),
            Message::ResyncAck { missing, .. } => missing.len(),
            _ => 0,
        }
    }

    /// Bytes of the body.
    pub fn body_len(&self) -> usize {
        let ents = |e: &[SyncedRecord]| e.iter().map(SyncedRecord::buffer_len).sum::<usize>();
        match self {
            Message::Updates { entries, .. } => ents(entries),
            Message::Heartbeat { .. } | Message::ResyncRequest { .. } => 8,
            Message::Nack { ranges, .. } => 8 + 16 * ranges.len(),
            Message::ResyncChunk { entries, .. } => 8 + ents(entries),
            Message::ResyncDone { .. } => 12,
            Message::ResyncAck { missing, .. } => 12 + 8 * missing.len(),
        }
    }

    /// Bytes of the whole datagram.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + self.body_len() + TAG_LEN
    }

    /// Encodes and signs the message into `out` (which must hold [`Message::buffer_len`]
    /// bytes). `h` supplies the sender fields, the sequence number and the flags; its type,
    /// stream and count are taken from the message. Returns the datagram's length.
    pub fn emit(&self, h: &HeaderRepr, key: &ClusterKey, out: &mut [u8]) -> Result<usize> {
        let len = self.buffer_len();
        let count = u16::try_from(self.count()).map_err(|_| Error::Malformed)?;
        if out.len() < len {
            return Err(Error::Exhausted);
        }
        let mut d = Datagram::new_unchecked(&mut out[..len]);
        let mut hdr = *h;
        hdr.msg_type = self.msg_type() as u8;
        hdr.stream = self.stream();
        hdr.count = count;
        if let Message::ResyncAck { complete: true, .. } = self {
            hdr.flags |= FLAG_COMPLETE;
        }
        hdr.emit(&mut d);
        let body = d.body_mut();
        let write_entries = |b: &mut [u8], e: &[SyncedRecord]| -> Result<()> {
            let mut at = 0;
            for x in e {
                at += x.emit(&mut b[at..])?;
            }
            Ok(())
        };
        match self {
            Message::Updates { entries, .. } => write_entries(body, entries)?,
            Message::Heartbeat { oldest_retained, .. } => put64(body, 0, *oldest_retained),
            Message::Nack { target, target_epoch, ranges } => {
                put32(body, 0, target.0);
                put32(body, 4, *target_epoch);
                for (i, r) in ranges.iter().enumerate() {
                    put64(body, 8 + 16 * i, r.first);
                    put64(body, 16 + 16 * i, r.last);
                }
            }
            Message::ResyncRequest { target, request } => {
                put32(body, 0, target.0);
                put32(body, 4, *request);
            }
            Message::ResyncChunk { target, request, entries, .. } => {
                put32(body, 0, target.0);
                put32(body, 4, *request);
                write_entries(&mut body[8..], entries)?;
            }
            Message::ResyncDone { target, request, chunks, .. } => {
                put32(body, 0, target.0);
                put32(body, 4, *request);
                put32(body, 8, *chunks);
            }
            Message::ResyncAck { target, request, next_missing, missing, .. } => {
                put32(body, 0, target.0);
                put32(body, 4, *request);
                put32(body, 8, *next_missing);
                for (i, r) in missing.iter().enumerate() {
                    put32(body, 12 + 8 * i, r.first);
                    put32(body, 16 + 8 * i, r.last);
                }
            }
        }
        key.sign(&mut d);
        Ok(len)
    }

    /// Encodes into a new vector.
    pub fn to_vec(&self, h: &HeaderRepr, key: &ClusterKey) -> Result<Vec<u8>> {
        let mut v = vec![0u8; self.buffer_len()];
        self.emit(h, key, &mut v)?;
        Ok(v)
    }
}

/// Checks and decodes a whole datagram: length, header, authentication tag, then the body.
/// Does not check the cluster id or replay: the engine does.
pub fn decode_verified(key: &ClusterKey, bytes: &[u8]) -> Result<(HeaderRepr, Message)> {
    let d = Datagram::new_checked(bytes)?;
    let h = HeaderRepr::parse(&d)?;
    key.verify(&d)?;
    let m = Message::parse(&h, d.body())?;
    Ok((h, m))
}
