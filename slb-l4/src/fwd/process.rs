//! `Forwarder::process`: classification, session lookup, new flows.

use std::net::IpAddr;

use slb_core::backend::BackendState;
use slb_core::flow::{FlowKey, Protocol};
use slb_core::session::{
    ConnState, Direction, InsertError, Prepared, Session, SessionView, TcpFlags, Visibility,
    tcp_transition,
};
use slb_core::time::Instant;

use super::config::{Mac, Mode, PortId, ServiceId};
use super::rewrite::{Ends, Plan, Toa, session_ends};
use super::stats::DropReason;
use super::sync::PEER_SESSION;
use super::{Forwarder, Owned, REV_SRC_IS_REAL, SessionData, Verdict};
use crate::frame::FrameBuf;
use crate::wire::arp::{ArpOperation, ArpRepr};
use crate::wire::{self, Frag, IpMeta, Kind, Malformed, proto};

/// A SYN without ACK, RST or FIN: the only segment that opens a TCP session in strict mode.
#[inline]
pub(super) fn pure_syn(f: TcpFlags) -> bool {
    f.syn && !f.ack && !f.rst && !f.fin
}

#[inline]
pub(super) fn visibility(mode: Mode) -> Visibility {
    if mode == Mode::Dr { Visibility::InboundOnly } else { Visibility::BothWays }
}

/// The flow key of a TCP or UDP packet.
#[inline]
pub(super) fn flow_key(m: &IpMeta) -> FlowKey {
    FlowKey {
        proto: if m.proto == proto::TCP { Protocol::Tcp } else { Protocol::Udp },
        src: m.src,
        dst: m.dst,
        src_port: m.sport,
        dst_port: m.dport,
    }
}

#[inline(always)]
pub(super) fn src_mac(f: &[u8]) -> Mac {
    [f[6], f[7], f[8], f[9], f[10], f[11]]
}

impl Forwarder {
    /// Processes one frame received on `port` at `now`: rewrites it in place and says what to do
    /// with it. Never panics, whatever the bytes.
    pub fn process(&mut self, now: Instant, frame: &mut FrameBuf, port: PortId) -> Verdict {
        frame.meta.steady = false;
        let kind = wire::parse(frame.as_slice());
        self.process_parsed(now, frame, port, kind, Prepared::default())
    }

    /// [`Forwarder::process`] of a frame already parsed into `kind`, with a session-lookup hint
    /// for its flow key (see [`Forwarder::process_batch`]).
    pub(super) fn process_parsed(
        &mut self,
        now: Instant,
        frame: &mut FrameBuf,
        port: PortId,
        kind: Result<Kind, Malformed>,
        hint: Prepared,
    ) -> Verdict {
        self.stats.rx += 1;
        let Some(p) = self.ports.get(usize::from(port.0)) else {
            return self.count_drop(DropReason::BadPort, None);
        };
        let our_mac = p.cfg.mac;
        let kind = match kind {
            Ok(k) => k,
            Err(_) => return self.count_drop(DropReason::Malformed, None),
        };
        let dst_mac = &frame.as_slice()[0..6];
        let unicast = dst_mac == our_mac;
        if !unicast && dst_mac[0] & 1 == 0 {
            // Another host's frame (a bridge flooding an unknown MAC): never forward it.
            self.stats.other_mac += 1;
            return self.host();
        }
        match kind {
            Kind::Arp => self.handle_arp(frame, port),
            Kind::Ip(m) => self.handle_ip(now, frame, port, &m, unicast, hint),
            Kind::Other => self.host(),
        }
    }

    #[inline]
    pub(super) fn host(&mut self) -> Verdict {
        self.stats.host += 1;
        Verdict::Host
    }

    /// True when ARP/NS for `ip` are answered on `port`.
    pub(super) fn answers_for(&self, port: PortId, ip: IpAddr) -> bool {
        let Some(p) = self.ports.get(usize::from(port.0)) else { return false };
        p.cfg.addrs.iter().any(|c| c.addr == ip)
            || (p.cfg.proxy_arp && self.owned.contains_key(&ip) && !self.sync.quiet(&ip))
    }

    fn handle_arp(&mut self, frame: &mut FrameBuf, port: PortId) -> Verdict {
        let Ok(a) = ArpRepr::parse(frame.as_slice()) else { return self.host() };
        let ours = self.answers_for(port, IpAddr::V4(a.target_ip));
        self.neigh.learn(IpAddr::V4(a.sender_ip), a.sender_mac, ours);
        if ours && a.op == ArpOperation::Request && !a.is_gratuitous() {
            let reply = a.reply(self.ports[usize::from(port.0)].cfg.mac);
            frame.build(reply.buffer_len(), |f| reply.emit(f));
            self.stats.replied += 1;
            return Verdict::Reply(port);
        }
        self.host()
    }

