//! `[sync]`: the slb-sync engine, its transport and the cluster glue for this director.

use std::net::IpAddr;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use slb::core::time::Clock;
use slb::l4::cluster::driver::{ClusterDriver, SyncLink};
use slb::l4::cluster::{AddrGroup, Cluster, ClusterConfig};
use slb::l4::fwd::{ChangeFilter, Forwarder};
use slb::sync::transport::{MulticastConfig, MulticastTransport, UnicastTransport};
use slb::sync::{ClusterKey, Config, Engine, NodeId, TriggerConfig};

use crate::config::SyncSection;

/// This run's epoch: quarter seconds since 2023-11-14 (grows with every restart, lasts 34
/// years in a u32; a director takes longer than 250 ms to restart).
fn epoch() -> u32 {
    let since = std::time::SystemTime::UNIX_EPOCH.elapsed().unwrap_or_default();
    let base = Duration::from_secs(1_700_000_000);
    u32::try_from(since.saturating_sub(base).as_millis() / 250).unwrap_or(u32::MAX)
}

/// Starts the engine on its threads and attaches the cluster glue to `fwd`. Returns the
/// driver and how long to keep forwarding after leaving the cluster on SIGTERM.
pub(crate) fn start(
    s: &SyncSection,
    fwd: &mut Forwarder,
    clock: Clock,
) -> Result<(ClusterDriver, Duration)> {
    let secret = match (&s.secret, &s.secret_file) {
        (Some(x), None) => x.as_bytes().to_vec(),
        (None, Some(p)) => std::fs::read(p).with_context(|| format!("{}", p.display()))?,
        _ => bail!("[sync] needs exactly one of secret, secret_file"),
    };
    let node = NodeId(s.node);
    let epoch = epoch();
    let mut cfg = Config::new(s.cluster, node, epoch, ClusterKey::derive(&secret));
    if let Some(ms) = s.heartbeat_ms {
        cfg.heartbeat_interval = Duration::from_millis(ms);
        cfg.join_discovery = cfg.heartbeat_interval * 2;
    }
    if let Some(n) = s.dead_after {
        cfg.peer_dead_after = n;
    }
    let table = fwd.config().table;
    cfg.known_capacity =
        s.known_capacity.unwrap_or(if table.preallocate { table.capacity } else { 0 });
    if let Some(r) = s.resync {
        cfg.resync_on_start = r;
    }
    let trigger = TriggerConfig {
        threshold: s.threshold.unwrap_or(3),
        period: s.period.unwrap_or(50),
        refresh: None,
    };
    cfg.trigger = Some(trigger);
    let dead = cfg.heartbeat_interval * cfg.peer_dead_after;
    #[allow(clippy::disallowed_methods)] // the example is a driver: it owns the clock
    let now = clock.at(std::time::Instant::now());
    let engine = Engine::new(cfg, now).context("[sync]")?;
    let port = s.port.unwrap_or(8848);
    let link = if s.unicast.is_empty() {
        let group = s.group.unwrap_or(IpAddr::from([224, 0, 0, 81]));
        let mc = MulticastConfig {
            group,
            port,
            interface: s.interface,
            ifindex: s.ifindex,
            loopback: false,
            ..MulticastConfig::default()
        };
        let t =
            MulticastTransport::bind(&mc).with_context(|| format!("multicast {group}:{port}"))?;
        tracing::info!(
            "sync: node {} epoch {epoch}, multicast {group}:{port} from {}",
            s.node,
            t.local_addr()?
        );
        SyncLink::spawn(engine, t, clock)?
    } else {
        let bind = s.bind.context("[sync] unicast needs bind")?;
        let t = UnicastTransport::bind(bind, s.unicast.clone())
            .with_context(|| format!("bind {bind}"))?;
        tracing::info!("sync: node {} epoch {epoch}, unicast {bind} -> {:?}", s.node, s.unicast);
        SyncLink::spawn(engine, t, clock)?
    };
    let mut cc = ClusterConfig::new(node);
    cc.filter = ChangeFilter { threshold: trigger.threshold, period: trigger.period };
    cc.groups = s
        .takeover
        .iter()
        .map(|g| AddrGroup { home: g.home.map(NodeId), addrs: g.addresses.clone() })
        .collect();
    let cluster = Cluster::new(cc, fwd);
    let drain = s.drain_ms.map_or(dead + Duration::from_millis(300), Duration::from_millis);
    Ok((ClusterDriver::new(cluster, link), drain))
}
