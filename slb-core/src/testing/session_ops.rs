//! Session-table operations, decoded from arbitrary bytes.
//!
//! Keys come from a deliberately tiny space ([`KeySpec`]: 256 keys over IPv4 and IPv6, TCP and
//! UDP), so that random sequences hit the same sessions again, collide forward with reverse keys,
//! mix address families and exercise every error path. Every byte string decodes to something:
//! the fuzzer never wastes an input on a parse error.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::backend::BackendId;
use crate::flow::{FlowKey, Protocol};
use crate::session::ConnState;

/// One key of the small key space: bit 7 = IPv6, bit 6 = UDP, bits 0-1 the source host, bits 2-3
/// the destination host, bits 4-5 the source port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KeySpec(pub u8);

impl KeySpec {
    /// The flow key this names.
    pub fn flow(self) -> FlowKey {
        let b = self.0;
        let proto = if b & 0x40 != 0 { Protocol::Udp } else { Protocol::Tcp };
        let (src, dst) = (u16::from(b & 3) + 1, u16::from((b >> 2) & 3) + 1);
        let sport = 1000 + u16::from((b >> 4) & 3);
        if b & 0x80 != 0 {
            let s = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, src);
            let d = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 1, dst);
            FlowKey::new(proto, (s, sport).into(), (d, 80).into())
        } else {
            FlowKey::v4(
                proto,
                Ipv4Addr::new(10, 0, 0, src as u8),
                sport,
                Ipv4Addr::new(10, 0, 1, dst as u8),
                80,
            )
        }
    }
}

/// Table parameters of a model run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelConfig {
    /// Table capacity.
    pub capacity: usize,
    /// Half-open limit.
    pub max_half_open: usize,
}

/// One operation on a session table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionOp {
    /// Insert a session in `state` bound to `backend`, with an optional reverse key.
    Insert {
        /// Forward key.
        key: KeySpec,
        /// Reverse key.
        reverse: Option<KeySpec>,
        /// Backend.
        backend: BackendId,
        /// Initial state.
        state: ConnState,
    },
    /// `get`: find without refreshing or expiring.
    Get(KeySpec),
    /// `lookup`: find for update (collects the session if it expired).
    Lookup(KeySpec),
    /// `lookup` then `record_packet` (a packet in the matched direction).
    RecordPacket(KeySpec),
    /// `lookup` then `set_state`.
    SetState(KeySpec, ConnState),
    /// `lookup` then `set_backend`.
    SetBackend(KeySpec, BackendId),
    /// `lookup` then remove through the entry.
    RemoveEntry(KeySpec),
    /// `remove` by key (either direction).
    Remove(KeySpec),
    /// Let time pass.
    Advance(std::time::Duration),
    /// An incremental expiry sweep over at most this many slots.
    Expire(usize),
    /// A sweep large enough to visit every slot.
    ExpireAll,
    /// Remove every session of a backend.
    RemoveBackend(BackendId),
    /// Insert this many sessions with fresh keys (outside the small key space) in `state`: fill
    /// the table past its capacity.
    Fill(u8, ConnState),
}

/// Decoded keys use 32 of the 256 (both families, both protocols, 4 sources, 2 ports), so that
/// short programs revisit keys and collide forward with reverse keys often.
fn key(b: u8) -> KeySpec {
    KeySpec(b & 0xd3)
}

fn state(b: u8) -> ConnState {
    ConnState::ALL[usize::from(b) % ConnState::ALL.len()]
}

fn backend(b: u8) -> BackendId {
    BackendId(u32::from(b % 4) + 1)
}

/// Times that sit on and next to the default timeouts (10, 30, 60, 120, 300, 900 s).
const EDGES: [u64; 12] = [1, 9, 10, 11, 29, 30, 59, 60, 61, 120, 300, 900];

/// A byte cursor that yields zeros once the input is exhausted.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn next(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
}

impl SessionOp {
    fn decode(input: &mut Bytes<'_>) -> SessionOp {
        let tag = input.next();
        let a = input.next();
        match tag % 16 {
            0..=3 => {
                let r = input.next();
                SessionOp::Insert {
                    key: key(a),
                    reverse: (r & 1 == 1).then(|| key(input.next())),
                    backend: backend(r >> 1),
                    state: state(r >> 3),
                }
            }
            4 => SessionOp::Get(key(a)),
            5 => SessionOp::Lookup(key(a)),
            6 | 7 => SessionOp::RecordPacket(key(a)),
            8 => SessionOp::SetState(key(a), state(input.next())),
            9 => SessionOp::SetBackend(key(a), backend(input.next())),
            10 => SessionOp::RemoveEntry(key(a)),
            11 => SessionOp::Remove(key(a)),
            12 => SessionOp::Advance(std::time::Duration::from_secs(match a % 4 {
                0 => u64::from(a / 4),
                1 => EDGES[usize::from(a / 4) % EDGES.len()],
                2 => u64::from(a / 4) * 15,
                _ => 1,
            })),
            13 => match a % 4 {
                0 => SessionOp::ExpireAll,
                _ => SessionOp::Expire(usize::from(a / 4)),
            },
            14 => SessionOp::RemoveBackend(backend(a)),
            _ => SessionOp::Fill(a % 16, state(input.next())),
        }
    }
}

/// Decodes a whole input: two bytes of table parameters (capacity 1..=48, half-open limit
/// 0..=capacity+1), then operations until the bytes run out.
pub fn decode(bytes: &[u8]) -> (ModelConfig, Vec<SessionOp>) {
    let mut input = Bytes(bytes);
    let capacity = 1 + usize::from(input.next() % 48);
    let max_half_open = usize::from(input.next()) % (capacity + 2);
    let mut ops = Vec::new();
    while !input.0.is_empty() {
        ops.push(SessionOp::decode(&mut input));
    }
    (ModelConfig { capacity, max_half_open }, ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_input_decodes_and_keys_cover_both_families() {
        let (cfg, ops) = decode(&[47, 2, 0, 0x85, 0x0b, 0x03, 12, 5, 15, 3, 2]);
        assert_eq!(cfg, ModelConfig { capacity: 48, max_half_open: 2 });
        assert_eq!(ops.len(), 3);
        assert!(matches!(
            ops[0],
            SessionOp::Insert { key: KeySpec(0x81), reverse: Some(KeySpec(3)), .. }
        ));
        assert_eq!(decode(&[]).1, vec![]);
        let fams: std::collections::HashSet<bool> =
            (0..=255u8).map(|b| KeySpec(b).flow().is_ipv4()).collect();
        assert_eq!(fams.len(), 2);
        let distinct: std::collections::HashSet<FlowKey> =
            (0..=255u8).map(|b| KeySpec(b).flow()).collect();
        assert_eq!(distinct.len(), 256);
    }
}