    fn handle_ip(
        &mut self,
        now: Instant,
        frame: &mut FrameBuf,
        port: PortId,
        m: &IpMeta,
        unicast: bool,
        hint: Prepared,
    ) -> Verdict {
        if m.frag == Frag::Yes {
            return if self.owned.contains_key(&m.dst) {
                self.count_drop(DropReason::Fragment, None)
            } else {
                self.host()
            };
        }
        match m.proto {
            proto::TCP | proto::UDP if unicast => self.handle_flow(now, frame, port, m, hint),
            proto::ICMP | proto::ICMPV6 => self.handle_icmp(now, frame, port, *m, unicast),
            _ if unicast && self.owned.contains_key(&m.dst) => {
                self.count_drop(DropReason::Unsupported, None)
            }
            _ => self.host(),
        }
    }

    fn handle_flow(
        &mut self,
        now: Instant,
        frame: &mut FrameBuf,
        port: PortId,
        m: &IpMeta,
        hint: Prepared,
    ) -> Verdict {
        let is_tcp = m.proto == proto::TCP;
        let key = flow_key(m);
        let flags = TcpFlags::from_bits(m.tcp_flags);
        let smac = src_mac(frame.as_slice());
        let Some(mut e) = self.table.lookup_prepared(&key, hint, now) else {
            return self.on_miss(now, frame, port, m, key, flags);
        };
        let dir = e.direction();
        let s = e.session();
        let (backend, state, mut ext, peer) =
            (s.backend(), s.state(), s.ext, s.flags & PEER_SESSION != 0);
        let svc = ext.svc;
        let Some(service) = self.services.list.get(usize::from(svc)) else {
            e.remove();
            return self.count_drop(DropReason::NoSession, None);
        };
        let mode = service.mode();
        if is_tcp && dir == Direction::Inbound && pure_syn(flags) && state.is_done() {
            // A new connection reusing the ports of a finished one: schedule it afresh.
            let (f, r) = e.keys();
            let old = e.remove();
            self.report_removed(&SessionView { forward: f, reverse: r, session: &old });
            return self.on_miss(now, frame, port, m, key, flags);
        }
        if mode != Mode::Dr && m.ttl <= 1 {
            return self.count_drop(DropReason::TtlExceeded, Some(svc));
        }
        if self.cfg.expire_nodest_conn
            && self.reals.get(backend.0 as usize).is_some_and(|r| r.state != BackendState::Up)
        {
            let (f, r) = e.keys();
            let old = e.remove();
            self.report_removed(&SessionView { forward: f, reverse: r, session: &old });
            return self.count_drop(DropReason::BackendDown, Some(svc));
        }
        let mut toa = Toa::None;
        let mut next = state;
        if is_tcp {
            next = tcp_transition(Some(state), dir, visibility(mode), flags).unwrap_or(state);
            if next != state {
                e.set_state(next, now);
            }
            if mode == Mode::FullNat {
                toa = match dir {
                    Direction::Inbound if pure_syn(flags) => Toa::Syn,
                    Direction::Inbound
                        if state == ConnState::SynRecv && next == ConnState::Established =>
                    {
                        Toa::Ack
                    }
                    Direction::Outbound if flags.syn && flags.ack => Toa::SynAck,
                    _ => Toa::None,
                };
            }
        }
        let count = e.record_packet(now);
        if dir == Direction::Inbound {
            ext.client_mac = smac;
            ext.client_port = port.0;
            *e.ext_mut() = ext;
            if peer {
                // Local client traffic claims a session a peer installed.
                *e.flags_mut() &= !PEER_SESSION;
            }
        }
        let report = self.sync.reporting()
            && (next != state || (dir == Direction::Inbound && self.sync.count_matches(count)));
        let snapshot = report.then(|| (e.session().clone(), e.keys()));
        // The new addresses, from the one key the direction needs (none is missing inbound
        // only, where the client is the packet's source).
        let (ends, client) = session_ends(&e, &self.reals, (dir, mode), &ext, backend, &key)
            .unwrap_or((Ends::NONE, (m.src, m.sport)));
        if let Some((s, (fwd, rev))) = snapshot {
            self.report_change(fwd, rev, &s, Some(state), mode);
        }
        let plan = Plan { dir, mode, backend, svc, ext, ends, client, toa };
        self.forward(now, frame, m, plan)
    }

    fn on_miss(
        &mut self,
        now: Instant,
        frame: &mut FrameBuf,
        port: PortId,
        m: &IpMeta,
        key: FlowKey,
        flags: TcpFlags,
    ) -> Verdict {
        let Some(sid) = self.services.find(m.proto, m.dst, m.dport) else {
            return match self.owned.get(&m.dst) {
                Some(Owned::Vip) => self.count_drop(DropReason::NoService, None),
                Some(Owned::Local) => self.count_drop(DropReason::NoSession, None),
                None => self.host(),
            };
        };
        let is_tcp = m.proto == proto::TCP;
        if is_tcp {
            let creates = if self.cfg.strict_tcp { pure_syn(flags) } else { !flags.rst };
            if !creates {
                return self.count_drop(DropReason::NoSession, Some(sid.0));
            }
        }
        self.new_flow(now, frame, port, m, key, flags, sid)
    }

