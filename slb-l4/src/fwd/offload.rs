//! The forwarder's side of a flow offload (e.g. the XDP flow cache of
//! [`crate::link::XdpLink`]): which rewrites an offload may replay, and the traffic it reports
//! back.
//!
//! ```text
//!   process_batch: a frame of an established flow takes the fast path
//!     -> frame.meta.steady = true: this rewrite is the flow's steady one in this direction
//!   the offload replays it on later frames of the flow (none with SYN, FIN or RST: those, and
//!     anything it does not know, still come here)
//!   Forwarder::offload_refresh(key, packets, bytes): counts what it forwarded, keeps the
//!     session alive, and says whether it may go on
//! ```

use slb_core::backend::BackendState;
use slb_core::flow::{FlowKey, Protocol};
use slb_core::session::{ConnState, Direction};
use slb_core::time::Instant;

use super::Forwarder;
use super::sync::PEER_SESSION;

/// Packets a UDP flow passes in one direction before that direction's rewrite is steady (as a
/// session is synced once its third packet has passed).
pub(super) const UDP_STEADY_AFTER: u32 = 3;

impl Forwarder {
    /// Accounts `packets` packets (`bytes` IP bytes) of the flow `key` that an offload forwarded
    /// with the flow's steady rewrite since it last reported: counts them for the service and
    /// the real server, refreshes the session's idle timeout if any passed, and returns
    /// whether the offload may keep forwarding the flow. `false` (drop the cached rewrite)
    /// when the session is gone or expired, no longer established, installed by a cluster
    /// peer, or (with `expire_nodest_conn`) its real server is not up; the frames then come
    /// back through [`Forwarder::process_batch`], which applies the usual policy.
    pub fn offload_refresh(
        &mut self,
        now: Instant,
        key: &FlowKey,
        packets: u64,
        bytes: u64,
    ) -> bool {
        let Some(mut e) = self.table.lookup(key, now) else { return false };
        let dir = e.direction();
        let s = e.session();
        let (backend, state, svc) = (s.backend(), s.state(), s.ext.svc);
        let steady = (key.proto != Protocol::Tcp || state == ConnState::Established)
            && s.flags & PEER_SESSION == 0;
        let inbound = dir == Direction::Inbound;
        let mut report = None;
        if packets > 0 {
            let old = s.packets_in;
            let count = e.record_packets(now, u32::try_from(packets).unwrap_or(u32::MAX));
            // With a cluster: the resync the packets' own steps would have sent.
            if inbound && self.sync.count_crossed(old, count) {
                report = Some((e.session().clone(), e.keys()));
            }
            self.stats.offloaded += packets;
            if let Some(s) = self.services.list.get_mut(usize::from(svc)) {
                s.stats.packets(inbound, packets, bytes);
            }
            if let Some(r) = self.reals.get_mut(backend.0 as usize) {
                r.stats.packets(inbound, packets, bytes);
            }
        }
        if let Some((s, (fwd, rev))) = report
            && let Some(mode) = self.services.list.get(usize::from(svc)).map(|v| v.mode())
        {
            self.report_change(fwd, rev, &s, Some(state), mode);
        }
        let real_up =
            self.reals.get(backend.0 as usize).is_some_and(|r| r.state == BackendState::Up);
        steady && (real_up || !self.cfg.expire_nodest_conn)
    }
}
