//! Connection states, their timeouts, and IPVS's TCP state machine.

use std::time::Duration;

/// The state of a session, as IPVS tracks it at the director.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum ConnState {
    /// TCP: a client SYN was seen, the handshake is not complete (half-open).
    SynRecv = 1,
    /// TCP: a SYN was seen from the server side first (half-open).
    SynSent = 2,
    /// TCP: the handshake completed.
    Established = 3,
    /// TCP: the server side sent FIN.
    FinWait = 4,
    /// TCP: the client side sent FIN.
    CloseWait = 5,
    /// TCP: FIN seen in both directions, waiting for the last ACK.
    LastAck = 6,
    /// TCP: both sides closed.
    TimeWait = 7,
    /// TCP: reset, or closed without the usual sequence.
    Close = 8,
    /// UDP (and other datagram protocols): no handshake.
    Udp = 9,
}

impl ConnState {
    /// Every state, in wire order.
    pub const ALL: [ConnState; 9] = [
        ConnState::SynRecv,
        ConnState::SynSent,
        ConnState::Established,
        ConnState::FinWait,
        ConnState::CloseWait,
        ConnState::LastAck,
        ConnState::TimeWait,
        ConnState::Close,
        ConnState::Udp,
    ];

    /// The wire code (`repr(u8)` value).
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// The state with wire code `c`.
    pub fn from_code(c: u8) -> Option<ConnState> {
        ConnState::ALL.get(usize::from(c).wrapping_sub(1)).copied()
    }

    /// A TCP handshake that has not completed: the first thing sacrificed when the table is full
    /// and the only kind of entry a SYN flood can create.
    pub const fn is_half_open(self) -> bool {
        matches!(self, ConnState::SynRecv | ConnState::SynSent)
    }

    /// A TCP connection on its way out (FIN or RST seen).
    pub const fn is_closing(self) -> bool {
        matches!(
            self,
            ConnState::FinWait
                | ConnState::CloseWait
                | ConnState::LastAck
                | ConnState::TimeWait
                | ConnState::Close
        )
    }

    /// A TCP connection that has finished (TIME_WAIT, CLOSE, LAST_ACK): nothing but stray
    /// segments can still arrive, so the table may evict it when full. FIN_WAIT and CLOSE_WAIT
    /// are half-closed and may still carry data in one direction; they are not "done".
    pub const fn is_done(self) -> bool {
        matches!(self, ConnState::TimeWait | ConnState::Close | ConnState::LastAck)
    }

    /// Counted in the backend's active connections (IPVS `activeconns`: established TCP);
    /// every other state counts as inactive.
    pub const fn is_active(self) -> bool {
        matches!(self, ConnState::Established)
    }

    /// IPVS's name for the state.
    pub const fn name(self) -> &'static str {
        match self {
            ConnState::SynRecv => "SYN_RECV",
            ConnState::SynSent => "SYN_SENT",
            ConnState::Established => "ESTABLISHED",
            ConnState::FinWait => "FIN_WAIT",
            ConnState::CloseWait => "CLOSE_WAIT",
            ConnState::LastAck => "LAST_ACK",
            ConnState::TimeWait => "TIME_WAIT",
            ConnState::Close => "CLOSE",
            ConnState::Udp => "UDP",
        }
    }
}

/// Idle timeout per state; defaults are IPVS's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// ESTABLISHED (IPVS 900 s).
    pub established: Duration,
    /// SYN_RECV (IPVS 60 s).
    pub syn_recv: Duration,
    /// SYN_SENT (IPVS 120 s).
    pub syn_sent: Duration,
    /// FIN_WAIT (IPVS 120 s).
    pub fin_wait: Duration,
    /// CLOSE_WAIT (IPVS 60 s).
    pub close_wait: Duration,
    /// LAST_ACK (IPVS 30 s).
    pub last_ack: Duration,
    /// TIME_WAIT (IPVS 120 s).
    pub time_wait: Duration,
    /// CLOSE (IPVS 10 s).
    pub close: Duration,
    /// UDP (IPVS 300 s).
    pub udp: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        let s = Duration::from_secs;
        Timeouts {
            established: s(900),
            syn_recv: s(60),
            syn_sent: s(120),
            fin_wait: s(120),
            close_wait: s(60),
            last_ack: s(30),
            time_wait: s(120),
            close: s(10),
            udp: s(300),
        }
    }
}

impl Timeouts {
    /// The idle timeout of `state`.
    pub fn of(&self, state: ConnState) -> Duration {
        match state {
            ConnState::SynRecv => self.syn_recv,
            ConnState::SynSent => self.syn_sent,
            ConnState::Established => self.established,
            ConnState::FinWait => self.fin_wait,
            ConnState::CloseWait => self.close_wait,
            ConnState::LastAck => self.last_ack,
            ConnState::TimeWait => self.time_wait,
            ConnState::Close => self.close,
            ConnState::Udp => self.udp,
        }
    }
}

/// Which way a packet travels relative to the session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Client to virtual service (matches the forward key).
    Inbound,
    /// Real server back to the client through the director (matches the reverse key).
    Outbound,
}

/// Whether the director sees both directions of a TCP flow (NAT, FULLNAT) or only the client's
/// (DR, tunnels): IPVS uses a separate, more trusting table for the latter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Visibility {
    /// Both directions pass through the director.
    BothWays,
    /// Only client-to-server packets pass through the director.
    InboundOnly,
}

