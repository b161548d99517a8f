//! Counters: per service and per real server (IPVS `--stats` columns), drops by reason, and the
//! forwarder's own events; printed like `ipvsadm -L -n --stats --exact` and as Prometheus text.

use std::fmt::Write as _;

/// Why a frame was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DropReason {
    /// Truncated or inconsistent headers.
    Malformed,
    /// The port index is not configured.
    BadPort,
    /// TTL / hop limit would reach 0.
    TtlExceeded,
    /// An IP fragment to a virtual or local address (policy: never reassembled, see the docs of
    /// [`Forwarder`](super::Forwarder)).
    Fragment,
    /// An IPv6 extension header other than a fragment header before the transport header, or a
    /// transport protocol no service uses, to a virtual address.
    Unsupported,
    /// To a virtual address, but no service matches the protocol and port.
    NoService,
    /// A TCP segment other than a SYN (strict mode) with no session, or any packet to a local
    /// address with no session.
    NoSession,
    /// The scheduler found no usable real server.
    NoBackend,
    /// The session table was full of sessions that may not be evicted.
    TableFull,
    /// FULLNAT: no free local port for this real server.
    PortsExhausted,
    /// NAT: another session already uses this (real server, client) pair.
    ReverseConflict,
    /// No route to the destination.
    NoRoute,
    /// The next hop's MAC is not known yet (a request was sent instead).
    NoNeighbour,
    /// An ICMP error about a flow the director does not know.
    IcmpNoSession,
    /// Session removed because its real server went down (`expire_nodest_conn`).
    BackendDown,
}

impl DropReason {
    /// Every reason, in counter order.
    pub const ALL: [DropReason; 15] = [
        DropReason::Malformed,
        DropReason::BadPort,
        DropReason::TtlExceeded,
        DropReason::Fragment,
        DropReason::Unsupported,
        DropReason::NoService,
        DropReason::NoSession,
        DropReason::NoBackend,
        DropReason::TableFull,
        DropReason::PortsExhausted,
        DropReason::ReverseConflict,
        DropReason::NoRoute,
        DropReason::NoNeighbour,
        DropReason::IcmpNoSession,
        DropReason::BackendDown,
    ];

    /// Number of reasons.
    pub const COUNT: usize = DropReason::ALL.len();

    /// Counter index.
    pub fn index(self) -> usize {
        DropReason::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }

    /// Snake-case name (Prometheus label value).
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::BadPort => "bad_port",
            DropReason::TtlExceeded => "ttl_exceeded",
            DropReason::Fragment => "fragment",
            DropReason::Unsupported => "unsupported",
            DropReason::NoService => "no_service",
            DropReason::NoSession => "no_session",
            DropReason::NoBackend => "no_backend",
            DropReason::TableFull => "table_full",
            DropReason::PortsExhausted => "ports_exhausted",
            DropReason::ReverseConflict => "reverse_conflict",
            DropReason::NoRoute => "no_route",
            DropReason::NoNeighbour => "no_neighbour",
            DropReason::IcmpNoSession => "icmp_no_session",
            DropReason::BackendDown => "backend_down",
        }
    }
}

/// IPVS's `--stats` columns for a service or a real server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Connections (sessions) scheduled.
    pub conns: u64,
    /// Packets client -> server.
    pub in_pkts: u64,
    /// Packets server -> client.
    pub out_pkts: u64,
    /// Bytes client -> server (IP packets as received).
    pub in_bytes: u64,
    /// Bytes server -> client.
    pub out_bytes: u64,
}

impl Counters {
    #[inline]
    pub(crate) fn packet(&mut self, inbound: bool, bytes: usize) {
        if inbound {
            self.in_pkts += 1;
            self.in_bytes += bytes as u64;
        } else {
            self.out_pkts += 1;
            self.out_bytes += bytes as u64;
        }
    }

    /// `n` packets of `bytes` in all, in one direction (traffic an offload forwarded).
    pub(crate) fn packets(&mut self, inbound: bool, n: u64, bytes: u64) {
        if inbound {
            self.in_pkts += n;
            self.in_bytes += bytes;
        } else {
            self.out_pkts += n;
            self.out_bytes += bytes;
        }
    }
}

