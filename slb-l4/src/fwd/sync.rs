//! Hooks for session replication: the forwarder reports session changes and installs sessions
//! learned from peers. No replication protocol here (slb-l4's `cluster` module maps these types
//! to slb-sync's); everything is pure and takes `now`.
//!
//! - **Changes out**: after [`Forwarder::enable_session_changes`], packets that change a
//!   session's state, inbound packets whose count matches the [`ChangeFilter`] (IPVS "3 50"
//!   by default) and removals of sessions that local traffic owns (expiry sweep, a SYN reusing a
//!   finished session's ports) queue a [`SessionChange`], bounded (overflow counted in
//!   [`SyncCounters::changes_dropped`]). Drain them with [`Forwarder::poll_session_change`].
//! - **Sessions in**: [`Forwarder::install_session`] inserts or updates a session from its
//!   forward key, real server address, FULLNAT local address, state and expiry, with both keys,
//!   so replies of the flow find it too. Installed sessions carry [`PEER_SESSION`] in their
//!   flags until local client traffic passes through them (then this node owns them).
//!   [`Forwarder::remove_peer_session`] applies a peer's removal.
//! - **Addresses**: [`Forwarder::set_quiet`] stops answering ARP/ND for an owned address
//!   (a node that is not ready, or whose address a peer holds); [`Forwarder::adopt_addr`]
//!   makes the forwarder answer for another node's address (takeover), and
//!   [`Forwarder::announcements_for`] builds the gratuitous ARPs / unsolicited NAs to send.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};

use hashbrown::HashSet;
use slb_core::backend::BackendId;
use slb_core::flow::{FlowKey, Protocol};
use slb_core::session::{ConnState, InsertError, Session, SessionView};
use slb_core::time::Instant;

use super::config::{Mac, Mode, PortId};
use super::neigh;
use super::service::{Real, Services};
use super::{Forwarder, Owned, SessionData};
use crate::frame::FrameBuf;

/// [`Session::flags`] bit: installed from a peer, not (yet) carrying local client traffic.
pub const PEER_SESSION: u8 = 0x01;

/// Which inbound packet counts report a change (IPVS `sync_threshold`): counts equal to
/// `threshold` modulo `period` (`period` 0: only `threshold` itself).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChangeFilter {
    /// First count reported (IPVS 3).
    pub threshold: u32,
    /// Reported again every `period` packets (IPVS 50; 0: never again).
    pub period: u32,
}

impl Default for ChangeFilter {
    fn default() -> Self {
        ChangeFilter { threshold: 3, period: 50 }
    }
}

impl ChangeFilter {
    #[inline]
    fn matches(&self, count: u32) -> bool {
        if self.period == 0 {
            count == self.threshold
        } else {
            count % self.period == self.threshold % self.period
        }
    }

    /// True when a count in `(old, new]` is reported: packets counted in bulk (an offload's)
    /// trigger the report their last one-by-one count would have.
    fn matches_any(&self, old: u32, new: u32) -> bool {
        if self.period != 0 && new.saturating_sub(old) >= self.period {
            return true;
        }
        (old.saturating_add(1)..=new).any(|c| self.matches(c))
    }
}

/// A session as the forwarder reports it: everything a peer needs to forward both directions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionChange {
    /// Client -> virtual service.
    pub forward: FlowKey,
    /// Real server -> client (NAT) or -> local address (FULLNAT); none in DR.
    pub reverse: Option<FlowKey>,
    /// The real server's address and port as used by the flow.
    pub real: SocketAddr,
    /// Forwarding mode of the service.
    pub mode: Mode,
    /// State after the change.
    pub state: ConnState,
    /// State before the packet (`None`: the session is new, or this is a snapshot).
    pub previous: Option<ConnState>,
    /// Client-to-VIP packets this node counted.
    pub packets_in: u32,
    /// When the session expires unless refreshed.
    pub expires: Instant,
    /// MAC of the next hop towards the client (zero when unknown).
    pub client_mac: Mac,
    /// The session was removed.
    pub removed: bool,
    /// The session was installed from a peer and no local client traffic claimed it.
    pub from_peer: bool,
}

impl SessionChange {
    /// The FULLNAT local address and port of the flow.
    pub fn local(&self) -> Option<SocketAddr> {
        match (self.mode, self.reverse) {
            (Mode::FullNat, Some(r)) => Some(SocketAddr::new(r.dst, r.dst_port)),
            _ => None,
        }
    }
}

/// A session learned from a peer, to install.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionInstall {
    /// Client -> virtual service.
    pub forward: FlowKey,
    /// The real server (address and port the flow uses).
    pub real: SocketAddr,
    /// The FULLNAT local address and port (required in FULLNAT).
    pub local: Option<SocketAddr>,
    /// Forwarding mode (must be the service's).
    pub mode: Mode,
    /// Connection state.
    pub state: ConnState,
    /// Expiry (now + the remaining timeout the peer sent).
    pub expires: Instant,
    /// MAC of the next hop towards the client, if the peer knew it.
    pub client_mac: Option<Mac>,
}

