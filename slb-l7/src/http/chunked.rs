//! A strict, incremental decoder of the chunked transfer coding (RFC 9112 section 7.1).
//!
//! Feed it bytes as they arrive; it reports which ranges of the input are body data and where the
//! message ends. Chunk sizes are hex without sign or whitespace (at most 15 digits), lines must
//! end in CRLF, extensions and trailers are bounded. Anything else is an error: the message is
//! answered with 400 (requests) or the upstream connection is dropped (responses).

use std::ops::Range;

/// Longest chunk extension accepted, bytes.
pub const MAX_EXTENSION: usize = 1024;
/// Longest trailer section accepted, bytes.
pub const MAX_TRAILERS: usize = 8 * 1024;

/// A malformed chunked body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed chunked body: {0}")]
pub struct ChunkError(pub &'static str);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Size { digits: u8 },
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    TrailerLine,
    TrailerLf { empty: bool },
    Done,
}

/// Incremental chunked decoder.
#[derive(Clone, Debug)]
pub struct ChunkedDecoder {
    state: State,
    size: u64,
    remaining: u64,
    ext_len: usize,
    trailer_len: usize,
    data_total: u64,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder::new()
    }
}

impl ChunkedDecoder {
    /// A decoder at the start of a body.
    pub fn new() -> Self {
        ChunkedDecoder {
            state: State::Size { digits: 0 },
            size: 0,
            remaining: 0,
            ext_len: 0,
            trailer_len: 0,
            data_total: 0,
        }
    }

    /// True once the last chunk and the trailers were seen.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Body bytes decoded so far.
    pub fn data_total(&self) -> u64 {
        self.data_total
    }

    /// Decodes from `input`, calling `data` with each range of `input` that is body data.
    /// Returns how many bytes of `input` belong to the body (all of them unless the message
    /// ended inside `input`; bytes after the end are not consumed).
    pub fn feed(
        &mut self,
        input: &[u8],
        mut data: impl FnMut(Range<usize>),
    ) -> Result<usize, ChunkError> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                State::Done => return Ok(i),
                State::Size { digits } => match hex(b) {
                    Some(v) => {
                        if digits >= 15 {
                            return Err(ChunkError("chunk size too large"));
                        }
                        self.size = self.size << 4 | u64::from(v);
                        self.state = State::Size { digits: digits + 1 };
                    }
                    None if digits == 0 => return Err(ChunkError("missing chunk size")),
                    None if b == b';' => {
                        self.ext_len = 0;
                        self.state = State::Extension;
                    }
                    None if b == b'\r' => self.state = State::SizeLf,
                    None => return Err(ChunkError("invalid byte in chunk size")),
                },
                State::Extension => {
                    if b == b'\r' {
                        self.state = State::SizeLf;
                    } else if b == b'\n' || b < 0x20 && b != b'\t' || b == 0x7f {
                        return Err(ChunkError("invalid byte in chunk extension"));
                    } else {
                        self.ext_len += 1;
                        if self.ext_len > MAX_EXTENSION {
                            return Err(ChunkError("chunk extension too long"));
                        }
                    }
                }
                State::SizeLf => {
                    if b != b'\n' {
                        return Err(ChunkError("chunk size line not ended by CRLF"));
                    }
                    if self.size == 0 {
                        self.trailer_len = 0;
                        self.state = State::TrailerStart;
                    } else {
                        self.remaining = self.size;
                        self.state = State::Data;
                    }
                }
                State::Data => {
                    let n = (input.len() - i)
                        .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
                    data(i..i + n);
                    self.data_total += n as u64;
                    self.remaining -= n as u64;
                    i += n;
                    if self.remaining == 0 {
                        self.state = State::DataCr;
                    }
                    continue;
                }
                State::DataCr => {
                    if b != b'\r' {
                        return Err(ChunkError("chunk data not followed by CRLF"));
                    }
                    self.state = State::DataLf;
                }
                State::DataLf => {
                    if b != b'\n' {
                        return Err(ChunkError("chunk data not followed by CRLF"));
                    }
                    self.size = 0;
                    self.state = State::Size { digits: 0 };
                }
                State::TrailerStart => {
                    self.state = if b == b'\r' {
                        State::TrailerLf { empty: true }
                    } else if b == b'\n' {
                        return Err(ChunkError("bare LF in trailers"));
                    } else {
                        State::TrailerLine
                    };
                    self.count_trailer()?;
                }
                State::TrailerLine => {
                    if b == b'\r' {
                        self.state = State::TrailerLf { empty: false };
                    } else if b == b'\n' {
                        return Err(ChunkError("bare LF in trailers"));
                    }
                    self.count_trailer()?;
                }
                State::TrailerLf { empty } => {
                    if b != b'\n' {
                        return Err(ChunkError("trailer line not ended by CRLF"));
                    }
                    self.state = if empty { State::Done } else { State::TrailerStart };
                }
            }
            i += 1;
        }
        Ok(i)
    }

    fn count_trailer(&mut self) -> Result<(), ChunkError> {
        self.trailer_len += 1;
        if self.trailer_len > MAX_TRAILERS {
            return Err(ChunkError("trailers too long"));
        }
        Ok(())
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8], step: usize) -> Result<(Vec<u8>, usize), ChunkError> {
        let mut d = ChunkedDecoder::new();
        let mut out = Vec::new();
        let mut consumed = 0;
        for piece in input.chunks(step.max(1)) {
            let n = d.feed(piece, |r| out.extend_from_slice(&piece[r]))?;
            consumed += n;
            if d.is_done() {
                break;
            }
        }
        Ok((out, consumed))
    }

    #[test]
    fn decodes_in_any_split() {
        let body = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        for step in [1, 2, 3, 7, 100] {
            let (out, consumed) = decode_all(body, step).unwrap();
            assert_eq!(out, b"hello, world", "step {step}");
            assert_eq!(consumed, body.len() - 4, "step {step}: stops before the next message");
        }
    }

    #[test]
    fn rejects_smuggling_shapes() {
        for bad in [
            &b"+5\r\nhello\r\n0\r\n\r\n"[..],
            b" 5\r\nhello\r\n0\r\n\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloXX0\r\n\r\n",
            b"1000000000000000\r\n",
            b"0x5\r\nhello\r\n0\r\n\r\n",
            b"0\r\n\n",
        ] {
            assert!(decode_all(bad, 100).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn incomplete_is_not_done() {
        let mut d = ChunkedDecoder::new();
        assert_eq!(d.feed(b"5\r\nhel", |_| {}), Ok(6));
        assert!(!d.is_done());
        assert_eq!(d.data_total(), 3);
    }
}
