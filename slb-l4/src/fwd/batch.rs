//! `Forwarder::process_batch`: a batch of frames from one port, with the session lookups of the
//! whole batch overlapped.
//!
//! Over a big session table each lookup waits on cache (and TLB) misses: the index bucket, then
//! the session. Links deliver frames in batches, so the batch step first parses every frame and
//! collects the flow keys of those that will look a session up, hands the keys to
//! [`SessionTable::prepare_directed`](slb_core::session::SessionTable::prepare_directed) (which
//! reads all their buckets, then all their sessions, so that the misses overlap), and then runs
//! the ordinary step on each frame in order with its lookup hint. The hints never change an
//! answer: a frame that creates or removes a session makes the hints it invalidates fall back
//! to a plain lookup. A packet to an address that is no service's (a reply, to a client or a
//! FULLNAT local address) is looked up by reverse key alone, saving one memory round: no
//! session has a forward key to such an address (see `Services::vip_filter`).

use std::net::Ipv4Addr;

use slb_core::flow::{FlowKey, Protocol};
use slb_core::session::Prepared;
use slb_core::time::Instant;

use super::process::flow_key;
use crate::frame::FrameBuf;
use crate::fwd::{Forwarder, PortId, Verdict};
use crate::wire::{self, CommonV4, Frag, Kind, Malformed, proto};

/// Frames prepared together (at most 32: one word of reverse-only bits).
const CHUNK: usize = 32;
const _: () = assert!(CHUNK <= 32);

impl Forwarder {
    /// Processes `frames`, all received on `port` at `now`, in order: `verdicts[i]` is what
    /// [`Forwarder::process`] would return for `frames[i]` after the frames before it (the
    /// same rewrites, counters and session changes), but the session lookups of the batch
    /// overlap. Processes `min(frames.len(), verdicts.len())` frames.
    pub fn process_batch(
        &mut self,
        now: Instant,
        frames: &mut [FrameBuf],
        port: PortId,
        verdicts: &mut [Verdict],
    ) {
        let n = frames.len().min(verdicts.len());
        let our_mac = self.ports.get(usize::from(port.0)).map(|p| p.cfg.mac);
        let none = FlowKey::v4(Protocol::Udp, Ipv4Addr::UNSPECIFIED, 0, Ipv4Addr::UNSPECIFIED, 0);
        for (frames, verdicts) in frames[..n].chunks_mut(CHUNK).zip(verdicts[..n].chunks_mut(CHUNK))
        {
            // The common frames (IPv4 TCP/UDP, no options, not fragments) in 20 bytes each;
            // the others parsed in full.
            let mut common = [CommonV4::default(); CHUNK];
            let mut is_common = 0u32;
            let mut kinds = [Err(Malformed); CHUNK];
            let mut keys = [none; CHUNK];
            // Keys to no service's address (replies): looked up by reverse key alone.
            let mut reverse_only = 0u32;
            let mut owner = [0u8; CHUNK];
            let mut nkeys = 0;
            for (i, f) in frames.iter().enumerate() {
                let data = f.as_slice();
                let to_us = || our_mac.is_some_and(|mac| data[0..6] == mac);
                // The frames `process` sends to a session lookup: unicast to us, TCP or UDP,
                // not a fragment.
                if let Some(c) = wire::parse_common(data) {
                    common[i] = c;
                    is_common |= 1 << i;
                    if to_us() {
                        keys[nkeys] = FlowKey::v4(
                            if c.proto == proto::TCP { Protocol::Tcp } else { Protocol::Udp },
                            c.src.into(),
                            c.sport,
                            c.dst.into(),
                            c.dport,
                        );
                        reverse_only |= u32::from(!self.services.may_be_vip4(c.dst)) << nkeys;
                        owner[nkeys] = i as u8;
                        nkeys += 1;
                    }
                    continue;
                }
                kinds[i] = wire::parse::parse_views(data);
                if let Ok(Kind::Ip(m)) = &kinds[i]
                    && matches!(m.proto, proto::TCP | proto::UDP)
                    && m.frag == Frag::No
                    && to_us()
                {
                    keys[nkeys] = flow_key(m);
                    reverse_only |= u32::from(!self.services.may_be_vip(m.dst)) << nkeys;
                    owner[nkeys] = i as u8;
                    nkeys += 1;
                }
            }
            let mut prepared = [Prepared::default(); CHUNK];
            self.table.prepare_directed(&keys[..nkeys], &[reverse_only], &mut prepared[..nkeys]);
            let mut k = 0;
            for (i, (f, v)) in frames.iter_mut().zip(verdicts.iter_mut()).enumerate() {
                f.meta.steady = false;
                let mut hint = Prepared::default();
                if k < nkeys && usize::from(owner[k]) == i {
                    hint = prepared[k];
                    let key = &keys[k];
                    k += 1;
                    if is_common >> i & 1 == 1
                        && let Some(verdict) = self.fast_v4(now, f, port, &common[i], key, hint)
                    {
                        *v = verdict;
                        continue;
                    }
                }
                let kind =
                    if is_common >> i & 1 == 1 { Ok(Kind::Ip(common[i].meta())) } else { kinds[i] };
                *v = self.process_parsed(now, f, port, kind, hint);
            }
        }
    }
}