/// What [`Forwarder::install_session`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Installed {
    /// A new session.
    New,
    /// The existing session (same real server and keys) took the peer's state and expiry.
    Updated,
    /// A peer-installed session with another target was replaced.
    Replaced,
}

/// Why a session was not installed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InstallError {
    /// No service for the virtual address, port and protocol.
    #[error("no such service")]
    NoService,
    /// The service forwards in another mode.
    #[error("forwarding mode differs from the service's")]
    ModeMismatch,
    /// The real server is not one of the service's.
    #[error("unknown real server")]
    UnknownReal,
    /// FULLNAT without a local address, or one of another family.
    #[error("FULLNAT session without a usable local address")]
    NoLocal,
    /// The expiry has passed already.
    #[error("already expired")]
    Expired,
    /// Local client traffic owns a session with this key and another target: kept.
    #[error("a live local session with another target holds the key")]
    LocalConflict,
    /// The session table refused it.
    #[error(transparent)]
    Table(#[from] InsertError),
}

/// Counters of the replication hooks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncCounters {
    /// Changes queued.
    pub changes: u64,
    /// Changes dropped because the queue was full.
    pub changes_dropped: u64,
    /// Sessions installed new.
    pub installed: u64,
    /// Sessions updated from a peer.
    pub updated: u64,
    /// Installs refused (any [`InstallError`]).
    pub install_refused: u64,
    /// Peer-installed sessions whose reverse key was taken by a stale peer session (removed).
    pub reverse_reclaimed: u64,
    /// Sessions removed on a peer's request.
    pub removed: u64,
}

#[derive(Debug)]
struct Changes {
    filter: ChangeFilter,
    queue: VecDeque<SessionChange>,
    capacity: usize,
}

/// The replication state a forwarder carries (empty unless used).
#[derive(Debug, Default)]
pub(super) struct SyncHooks {
    changes: Option<Box<Changes>>,
    quiet: HashSet<IpAddr>,
    adopted: HashSet<IpAddr>,
    counters: SyncCounters,
}

impl SyncHooks {
    #[inline]
    pub(super) fn quiet(&self, ip: &IpAddr) -> bool {
        !self.quiet.is_empty() && self.quiet.contains(ip)
    }

    #[inline]
    pub(super) fn reporting(&self) -> bool {
        self.changes.is_some()
    }

    /// True when an inbound packet bringing the count to `count` is reported.
    #[inline]
    pub(super) fn count_matches(&self, count: u32) -> bool {
        self.changes.as_ref().is_some_and(|c| c.filter.matches(count))
    }

    /// True when inbound packets bringing the count from `old` to `new` are reported.
    pub(super) fn count_crossed(&self, old: u32, new: u32) -> bool {
        self.changes.as_ref().is_some_and(|c| c.filter.matches_any(old, new))
    }

    pub(super) fn push(&mut self, change: SessionChange) {
        let Some(c) = self.changes.as_mut() else { return };
        if c.queue.len() >= c.capacity {
            self.counters.changes_dropped += 1;
            return;
        }
        self.counters.changes += 1;
        c.queue.push_back(change);
    }
}

/// The real server address a flow to `backend` uses (port 0 in the configuration: the
/// client's destination port).
pub(super) fn real_addr(reals: &[Real], backend: BackendId, fwd: &FlowKey) -> SocketAddr {
    match reals.get(backend.0 as usize) {
        Some(r) if r.addr.port() == 0 => SocketAddr::new(r.addr.ip(), fwd.dst_port),
        Some(r) => r.addr,
        None => SocketAddr::new(fwd.dst, fwd.dst_port),
    }
}

/// The change describing `v` (`removed` when it is going away).
pub(super) fn change_of(
    v: &SessionView<'_, SessionData>,
    reals: &[Real],
    services: &Services,
    removed: bool,
) -> SessionChange {
    let s = v.session;
    let mode = services.list.get(usize::from(s.ext.svc)).map_or(Mode::Nat, |svc| svc.mode());
    let real = match (mode, v.reverse) {
        (Mode::Nat | Mode::FullNat, Some(r)) => SocketAddr::new(r.src, r.src_port),
        _ => real_addr(reals, s.backend(), &v.forward),
    };
    SessionChange {
        forward: v.forward,
        reverse: v.reverse,
        real,
        mode,
        state: s.state(),
        previous: None,
        packets_in: s.packets_in,
        expires: s.expires(),
        client_mac: s.ext.client_mac,
        removed,
        from_peer: s.flags & PEER_SESSION != 0,
    }
}