/// Forwarder-wide counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GlobalStats {
    /// Frames given to `process`.
    pub rx: u64,
    /// Frames forwarded.
    pub forwarded: u64,
    /// Replies produced (ARP, NA, echo).
    pub replied: u64,
    /// Frames handed to the host.
    pub host: u64,
    /// Frames not addressed to the port's MAC (handed to the host, never forwarded).
    pub other_mac: u64,
    /// ARP / NS requests sent to resolve next hops.
    pub solicits: u64,
    /// Frames held while their next hop was resolved.
    pub held: u64,
    /// Drops by reason ([`DropReason::index`]).
    pub drops: [u64; DropReason::COUNT],
    /// TOA options inserted.
    pub toa_inserted: u64,
    /// TOA options not inserted for lack of option space or MTU.
    pub toa_skipped: u64,
    /// MSS options clamped.
    pub mss_clamped: u64,
    /// Transport checksums recomputed fully (partial sums from offloads, or grown segments).
    pub csum_full: u64,
    /// ICMP errors relayed to the flow they concern.
    pub icmp_relayed: u64,
    /// Packets an offload forwarded on the forwarder's behalf (the XDP flow cache), as reported
    /// through [`Forwarder::offload_refresh`](crate::fwd::Forwarder::offload_refresh); not in
    /// `rx` or `forwarded`.
    pub offloaded: u64,
}

impl GlobalStats {
    /// Drops of one reason.
    pub fn drops_of(&self, r: DropReason) -> u64 {
        self.drops[r.index()]
    }

    /// All drops.
    pub fn total_drops(&self) -> u64 {
        self.drops.iter().sum()
    }
}

/// A service's identity for printing.
#[derive(Clone, Debug)]
pub(crate) struct ServiceLabel {
    pub(crate) proto: &'static str,
    pub(crate) vip: String,
    pub(crate) reals: Vec<String>,
}

/// A snapshot of every counter, for printing.
#[derive(Clone, Debug)]
pub struct StatsReport {
    pub(crate) services: Vec<(ServiceLabel, Counters, [u64; DropReason::COUNT], Vec<Counters>)>,
    /// Forwarder-wide counters.
    pub global: GlobalStats,
    /// Sessions in the table.
    pub sessions: usize,
}

