//! When a local session change is worth a sync message: IPVS's rule, as a pure function.
//!
//! IPVS (`sync_threshold` "3 50") syncs a connection when its count of client-to-VIP packets
//! modulo the period equals the threshold (packets 3, 53, 103, ...), immediately when TCP enters
//! FIN_WAIT, CLOSE_WAIT, TIME_WAIT or CLOSE, never in SYN_RECV (the handshake may be spoofed),
//! and, with a refresh period, again once the last sync is that old. The dataplane may call
//! [`sync_needed`] itself on its fast path and hand the engine only the events that pass
//! (setting [`SessionEvent::force`](crate::SessionEvent::force)), or let the engine evaluate it.

use std::time::Duration;

use slb_core::session::ConnState;
use slb_core::time::Instant;

/// Trigger parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TriggerConfig {
    /// Packet count at which a session is first synced (IPVS 3).
    pub threshold: u32,
    /// Re-sync every `period` packets after that (IPVS 50); 0 syncs only at `threshold`.
    pub period: u32,
    /// Also sync when the last sync of the session is at least this old (IPVS
    /// `sync_refresh_period`, off by default).
    pub refresh: Option<Duration>,
}

impl Default for TriggerConfig {
    fn default() -> Self {
        TriggerConfig { threshold: 3, period: 50, refresh: None }
    }
}

/// What the trigger looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TriggerInput {
    /// The state before the packet (`None` for a new session).
    pub previous: Option<ConnState>,
    /// The state after the packet.
    pub state: ConnState,
    /// Client-to-VIP packets of the session so far, this one included.
    pub packets_in: u32,
    /// When the session was last synced from this node, if ever.
    pub last_sync: Option<Instant>,
    /// Now.
    pub now: Instant,
}

/// States whose entry forces an immediate sync.
pub const fn forces_sync(state: ConnState) -> bool {
    matches!(
        state,
        ConnState::FinWait | ConnState::CloseWait | ConnState::TimeWait | ConnState::Close
    )
}

/// True when the change described by `i` should be synced under `cfg`.
pub fn sync_needed(cfg: &TriggerConfig, i: &TriggerInput) -> bool {
    if i.state == ConnState::SynRecv {
        return false;
    }
    if i.previous != Some(i.state) && forces_sync(i.state) {
        return true;
    }
    let by_count = if cfg.period == 0 {
        i.packets_in == cfg.threshold
    } else {
        i.packets_in % cfg.period == cfg.threshold % cfg.period
    };
    if by_count {
        return true;
    }
    match (cfg.refresh, i.last_sync) {
        (Some(p), Some(t)) => i.now.saturating_duration_since(t) >= p,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ConnState::*;

    fn input(previous: Option<ConnState>, state: ConnState, packets_in: u32) -> TriggerInput {
        TriggerInput { previous, state, packets_in, last_sync: None, now: Instant::ZERO }
    }

    #[test]
    fn ipvs_3_50() {
        let cfg = TriggerConfig::default();
        let synced: Vec<u32> = (1..=160)
            .filter(|&n| sync_needed(&cfg, &input(Some(Established), Established, n)))
            .collect();
        assert_eq!(synced, vec![3, 53, 103, 153]);
        assert!(!sync_needed(&cfg, &input(None, SynRecv, 3)), "SYN_RECV is never synced");
        assert!(sync_needed(&cfg, &input(Some(SynRecv), Established, 3)));
        assert!(
            !sync_needed(&cfg, &input(Some(SynRecv), Established, 2)),
            "ESTABLISHED is not forced"
        );
        assert!(sync_needed(&cfg, &input(Some(Udp), Udp, 3)));
    }

    #[test]
    fn closing_states_force_a_sync_once() {
        let cfg = TriggerConfig::default();
        for s in [FinWait, CloseWait, TimeWait, Close] {
            assert!(sync_needed(&cfg, &input(Some(Established), s, 17)), "{s:?}");
            assert!(!sync_needed(&cfg, &input(Some(s), s, 18)), "staying in {s:?}");
        }
        assert!(!sync_needed(&cfg, &input(Some(Established), LastAck, 17)));
    }

    #[test]
    fn period_zero_and_refresh() {
        let once = TriggerConfig { threshold: 3, period: 0, refresh: None };
        assert!(sync_needed(&once, &input(Some(Established), Established, 3)));
        assert!(!sync_needed(&once, &input(Some(Established), Established, 53)));
        let refresh =
            TriggerConfig { refresh: Some(Duration::from_secs(10)), ..Default::default() };
        let mut i = input(Some(Established), Established, 20);
        i.last_sync = Some(Instant::from_secs(1));
        i.now = Instant::from_secs(10);
        assert!(!sync_needed(&refresh, &i));
        i.now = Instant::from_secs(11);
        assert!(sync_needed(&refresh, &i));
        assert!(!sync_needed(&TriggerConfig::default(), &i), "no refresh by default");
    }
}
