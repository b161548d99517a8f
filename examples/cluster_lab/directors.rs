//! Starting, killing and upgrading directors.

use std::time::Duration;

use slb::l4::lab::{Lab, Proc};

use crate::topo::{self, Mode, Topology, VIP, VPORT};
use crate::{Args, DirectorKind};

pub(crate) struct Directors {
    pub(crate) procs: Vec<Option<Proc>>,
    pub(crate) members: Vec<usize>,
}

/// Starts director `i` (and, in the kernel baseline, configures its kernel instead).
pub(crate) fn start(
    lab: &mut Lab,
    topo: &Topology,
    args: &Args,
    mode: Mode,
    i: usize,
    dirs: &mut Directors,
) -> anyhow::Result<()> {
    let d = &topo.directors[i];
    match args.director {
        DirectorKind::Kernel => {
            anyhow::ensure!(
                mode == Mode::FullNat,
                "the kernel baseline supports fullnat only (no IPVS here)"
            );
            let server = topo::server_ip(i % topo.servers.len());
            let local = topo::local_ip(i);
            lab.ip(d, &["addr", "add", &format!("{local}/24"), "dev", "eth1"])?;
            lab.ip(d, &["route", "add", "default", "via", "10.2.0.1"])?;
            lab.sysctl(d, "net.ipv4.ip_forward=1")?;
            lab.sh(d, &format!(
                "iptables -t nat -A PREROUTING -d {VIP} -p tcp --dport {VPORT} -j DNAT --to-destination {server}:{VPORT} && \
                 iptables -t nat -A POSTROUTING -d {server} -p tcp --dport {VPORT} -j SNAT --to-source {local}"
            ))?;
            Ok(())
        }
        DirectorKind::Slb => {
            let _ = (dirs, lab);
            anyhow::bail!("the slb director is not wired into the cluster lab yet")
        }
    }
}

/// Kills director `i` with SIGKILL, then withdraws its next hop after `detect` (BFD).
pub(crate) fn kill(
    lab: &mut Lab,
    topo: &Topology,
    mode: Mode,
    i: usize,
    dirs: &mut Directors,
    detect: Duration,
) -> anyhow::Result<()> {
    if let Some(p) = dirs.procs[i].take() {
        lab.kill(&p);
    } else {
        // Kernel baseline: the "director" is its kernel; take its links down.
        lab.ip(&topo.directors[i], &["link", "set", "eth0", "down"])?;
        lab.ip(&topo.directors[i], &["link", "set", "eth1", "down"])?;
    }
    eprintln!("killed d{}", i + 1);
    std::thread::sleep(detect);
    if mode != Mode::Nat {
        dirs.members.retain(|&m| m != i);
        topo::set_group(lab, &topo.rt, &dirs.members)?;
        eprintln!("withdrew d{} from the ECMP group", i + 1);
    }
    Ok(())
}

/// Rolling upgrade step for director `i`: withdraw, stop, start, resync, rejoin.
pub(crate) fn upgrade(
    lab: &mut Lab,
    topo: &Topology,
    args: &Args,
    mode: Mode,
    i: usize,
    dirs: &mut Directors,
) -> anyhow::Result<()> {
    anyhow::ensure!(args.director == DirectorKind::Slb, "upgrade needs the slb director");
    let _ = (lab, topo, mode, i, dirs);
    anyhow::bail!("the slb director is not wired into the cluster lab yet")
}

/// Waits until every director knows every stream's session (synced), when the directors can
/// tell; the kernel baseline cannot and does not sync.
pub(crate) fn wait_synced(topo: &Topology, args: &Args, connections: usize) -> anyhow::Result<()> {
    let _ = (topo, connections);
    match args.director {
        DirectorKind::Kernel => Ok(()),
        DirectorKind::Slb => {
            anyhow::bail!("the slb director is not wired into the cluster lab yet")
        }
    }
}
