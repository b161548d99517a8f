//! The batch step's fast path: a packet of an established IPv4 TCP or UDP flow whose rewrite
//! needs nothing unusual, handled in one pass with the fewest reads and copies.
//!
//! [`Forwarder::fast_v4`] either handles a frame completely, exactly as
//! [`Forwarder::process`] would (the same rewrite, verdict, counters and session changes), or
//! declines *before changing anything* that the general step would not change the same way,
//! and the general step then runs. The only thing it may have done before declining is the
//! session lookup, whose one side effect (collecting an expired session) the general step's
//! own lookup would have had, and which it does not repeat. Declined: packets a cluster's sync
//! reports (state changes, the sync filter's counts), IPv6, IP
//! options, fragments, checksums that are not known (or, with
//! `UnknownCsum::AssumeComplete`, assumed) to be complete, new flows, finished TCP
//! sessions hit by a SYN, TTL 1, `expire_nodest_conn`, peer-installed sessions, TOA, unknown
//! next hops. `tests/prop_batch.rs` and the `l4_frame` fuzz target compare `process_batch`
//! (which takes this path) with `process` frame by frame (which never does).

use slb_core::flow::FlowKey;
use slb_core::session::{ConnState, Direction, Prepared, TcpFlags, tcp_transition};
use slb_core::time::Instant;

use super::config::{Mode, PortId, UnknownCsum};
use super::process::{pure_syn, src_mac, visibility};
use super::rewrite::{Hop, real_hop, rewrite_v4, session_ends, set_macs};
use super::{Forwarder, Verdict};
use crate::frame::{CsumState, FrameBuf};
use crate::wire::{CommonV4, proto};

impl Forwarder {
    /// Handles `frame` (parsed into `m`: IPv4, no options, not a fragment, TCP or UDP; sent to
    /// port `port`'s MAC, with flow key `key`) if it is the common case; `None` when the general
    /// step must run instead.
    #[inline]
    pub(super) fn fast_v4(
        &mut self,
        now: Instant,
        frame: &mut FrameBuf,
        port: PortId,
        m: &CommonV4,
        key: &FlowKey,
        hint: Prepared,
    ) -> Option<Verdict> {
        let complete = match frame.meta.csum {
            CsumState::Complete => true,
            CsumState::Partial => false,
            // As `needs_full_csum` decides: trusted only when the configuration says so.
            CsumState::Unknown => self.cfg.unknown_csum == UnknownCsum::AssumeComplete,
        };
        if !complete {
            return None;
        }
        let is_tcp = m.proto == proto::TCP;
        let flags = TcpFlags::from_bits(m.tcp_flags);
        let mut e = self.table.lookup_prepared(key, hint, now)?;
        let dir = e.direction();
        let s = e.session();
        let (backend, state, mut ext, packets_in) = (s.backend(), s.state(), s.ext, s.packets_in);
        if s.flags & super::PEER_SESSION != 0 {
            return None;
        }
        let mode = self.services.list.get(usize::from(ext.svc))?.mode();
        if (mode != Mode::Dr && m.ttl <= 1) || self.cfg.expire_nodest_conn {
            return None;
        }
        let mut next = state;
        if is_tcp {
            let inbound = dir == Direction::Inbound;
            if inbound && pure_syn(flags) && state.is_done() {
                return None;
            }
            next = tcp_transition(Some(state), dir, visibility(mode), flags).unwrap_or(state);
            let toa = mode == Mode::FullNat
                && match dir {
                    Direction::Inbound => {
                        pure_syn(flags)
                            || (state == ConnState::SynRecv && next == ConnState::Established)
                    }
                    Direction::Outbound => flags.syn && flags.ack,
                };
            if toa {
                return None;
            }
        }
        // With a cluster, a packet whose step reports the session (a state change, or the
        // inbound count the sync filter picks) takes the general step, which reports it.
        if self.sync.reporting()
            && (next != state
                || (dir == Direction::Inbound
                    && self.sync.count_matches(packets_in.saturating_add(1))))
        {
            return None;
        }
        // New addresses (IPv4: the table keeps both keys of a session in one family).
        let (ends, _) = session_ends(&e, &self.reals, (dir, mode), &ext, backend, key)?;
        let v4 = |e: Option<(std::net::IpAddr, u16)>| match e {
            None => Some(None),
            Some((std::net::IpAddr::V4(a), p)) => Some(Some((a, p))),
            Some(_) => None,
        };
        let (src, dst) = (v4(ends.src)?, v4(ends.dst)?);
        // Egress port and next hop: known MACs only.
        let (out, mac) = match dir {
            Direction::Inbound => {
                let r = self.reals.get_mut(backend.0 as usize)?;
                let (p, hop) = r.route?;
                match real_hop(&self.neigh, r, hop) {
                    Hop::Mac(mac) => (p, mac),
                    Hop::Ip(_) => return None,
                }
            }
            Direction::Outbound => {
                if ext.client_mac == [0; 6] || usize::from(ext.client_port) >= self.ports.len() {
                    return None;
                }
                (PortId(ext.client_port), ext.client_mac)
            }
        };
        // Committed: the session, then the frame, then the counters.
        if next != state {
            e.set_state(next, now);
        }
        let count = e.record_packet(now);
        frame.meta.steady = if is_tcp {
            next == ConnState::Established
        } else {
            count >= super::offload::UDP_STEADY_AFTER
        };
        let inbound = dir == Direction::Inbound;
        if inbound {
            ext.client_mac = src_mac(frame.as_slice());
            ext.client_port = port.0;
            *e.ext_mut() = ext;
        }
        let f = frame.as_mut_slice();
        rewrite_v4(f, (CommonV4::L4, m.proto, m.end()), src, dst, mode != Mode::Dr);
        set_macs(f, mac, self.ports[usize::from(out.0)].cfg.mac);
        let bytes = usize::from(m.total);
        self.stats.rx += 1;
        self.stats.forwarded += 1;
        if let Some(s) = self.services.list.get_mut(usize::from(ext.svc)) {
            s.stats.packet(inbound, bytes);
        }
        if let Some(r) = self.reals.get_mut(backend.0 as usize) {
            r.stats.packet(inbound, bytes);
        }
        Some(Verdict::Forward(out))
    }
}
