//! Conversions between the forwarder's session views and slb-sync's records.

use slb_core::flow::{FlowKey, Protocol};
use slb_core::time::Instant;
use slb_sync::{EntryFlags, ForwardMode, SessionKey, SessionRecord};

use crate::fwd::{Mode, SessionChange, SessionInstall};

/// The record a peer needs for `c` (remaining timeout measured from `now`).
pub fn record_of(c: &SessionChange, now: Instant) -> SessionRecord {
    let mode = match c.mode {
        Mode::Nat => ForwardMode::Nat,
        Mode::FullNat => ForwardMode::FullNat,
        Mode::Dr => ForwardMode::Dr,
    };
    let mut r = SessionRecord::new(
        SessionKey {
            proto: c.forward.proto,
            client: c.forward.src_addr(),
            virt: c.forward.dst_addr(),
        },
        c.real,
        mode,
        c.state,
        c.expires.saturating_duration_since(now),
    );
    r.local = c.local();
    if c.mode == Mode::Dr {
        r.flags.set(EntryFlags::INBOUND_ONLY, true);
    }
    if c.client_mac != [0; 6] {
        r.client_next_hop = Some(c.client_mac);
    }
    r
}

/// What to install for a peer's record at `now`; `None` for records the forwarder does not
/// serve (persistence templates, tunnels, protocols other than TCP and UDP).
pub fn install_of(r: &SessionRecord, now: Instant) -> Option<SessionInstall> {
    if r.flags.contains(EntryFlags::TEMPLATE)
        || !matches!(r.key.proto, Protocol::Tcp | Protocol::Udp)
    {
        return None;
    }
    let mode = match r.mode {
        ForwardMode::Nat => Mode::Nat,
        ForwardMode::FullNat => Mode::FullNat,
        ForwardMode::Dr => Mode::Dr,
        _ => return None,
    };
    Some(SessionInstall {
        forward: FlowKey::new(r.key.proto, r.key.client, r.key.virt),
        real: r.real,
        local: r.local,
        mode,
        state: r.state,
        expires: now + r.timeout,
        client_mac: r.client_next_hop,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use slb_core::session::ConnState;
    use std::time::Duration;

    #[test]
    fn fullnat_change_round_trips_through_a_record() {
        let fwd = FlowKey::new(
            Protocol::Tcp,
            "10.0.1.2:40000".parse().unwrap(),
            "10.0.0.100:80".parse().unwrap(),
        );
        let rev = FlowKey::new(
            Protocol::Tcp,
            "10.0.2.11:80".parse().unwrap(),
            "10.0.2.21:5123".parse().unwrap(),
        );
        let c = SessionChange {
            forward: fwd,
            reverse: Some(rev),
            real: "10.0.2.11:80".parse().unwrap(),
            mode: Mode::FullNat,
            state: ConnState::Established,
            previous: Some(ConnState::SynRecv),
            packets_in: 3,
            expires: Instant::from_secs(910),
            client_mac: [2, 0, 0, 0, 1, 2],
            removed: false,
            from_peer: false,
        };
        let r = record_of(&c, Instant::from_secs(10));
        assert_eq!(r.timeout, Duration::from_secs(900));
        assert_eq!(r.local, Some("10.0.2.21:5123".parse().unwrap()));
        assert_eq!(r.client_next_hop, Some([2, 0, 0, 0, 1, 2]));
        let i = install_of(&r, Instant::from_secs(20)).unwrap();
        assert_eq!(i.forward, fwd);
        assert_eq!(i.expires, Instant::from_secs(920), "remaining timeout from the receiver's now");
        assert_eq!(
            (i.real, i.local, i.mode, i.state),
            (c.real, r.local, Mode::FullNat, ConnState::Established)
        );
        let mut t = r.clone();
        t.flags.set(EntryFlags::TEMPLATE, true);
        assert!(install_of(&t, Instant::ZERO).is_none(), "templates are not sessions");
    }

    #[test]
    fn dr_records_are_inbound_only_without_local_address() {
        let fwd = FlowKey::new(
            Protocol::Udp,
            "10.0.1.2:5353".parse().unwrap(),
            "10.0.0.100:53".parse().unwrap(),
        );
        let c = SessionChange {
            forward: fwd,
            reverse: None,
            real: "10.0.2.11:53".parse().unwrap(),
            mode: Mode::Dr,
            state: ConnState::Udp,
            previous: None,
            packets_in: 3,
            expires: Instant::from_secs(300),
            client_mac: [0; 6],
            removed: false,
            from_peer: false,
        };
        let r = record_of(&c, Instant::ZERO);
        assert!(r.flags.contains(EntryFlags::INBOUND_ONLY));
        assert_eq!((r.local, r.client_next_hop), (None, None));
        assert_eq!(install_of(&r, Instant::ZERO).unwrap().client_mac, None);
    }
}
