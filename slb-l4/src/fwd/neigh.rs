//! Neighbours: the IP -> MAC table the forwarder keeps from the ARP and NDISC traffic it sees
//! (plus static entries), the frames held while a next hop resolves, and the announcements
//! (gratuitous ARP, unsolicited neighbour advertisements) it sends. The ARP and ND messages
//! themselves are parsed and built by [`crate::wire::arp`] and [`crate::wire::nd`].
//!
//! Learning follows RFC 826: the sender of an ARP packet is learned when the packet targets one
//! of our addresses, or when the sender is already in the table (refresh, also from gratuitous
//! ARP). Static entries are never overwritten. Entries do not age: a MAC change is learned from
//! the new owner's gratuitous ARP or its next ARP exchange with us.

use std::net::IpAddr;

use hashbrown::HashMap;
use slb_core::time::Instant;

use super::config::Mac;
use crate::frame::FrameBuf;
use crate::wire::arp::ArpRepr;
use crate::wire::nd::NdFrame;

#[derive(Clone, Copy, Debug)]
struct Entry {
    mac: Mac,
    is_static: bool,
}

/// Frames held per unresolved neighbour while it is being resolved (Linux holds up to
/// `unres_qlen_bytes`, about 200 KB, per neighbour; a bounded frame count is enough here: the
/// first packets of new flows).
pub(crate) const HOLD_PER_NEIGHBOUR: usize = 16;
/// Frames held for all unresolved neighbours together.
pub(crate) const HOLD_TOTAL: usize = 256;
/// How long a held frame waits for its neighbour.
pub(crate) const HOLD_TIME: std::time::Duration = std::time::Duration::from_secs(3);

/// A frame waiting for its next hop's MAC.
#[derive(Debug)]
struct Held {
    since: Instant,
    port: u8,
    frame: Vec<u8>,
}

/// The neighbour table.
#[derive(Debug, Default)]
pub(crate) struct Neighbours {
    map: HashMap<IpAddr, Entry>,
    /// Last solicitation per unresolved address.
    pending: HashMap<IpAddr, Instant>,
    /// Frames waiting for a neighbour, and how many in all.
    held: HashMap<IpAddr, Vec<Held>>,
    n_held: usize,
    /// Frames whose neighbour resolved, ready to send (port, frame).
    released: std::collections::VecDeque<(u8, Vec<u8>)>,
    /// Held frames dropped because they waited too long.
    pub(crate) expired: u64,
    /// Changes to `map` so far: a MAC cached elsewhere is good while this is unchanged.
    changes: u64,
}

impl Neighbours {
    #[inline]
    pub(crate) fn get(&self, ip: &IpAddr) -> Option<Mac> {
        self.map.get(ip).map(|e| e.mac)
    }

    /// Counts changes to the table (see [`Neighbours::get`] callers that cache a MAC).
    #[inline]
    pub(crate) fn generation(&self) -> u64 {
        self.changes
    }

    pub(crate) fn set_static(&mut self, ip: IpAddr, mac: Mac) {
        self.changes += 1;
        self.map.insert(ip, Entry { mac, is_static: true });
        self.pending.remove(&ip);
        self.release(ip, mac);
    }

    /// Holds `frame` (fully rewritten but for its destination MAC) until `ip` resolves; false
    /// when the queues are full.
    pub(crate) fn hold(&mut self, ip: IpAddr, now: Instant, port: u8, frame: &[u8]) -> bool {
        let q = self.held.entry(ip).or_default();
        if q.len() >= HOLD_PER_NEIGHBOUR || self.n_held >= HOLD_TOTAL {
            return false;
        }
        q.push(Held { since: now, port, frame: frame.to_vec() });
        self.n_held += 1;
        true
    }

    /// Moves the frames held for `ip` to the release queue with their destination MAC set.
    fn release(&mut self, ip: IpAddr, mac: Mac) {
        if let Some(q) = self.held.remove(&ip) {
            self.n_held -= q.len();
            for mut h in q {
                h.frame[0..6].copy_from_slice(&mac);
                self.released.push_back((h.port, h.frame));
            }
        }
    }

    /// The next released frame.
    pub(crate) fn pop_released(&mut self) -> Option<(u8, Vec<u8>)> {
        self.released.pop_front()
    }

    /// Drops held frames older than [`HOLD_TIME`]; returns how many.
    pub(crate) fn expire_held(&mut self, now: Instant) -> usize {
        let before = self.n_held;
        self.held.retain(|_, q| {
            q.retain(|h| now < h.since + HOLD_TIME);
            !q.is_empty()
        });
        self.n_held = self.held.values().map(Vec::len).sum();
        let n = before - self.n_held;
        self.expired += n as u64;
        n
    }

    /// Learns `ip` at `mac` if `force` (the packet was for us) or the entry exists already.
    pub(crate) fn learn(&mut self, ip: IpAddr, mac: Mac, force: bool) {
        if mac == [0; 6] || mac[0] & 1 == 1 || ip.is_unspecified() {
            return;
        }
        match self.map.get_mut(&ip) {
            Some(e) if e.is_static || e.mac == mac => {}
            Some(e) => {
                e.mac = mac;
                self.changes += 1;
            }
            None if force || self.pending.contains_key(&ip) => {
                self.changes += 1;
                self.map.insert(ip, Entry { mac, is_static: false });
                self.pending.remove(&ip);
                self.release(ip, mac);
            }
            None => {}
        }
    }

    /// True when a solicitation for `ip` may be sent at `now` (rate limited per address).
    pub(crate) fn may_solicit(
        &mut self,
        ip: IpAddr,
        now: Instant,
        every: std::time::Duration,
    ) -> bool {
        match self.pending.get(&ip) {
            Some(&t) if now < t + every => false,
            _ => {
                if self.pending.len() > 4096 {
                    self.pending.clear();
                }
                self.pending.insert(ip, now);
                true
            }
        }
    }

    pub(crate) fn entries(&self) -> impl Iterator<Item = (IpAddr, Mac, bool)> + '_ {
        self.map.iter().map(|(ip, e)| (*ip, e.mac, e.is_static))
    }
}

/// Writes the announcement of `ip` at `mac` into `buf`: a gratuitous ARP (IPv4) or an
/// unsolicited neighbour advertisement (IPv6).
pub(crate) fn announcement(buf: &mut FrameBuf, mac: Mac, ip: IpAddr) {
    match ip {
        IpAddr::V4(a) => {
            let r = ArpRepr::gratuitous(mac, a);
            buf.build(r.buffer_len(), |f| r.emit(f));
        }
        IpAddr::V6(a) => {
            let r = NdFrame::unsolicited_advert(mac, a);
            buf.build(r.buffer_len(), |f| r.emit(f));
        }
    }
}