    #[allow(clippy::too_many_arguments)] // one call site; the values are all at hand there
    fn new_flow(
        &mut self,
        now: Instant,
        frame: &mut FrameBuf,
        port: PortId,
        m: &IpMeta,
        key: FlowKey,
        flags: TcpFlags,
        sid: ServiceId,
    ) -> Verdict {
        let svc = &self.services.list[usize::from(sid.0)];
        let mode = svc.mode();
        if mode != Mode::Dr && m.ttl <= 1 {
            return self.count_drop(DropReason::TtlExceeded, Some(sid.0));
        }
        let backend = match svc.schedule(&key, &mut self.persist, now) {
            Ok(b) => b,
            Err(r) => return self.count_drop(r, Some(sid.0)),
        };
        let real = &self.reals[backend.0 as usize];
        let rport = if real.addr.port() == 0 { m.dport } else { real.addr.port() };
        let rip = real.addr.ip();
        let is_tcp = m.proto == proto::TCP;
        let state = if is_tcp {
            tcp_transition(None, Direction::Inbound, visibility(mode), flags)
                .unwrap_or(ConnState::SynRecv)
        } else {
            ConnState::Udp
        };
        // NAT and FULLNAT: the reverse key's source is the real server's address, with the
        // real's port or else the flow's destination port.
        let ext = SessionData {
            client_mac: src_mac(frame.as_slice()),
            client_port: port.0,
            flags: if mode == Mode::Dr { 0 } else { REV_SRC_IS_REAL },
            svc: sid.0,
            ..SessionData::default()
        };
        let to_real = |dst: IpAddr, dport: u16| FlowKey {
            proto: key.proto,
            src: rip,
            src_port: rport,
            dst,
            dst_port: dport,
        };
        let inserted = match mode {
            Mode::Dr => self
                .table
                .insert(now, key, None, Session::new(backend, state, now, ext))
                .map(|mut e| {
                    e.record_packet(now);
                    None
                }),
            Mode::Nat => {
                let rev = to_real(key.src, key.src_port);
                self.table.insert(now, key, Some(rev), Session::new(backend, state, now, ext)).map(
                    |mut e| {
                        e.record_packet(now);
                        Some(rev)
                    },
                )
            }
            Mode::FullNat => {
                let hash = self.cfg.table.hash_key.hash_flow(&key);
                let mut result = Err(InsertError::ReverseExists);
                let mut attempt = 0;
                while let Some((lip, lport)) =
                    self.laddrs.candidate(key.src.is_ipv6(), hash, attempt)
                {
                    attempt += 1;
                    let rev = to_real(lip, lport);
                    let mut ext = ext;
                    ext.set_local(lip, lport);
                    match self.table.insert(
                        now,
                        key,
                        Some(rev),
                        Session::new(backend, state, now, ext),
                    ) {
                        Ok(mut e) => {
                            e.record_packet(now);
                            result = Ok(Some(rev));
                            break;
                        }
                        Err(InsertError::ReverseExists) => continue,
                        Err(e) => {
                            result = Err(e);
                            break;
                        }
                    }
                }
                result
            }
        };
        let rev = match inserted {
            Ok(rev) => rev,
            Err(InsertError::Full) => return self.count_drop(DropReason::TableFull, Some(sid.0)),
            Err(InsertError::ReverseExists) if mode == Mode::FullNat => {
                return self.count_drop(DropReason::PortsExhausted, Some(sid.0));
            }
            Err(InsertError::ReverseExists) => {
                return self.count_drop(DropReason::ReverseConflict, Some(sid.0));
            }
            Err(_) => return self.count_drop(DropReason::Malformed, Some(sid.0)),
        };
        self.services.list[usize::from(sid.0)].stats.conns += 1;
        self.reals[backend.0 as usize].stats.conns += 1;
        if self.sync.count_matches(1)
            && let Some((s, _)) = self.table.get(&key)
        {
            let s = s.clone();
            self.report_change(key, rev, &s, None, mode);
        }
        let toa =
            if mode == Mode::FullNat && is_tcp && pure_syn(flags) { Toa::Syn } else { Toa::None };
        let ends = Ends::of(Direction::Inbound, mode, &key, rev.as_ref());
        let client = (key.src, key.src_port);
        let plan =
            Plan { dir: Direction::Inbound, mode, backend, svc: sid.0, ext, ends, client, toa };
        self.forward(now, frame, m, plan)
    }
}
