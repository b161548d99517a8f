//! The cluster's network: clients, an ECMP router, directors, real servers.
//!
//! ```text
//!  c1..cK 10.1.0.1x ──┐                       ┌── d1 eth0 10.2.0.11 │ eth1 10.3.0.11 ──┐
//!                    br-c 10.1.0.1   rt   br-d 10.2.0.1 ─ d2 ...12  │ ...               br-s ── s1..sN 10.3.0.10x
//!                                    │    └── d3 ...13              │ ...13 ───────────┘   (br-s is in rt too,
//!                                    └─ br-s 10.3.0.1 ───────────────────────────────────── 10.3.0.1: DR replies)
//! ```
//! The router (namespace `rt`) routes the VIP through a resilient nexthop group over the
//! directors' `eth0` addresses with `fib_multipath_hash_policy=1` (5-tuple hash), as an upstream
//! router running BGP/BFD towards the directors would. Withdrawing a director removes its next hop
//! from the group; with a resilient group only that director's buckets move.

use std::net::Ipv4Addr;

use slb::l4::lab::{Lab, Netns};

pub(crate) const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);
pub(crate) const VPORT: u16 = 9000;
pub(crate) const NHG: &str = "100";

pub(crate) fn client_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 1, 0, 11 + i as u8)
}
pub(crate) fn director_up_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 2, 0, 11 + i as u8)
}
pub(crate) fn director_down_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 3, 0, 11 + i as u8)
}
/// FULLNAT local address of director `i`.
pub(crate) fn local_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 3, 0, 21 + i as u8)
}
pub(crate) fn server_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 3, 0, 101 + i as u8)
}
/// NAT active-standby: the floating addresses the active director owns.
pub(crate) const FLOAT_UP: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 254);
pub(crate) const FLOAT_DOWN: Ipv4Addr = Ipv4Addr::new(10, 3, 0, 254);

pub(crate) fn director_mac(i: usize, side: u8) -> String {
    format!("02:00:00:0{side}:00:{:02x}", 0x11 + i)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    FullNat,
    Dr,
    Nat,
}

impl Mode {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Mode::FullNat => "fullnat",
            Mode::Dr => "dr",
            Mode::Nat => "nat",
        }
    }
}

pub(crate) struct Topology {
    pub(crate) rt: Netns,
    pub(crate) clients: Vec<Netns>,
    pub(crate) directors: Vec<Netns>,
    pub(crate) servers: Vec<Netns>,
}

pub(crate) fn build(
    lab: &mut Lab,
    mode: Mode,
    n_clients: usize,
    n_directors: usize,
    n_servers: usize,
) -> anyhow::Result<Topology> {
    let rt = lab.netns("rt")?;
    for br in ["br-c", "br-d", "br-s"] {
        lab.bridge(&rt, br)?;
    }
    lab.ip(&rt, &["addr", "add", "10.1.0.1/24", "dev", "br-c"])?;
    lab.ip(&rt, &["addr", "add", "10.2.0.1/24", "dev", "br-d"])?;
    lab.ip(&rt, &["addr", "add", "10.3.0.1/24", "dev", "br-s"])?;
    for s in [
        "net.ipv4.ip_forward=1",
        "net.ipv4.fib_multipath_hash_policy=1",
        "net.ipv4.conf.all.rp_filter=0",
        "net.ipv4.conf.default.rp_filter=0",
    ] {
        lab.sysctl(&rt, s)?;
    }
    let mut port = 0;
    let mut plug = |lab: &mut Lab,
                    ns: &Netns,
                    ifname: &str,
                    addr: Option<String>,
                    br: &str|
     -> anyhow::Result<()> {
        port += 1;
        let p = format!("p{port}");
        lab.veth((&rt, &p, None), (ns, ifname, addr.as_deref()))?;
        lab.attach(&rt, &p, br)?;
        lab.no_offloads(&rt, &p)?;
        lab.no_offloads(ns, ifname)?;
        Ok(())
    };
    let mut clients = Vec::new();
    for i in 0..n_clients {
        let c = lab.netns(&format!("c{}", i + 1))?;
        plug(lab, &c, "eth0", Some(format!("{}/24", client_ip(i))), "br-c")?;
        lab.ip(&c, &["route", "add", "default", "via", "10.1.0.1"])?;
        clients.push(c);
    }
    let mut directors = Vec::new();
    for i in 0..n_directors {
        let d = lab.netns(&format!("d{}", i + 1))?;
        // The dataplane owns these interfaces; the director's kernel keeps its addresses only
        // for the sync protocol and for probing, and must not forward or answer for the VIP.
        plug(lab, &d, "eth0", Some(format!("{}/24", director_up_ip(i))), "br-d")?;
        plug(lab, &d, "eth1", Some(format!("{}/24", director_down_ip(i))), "br-s")?;
        lab.set_mac(&d, "eth0", &director_mac(i, 1))?;
        lab.set_mac(&d, "eth1", &director_mac(i, 2))?;
        lab.sysctl(&d, "net.ipv4.ip_forward=0")?;
        directors.push(d);
    }
    let mut servers = Vec::new();
    for i in 0..n_servers {
        let s = lab.netns(&format!("s{}", i + 1))?;
        plug(lab, &s, "eth0", Some(format!("{}/24", server_ip(i))), "br-s")?;
        match mode {
            Mode::Nat => {
                lab.ip(&s, &["route", "add", "default", "via", &FLOAT_DOWN.to_string()])?
            }
            Mode::Dr | Mode::FullNat => {
                lab.ip(&s, &["route", "add", "default", "via", "10.3.0.1"])?
            }
        };
        if mode == Mode::Dr {
            lab.ip(&s, &["addr", "add", &format!("{VIP}/32"), "dev", "lo"])?;
            lab.sysctl(&s, "net.ipv4.conf.all.arp_ignore=1")?;
            lab.sysctl(&s, "net.ipv4.conf.all.arp_announce=2")?;
            lab.sysctl(&s, "net.ipv4.conf.eth0.arp_ignore=1")?;
            lab.sysctl(&s, "net.ipv4.conf.eth0.arp_announce=2")?;
        }
        servers.push(s);
    }
    match mode {
        Mode::Nat => {
            lab.ip(&rt, &["route", "add", &format!("{VIP}/32"), "via", &FLOAT_UP.to_string()])?;
        }
        Mode::Dr | Mode::FullNat => {
            for i in 0..n_directors {
                lab.ip(
                    &rt,
                    &[
                        "nexthop",
                        "add",
                        "id",
                        &(i + 1).to_string(),
                        "via",
                        &director_up_ip(i).to_string(),
                        "dev",
                        "br-d",
                    ],
                )?;
            }
            set_group(lab, &rt, &(0..n_directors).collect::<Vec<_>>())?;
            lab.ip(&rt, &["route", "add", &format!("{VIP}/32"), "nhid", NHG])?;
        }
    }
    Ok(Topology { rt, clients, directors, servers })
}

/// Makes the ECMP group consist of `members` (director indices).
pub(crate) fn set_group(lab: &Lab, rt: &Netns, members: &[usize]) -> anyhow::Result<()> {
    let group = members.iter().map(|i| (i + 1).to_string()).collect::<Vec<_>>().join("/");
    let exists = lab.ip(rt, &["nexthop", "show", "id", NHG]).is_ok();
    let verb = if exists { "replace" } else { "add" };
    lab.ip(
        rt,
        &[
            "nexthop",
            verb,
            "id",
            NHG,
            "group",
            &group,
            "type",
            "resilient",
            "buckets",
            "64",
            "idle_timer",
            "0",
        ],
    )?;
    Ok(())
}