impl StatsReport {
    /// `ipvsadm -L -n --stats --exact` layout.
    pub fn ipvsadm(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "IP Virtual Server (slb-l4) sessions={}", self.sessions);
        let _ = writeln!(
            s,
            "Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes"
        );
        let _ = writeln!(s, "  -> RemoteAddress:Port");
        for (label, c, _, reals) in &self.services {
            let _ = writeln!(s, "{:<4} {:<25} {}", label.proto, label.vip, cols(c));
            for (addr, rc) in label.reals.iter().zip(reals) {
                let _ = writeln!(s, "  -> {:<28} {}", addr, cols(rc));
            }
        }
        s
    }

    /// Prometheus text exposition format (version 0.0.4).
    pub fn prometheus(&self) -> String {
        let mut s = String::new();
        let svc = |l: &ServiceLabel| format!("proto=\"{}\",service=\"{}\"", l.proto, esc(&l.vip));
        let metric = |s: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(s, "# HELP slb_l4_{name} {help}\n# TYPE slb_l4_{name} {kind}");
        };
        metric(&mut s, "service_connections_total", "counter", "Connections scheduled.");
        for (l, c, _, _) in &self.services {
            let _ = writeln!(s, "slb_l4_service_connections_total{{{}}} {}", svc(l), c.conns);
        }
        metric(&mut s, "service_packets_total", "counter", "Packets by direction.");
        for (l, c, _, _) in &self.services {
            let _ =
                writeln!(s, "slb_l4_service_packets_total{{{},dir=\"in\"}} {}", svc(l), c.in_pkts);
            let _ = writeln!(
                s,
                "slb_l4_service_packets_total{{{},dir=\"out\"}} {}",
                svc(l),
                c.out_pkts
            );
        }
        metric(&mut s, "service_bytes_total", "counter", "IP bytes by direction.");
        for (l, c, _, _) in &self.services {
            let _ =
                writeln!(s, "slb_l4_service_bytes_total{{{},dir=\"in\"}} {}", svc(l), c.in_bytes);
            let _ =
                writeln!(s, "slb_l4_service_bytes_total{{{},dir=\"out\"}} {}", svc(l), c.out_bytes);
        }
        metric(&mut s, "service_drops_total", "counter", "Packets to the service dropped.");
        for (l, _, d, _) in &self.services {
            for r in DropReason::ALL {
                if d[r.index()] > 0 {
                    let _ = writeln!(
                        s,
                        "slb_l4_service_drops_total{{{},reason=\"{}\"}} {}",
                        svc(l),
                        r.name(),
                        d[r.index()]
                    );
                }
            }
        }
        for (name, help) in [
            ("real_connections_total", "Connections scheduled to the real server."),
            ("real_packets_total", "Packets by direction."),
            ("real_bytes_total", "IP bytes by direction."),
        ] {
            metric(&mut s, name, "counter", help);
            for (l, _, _, reals) in &self.services {
                for (addr, c) in l.reals.iter().zip(reals) {
                    let lab = format!("{},real=\"{}\"", svc(l), esc(addr));
                    match name {
                        "real_connections_total" => {
                            let _ = writeln!(s, "slb_l4_{name}{{{lab}}} {}", c.conns);
                        }
                        "real_packets_total" => {
                            let _ = writeln!(s, "slb_l4_{name}{{{lab},dir=\"in\"}} {}", c.in_pkts);
                            let _ =
                                writeln!(s, "slb_l4_{name}{{{lab},dir=\"out\"}} {}", c.out_pkts);
                        }
                        _ => {
                            let _ = writeln!(s, "slb_l4_{name}{{{lab},dir=\"in\"}} {}", c.in_bytes);
                            let _ =
                                writeln!(s, "slb_l4_{name}{{{lab},dir=\"out\"}} {}", c.out_bytes);
                        }
                    }
                }
            }
        }
        let g = &self.global;
        metric(&mut s, "drops_total", "counter", "Frames dropped, by reason.");
        for r in DropReason::ALL {
            let _ =
                writeln!(s, "slb_l4_drops_total{{reason=\"{}\"}} {}", r.name(), g.drops[r.index()]);
        }
        metric(&mut s, "frames_total", "counter", "Frames processed, by verdict.");
        for (v, n) in [
            ("forward", g.forwarded),
            ("reply", g.replied),
            ("host", g.host),
            ("drop", g.total_drops()),
            ("solicit", g.solicits),
            ("held", g.held),
        ] {
            let _ = writeln!(s, "slb_l4_frames_total{{verdict=\"{v}\"}} {n}");
        }
        for (name, help, v) in [
            ("toa_inserted_total", "TOA options inserted.", g.toa_inserted),
            ("toa_skipped_total", "TOA options skipped (no room).", g.toa_skipped),
            ("icmp_relayed_total", "ICMP errors relayed.", g.icmp_relayed),
            ("offloaded_total", "Packets forwarded by the XDP flow cache.", g.offloaded),
            ("csum_full_total", "Transport checksums recomputed fully.", g.csum_full),
        ] {
            metric(&mut s, name, "counter", help);
            let _ = writeln!(s, "slb_l4_{name} {v}");
        }
        metric(&mut s, "sessions", "gauge", "Sessions in the table.");
        let _ = writeln!(s, "slb_l4_sessions {}", self.sessions);
        s
    }
}

fn cols(c: &Counters) -> String {
    format!(
        "{:>8} {:>8} {:>8} {:>8} {:>8}",
        c.conns, c.in_pkts, c.out_pkts, c.in_bytes, c.out_bytes
    )
}

/// Escapes a Prometheus label value.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}