/// The TCP flags that drive the state machine, in IPVS's priority order (RST, SYN, FIN, ACK).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TcpFlags {
    /// SYN.
    pub syn: bool,
    /// ACK.
    pub ack: bool,
    /// FIN.
    pub fin: bool,
    /// RST.
    pub rst: bool,
}

impl TcpFlags {
    /// From the flags byte of a TCP header.
    pub const fn from_bits(b: u8) -> Self {
        TcpFlags { fin: b & 0x01 != 0, syn: b & 0x02 != 0, rst: b & 0x04 != 0, ack: b & 0x10 != 0 }
    }
}

use ConnState::{
    Close as CL, CloseWait as CW, Established as ES, FinWait as FW, LastAck as LA, SynRecv as SR,
    SynSent as SS, TimeWait as TW,
};

/// Rows: event (syn, fin, ack, rst); columns: current state in `ConnState` code order
/// (none, SR, SS, ES, FW, CW, LA, TW, CL). Semantics follow IPVS's `tcp_states` tables.
type Table = [[ConnState; 9]; 4];

const INBOUND: Table = [
    //  none SR  SS  ES  FW  CW  LA  TW  CL
    [SR, SR, ES, ES, SR, SR, SR, SR, SR], // syn
    [CL, TW, SS, CW, TW, CW, LA, TW, CL], // fin
    [ES, ES, SS, ES, FW, CW, CL, TW, CL], // ack
    [CL, SR, CL, CL, CL, CL, LA, CL, CL], // rst
];

const OUTBOUND: Table = [
    [SS, SR, SS, ES, SS, SS, SS, SS, SS], // syn
    [TW, TW, SS, FW, FW, TW, LA, TW, CL], // fin
    [ES, ES, SS, ES, FW, CW, LA, TW, CL], // ack
    [CL, CL, SS, CL, CL, CL, CL, TW, CL], // rst
];

const INBOUND_ONLY: Table = [
    [SR, SR, ES, ES, SR, SR, SR, SR, SR], // syn
    [CL, TW, SS, FW, FW, CW, LA, TW, CL], // fin
    [ES, ES, SS, ES, FW, CW, CL, TW, CL], // ack
    [CL, SR, CL, CL, CL, CL, LA, CL, CL], // rst
];

/// The next TCP state after a packet with `flags` travelling `dir`, from `current` (`None` for a
/// new flow). Packets with none of SYN/FIN/ACK/RST leave the state unchanged.
pub fn tcp_transition(
    current: Option<ConnState>,
    dir: Direction,
    vis: Visibility,
    flags: TcpFlags,
) -> Option<ConnState> {
    let row = if flags.rst {
        3
    } else if flags.syn {
        0
    } else if flags.fin {
        1
    } else if flags.ack {
        2
    } else {
        return current;
    };
    let col = match current {
        None => 0,
        Some(ConnState::Udp) => return current,
        Some(s) => usize::from(s.code()),
    };
    let table = match (vis, dir) {
        (Visibility::InboundOnly, _) => &INBOUND_ONLY,
        (Visibility::BothWays, Direction::Inbound) => &INBOUND,
        (Visibility::BothWays, Direction::Outbound) => &OUTBOUND,
    };
    Some(table[row][col])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(s: &str) -> TcpFlags {
        TcpFlags {
            syn: s.contains('S'),
            ack: s.contains('A'),
            fin: s.contains('F'),
            rst: s.contains('R'),
        }
    }

    fn run(vis: Visibility, steps: &[(Direction, &str)]) -> Vec<ConnState> {
        let mut st = None;
        steps
            .iter()
            .map(|&(d, fl)| {
                st = tcp_transition(st, d, vis, f(fl));
                st.unwrap()
            })
            .collect()
    }

    use Direction::{Inbound as I, Outbound as O};

    #[test]
    fn nat_lifecycle_follows_ipvs() {
        let states = run(
            Visibility::BothWays,
            &[(I, "S"), (O, "SA"), (I, "A"), (I, "A"), (O, "FA"), (I, "A"), (I, "FA"), (O, "A")],
        );
        assert_eq!(states, vec![SR, SR, ES, ES, FW, FW, TW, TW]);
        assert_eq!(
            run(Visibility::BothWays, &[(I, "S"), (O, "SA"), (I, "A"), (I, "R")]).last(),
            Some(&CL)
        );
    }

    #[test]
    fn client_close_first_and_dr_mode() {
        let states = run(
            Visibility::BothWays,
            &[(I, "S"), (O, "SA"), (I, "A"), (I, "FA"), (O, "FA"), (I, "A")],
        );
        assert_eq!(
            states,
            vec![SR, SR, ES, CW, TW, TW],
            "IPVS: a server FIN in CLOSE_WAIT goes to TIME_WAIT"
        );
        let dr = run(Visibility::InboundOnly, &[(I, "S"), (I, "A"), (I, "FA"), (I, "A")]);
        assert_eq!(dr, vec![SR, ES, FW, FW]);
    }

    #[test]
    fn codes_round_trip_and_flagless_packets_keep_state() {
        for s in ConnState::ALL {
            assert_eq!(ConnState::from_code(s.code()), Some(s));
        }
        assert_eq!(ConnState::from_code(0), None);
        assert_eq!(ConnState::from_code(10), None);
        assert_eq!(
            tcp_transition(Some(ES), I, Visibility::BothWays, TcpFlags::default()),
            Some(ES)
        );
        assert_eq!(TcpFlags::from_bits(0x12), f("SA"));
    }
}
