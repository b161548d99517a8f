//! A tour of slb-core without any network: schedulers over a small pool, a session table, a
//! health tracker, all on simulated time.
//!
//! ```text
//! cargo run --example demo
//! ```

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use slb::core::backend::{Backend, BackendId, SetOptions};
use slb::core::flow::{FlowKey, Protocol};
use slb::core::health::{HealthConfig, HealthTracker};
use slb::core::sched::{Balancer, PickContext, SchedulerConfig, SchedulerKind};
use slb::core::session::{ConnState, Session, SessionTable, TableConfig};
use slb::core::time::Instant;

fn main() -> anyhow::Result<()> {
    let pool: Vec<Backend> = [(5, "10.0.2.11:80"), (1, "10.0.2.12:80"), (1, "10.0.2.13:80")]
        .iter()
        .enumerate()
        .map(|(i, (w, a))| {
            Ok(Backend::new(BackendId(i as u32), a.parse::<SocketAddr>()?).with_weight(*w))
        })
        .collect::<anyhow::Result<_>>()?;

    println!("smooth weighted round robin over weights 5, 1, 1 (nginx):");
    let swrr = Balancer::new(
        SchedulerConfig::new(SchedulerKind::SmoothWeighted),
        SetOptions::default(),
        pool.clone(),
    )?;
    let seq: Vec<String> = (0..14)
        .map(|_| swrr.scheduler().pick(&PickContext::default()).map(|p| p.backend.addr.to_string()))
        .collect::<Result<_, _>>()?;
    println!("  {}", seq.join(" "));

    println!("maglev: flows from 10 clients");
    let mh =
        Balancer::new(SchedulerConfig::new("mh".parse()?), SetOptions::default(), pool.clone())?;
    let mut table: SessionTable = SessionTable::new(TableConfig::default());
    let now = Instant::ZERO;
    for c in 1..=10u8 {
        let flow = FlowKey::v4(
            Protocol::Tcp,
            Ipv4Addr::new(192, 0, 2, c),
            40000,
            Ipv4Addr::new(10, 0, 0, 100),
            80,
        );
        let sched = mh.scheduler();
        let picked =
            sched.pick(&PickContext { flow: Some(&flow), now, ..PickContext::default() })?;
        table.insert(now, flow, None, Session::new(picked.id(), ConnState::SynRecv, now, ()))?;
        println!("  {flow} -> {}", picked.backend.addr);
    }
    println!("session table: {} sessions, {} half-open", table.len(), table.half_open());
    let later = now + Duration::from_secs(61);
    println!(
        "after 61 s without packets: {} expired (SYN_RECV lasts 60 s)",
        table.expire(later, 1024)
    );

    println!("health (Tengine defaults: start down, rise 2, fall 5):");
    let mut h = HealthTracker::new(HealthConfig::default(), now, 1);
    for (i, ok) in [true, true, false, false, false, false, false].iter().enumerate() {
        let t = h.poll_timeout();
        let flip = h.handle_result(t, *ok);
        println!(
            "  probe {} at {:?}: {} -> {:?}{}",
            i + 1,
            t,
            if *ok { "ok" } else { "fail" },
            h.status(),
            if flip.is_some() { " (flipped)" } else { "" }
        );
    }
    Ok(())
}