impl Forwarder {
    /// Starts reporting session changes (see the module docs), keeping at most `capacity`
    /// unread.
    pub fn enable_session_changes(&mut self, filter: ChangeFilter, capacity: usize) {
        self.sync.changes =
            Some(Box::new(Changes { filter, queue: VecDeque::new(), capacity: capacity.max(1) }));
    }

    /// The next session change, oldest first.
    pub fn poll_session_change(&mut self) -> Option<SessionChange> {
        self.sync.changes.as_mut()?.queue.pop_front()
    }

    /// Counters of the replication hooks.
    pub fn sync_counters(&self) -> SyncCounters {
        self.sync.counters
    }

    /// Every live, established-or-later session (half-open ones are not replicated, as in IPVS),
    /// for a snapshot a peer asked for.
    pub fn session_snapshot(&self, now: Instant) -> impl Iterator<Item = SessionChange> + '_ {
        self.table
            .iter()
            .filter(move |v| v.session.expires() > now && !v.session.state().is_half_open())
            .map(|v| change_of(&v, &self.reals, &self.services, false))
    }

    /// Sessions installed from a peer and not claimed by local traffic (walks the table).
    pub fn peer_sessions(&self) -> usize {
        self.table.iter().filter(|v| v.session.flags & PEER_SESSION != 0).count()
    }

    /// Installs or updates a session learned from a peer (see the module docs).
    pub fn install_session(
        &mut self,
        now: Instant,
        s: &SessionInstall,
    ) -> Result<Installed, InstallError> {
        let r = self.install_inner(now, s);
        match r {
            Ok(Installed::Updated) => self.sync.counters.updated += 1,
            Ok(_) => self.sync.counters.installed += 1,
            Err(_) => self.sync.counters.install_refused += 1,
        }
        r
    }

    fn install_inner(
        &mut self,
        now: Instant,
        s: &SessionInstall,
    ) -> Result<Installed, InstallError> {
        if s.expires <= now {
            return Err(InstallError::Expired);
        }
        let key = s.forward;
        let proto = match key.proto {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            _ => return Err(InstallError::NoService),
        };
        let sid =
            self.services.find(proto, key.dst, key.dst_port).ok_or(InstallError::NoService)?;
        let svc = &self.services.list[usize::from(sid.0)];
        if svc.mode() != s.mode {
            return Err(InstallError::ModeMismatch);
        }
        let backend = svc
            .reals
            .iter()
            .copied()
            .find(|id| {
                let a = self.reals[id.0 as usize].addr;
                a == s.real || (a.port() == 0 && a.ip() == s.real.ip())
            })
            .ok_or(InstallError::UnknownReal)?;
        let reverse = match s.mode {
            Mode::Dr => None,
            Mode::Nat => Some(FlowKey {
                proto: key.proto,
                src: s.real.ip(),
                src_port: s.real.port(),
                dst: key.src,
                dst_port: key.src_port,
            }),
            Mode::FullNat => {
                let l = s.local.filter(|l| l.is_ipv4() == key.src.is_ipv4());
                let l = l.ok_or(InstallError::NoLocal)?;
                Some(FlowKey {
                    proto: key.proto,
                    src: s.real.ip(),
                    src_port: s.real.port(),
                    dst: l.ip(),
                    dst_port: l.port(),
                })
            }
        };
        let mac = s.client_mac.filter(|m| *m != [0; 6] && m[0] & 1 == 0);
        let client_port = self.route(key.src).map_or(PortId(0), |(p, _)| p);
        let mut outcome = Installed::New;
        if let Some(mut e) = self.table.lookup(&key, now) {
            if e.direction() == slb_core::session::Direction::Inbound {
                let same = e.session().backend() == backend && e.keys().1 == reverse;
                if same {
                    e.set_state_until(s.state, s.expires);
                    if let Some(m) = mac {
                        let x = e.ext_mut();
                        x.client_mac = m;
                        x.client_port = client_port.0;
                    }
                    *e.flags_mut() |= PEER_SESSION;
                    return Ok(Installed::Updated);
                }
                if e.session().flags & PEER_SESSION == 0 {
                    return Err(InstallError::LocalConflict);
                }
                e.remove();
                outcome = Installed::Replaced;
            }
        }
        if let Some(rev) = reverse
            && let Some(e) = self.table.lookup(&rev, now)
            && e.direction() == slb_core::session::Direction::Outbound
            && e.session().flags & PEER_SESSION != 0
        {
            // A stale peer session holds the reply key (its flow ended where it lived).
            e.remove();
            self.sync.counters.reverse_reclaimed += 1;
        }
        let real_is_rev_src = s.mode != Mode::Dr
            && super::rewrite::real_endpoint(self.reals[backend.0 as usize].addr, key.dst_port)
                == (s.real.ip(), s.real.port());
        let mut ext = SessionData {
            client_mac: mac.unwrap_or([0; 6]),
            client_port: client_port.0,
            flags: if real_is_rev_src { super::REV_SRC_IS_REAL } else { 0 },
            svc: sid.0,
            ..SessionData::default()
        };
        if let (Mode::FullNat, Some(r)) = (s.mode, reverse) {
            ext.set_local(r.dst, r.dst_port);
        }
        let session = Session::new(backend, s.state, now, ext).with_expiry(s.expires);
        let mut e = self.table.insert(now, key, reverse, session)?;
        *e.flags_mut() |= PEER_SESSION;
        Ok(outcome)
    }

    /// Removes the session with forward key `key` if a peer installed it and no local client
    /// traffic claimed it; true if removed.
    pub fn remove_peer_session(&mut self, key: &FlowKey, now: Instant) -> bool {
        let Some(e) = self.table.lookup(key, now) else { return false };
        if e.direction() != slb_core::session::Direction::Inbound
            || e.session().flags & PEER_SESSION == 0
        {
            return false;
        }
        e.remove();
        self.sync.counters.removed += 1;
        true
    }

    /// Stops (`true`) or resumes answering ARP/ND for `ip` and announcing it.
    pub fn set_quiet(&mut self, ip: IpAddr, quiet: bool) {
        if quiet {
            self.sync.quiet.insert(ip);
        } else {
            self.sync.quiet.remove(&ip);
        }
    }

    /// Answers ARP/ND for another node's address (taking it over); its flows are found through
    /// their synced sessions. No effect on an address the forwarder owns already.
    pub fn adopt_addr(&mut self, ip: IpAddr) {
        if !self.owned.contains_key(&ip) {
            self.owned.insert(ip, Owned::Local);
            self.sync.adopted.insert(ip);
        }
        self.sync.quiet.remove(&ip);
    }

    /// Stops answering for an address taken with [`Forwarder::adopt_addr`].
    pub fn release_addr(&mut self, ip: IpAddr) {
        if self.sync.adopted.remove(&ip) {
            self.owned.remove(&ip);
        }
    }

    /// True when ARP/ND for `ip` is answered on some port (owned and not quiet).
    pub fn answers(&self, ip: IpAddr) -> bool {
        (0..self.ports.len()).any(|p| self.answers_for(PortId(p as u8), ip))
    }

    /// Gratuitous ARPs / unsolicited NAs for `addrs` on every port that answers for them.
    pub fn announcements_for(&self, addrs: &[IpAddr]) -> Vec<(PortId, FrameBuf)> {
        let mut out = Vec::new();
        for (i, p) in self.ports.iter().enumerate() {
            for ip in addrs {
                if !self.answers_for(PortId(i as u8), *ip) {
                    continue;
                }
                let mut b = FrameBuf::default();
                neigh::announcement(&mut b, p.cfg.mac, *ip);
                out.push((PortId(i as u8), b));
            }
        }
        out
    }

    /// Virtual and FULLNAT local addresses of this forwarder's configuration (not adopted ones).
    pub fn own_addrs(&self) -> Vec<IpAddr> {
        let mut v: Vec<IpAddr> =
            self.owned.keys().copied().filter(|ip| !self.sync.adopted.contains(ip)).collect();
        v.sort();
        v
    }

    /// FULLNAT local addresses of this forwarder's pool.
    pub fn local_addrs(&self) -> Vec<IpAddr> {
        self.laddrs.v4.iter().chain(&self.laddrs.v6).copied().collect()
    }

    /// Queues the removal of a locally owned session (not for peer-installed ones).
    pub(super) fn report_removed(&mut self, v: &SessionView<'_, SessionData>) {
        if self.sync.reporting() && v.session.flags & PEER_SESSION == 0 {
            let c = change_of(v, &self.reals, &self.services, true);
            self.sync.push(c);
        }
    }

    /// Queues a change of a live session (called from the packet path).
    pub(super) fn report_change(
        &mut self,
        forward: FlowKey,
        reverse: Option<FlowKey>,
        session: &Session<SessionData>,
        previous: Option<ConnState>,
        mode: Mode,
    ) {
        let real = match (mode, reverse) {
            (Mode::Nat | Mode::FullNat, Some(r)) => SocketAddr::new(r.src, r.src_port),
            _ => real_addr(&self.reals, session.backend(), &forward),
        };
        let c = SessionChange {
            forward,
            reverse,
            real,
            mode,
            state: session.state(),
            previous,
            packets_in: session.packets_in,
            expires: session.expires(),
            client_mac: session.ext.client_mac,
            removed: false,
            from_peer: session.flags & PEER_SESSION != 0,
        };
        self.sync.push(c);
    }
}

#[cfg(test)]
#[path = "sync_tests.rs"]
mod tests;
