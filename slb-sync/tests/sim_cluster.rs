//! Simulated clusters: no sockets, simulated time, a fabric that drops, delays, reorders and
//! duplicates. Every failing seed is printed so the run can be replayed.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use slb_core::session::ConnState;
use slb_core::time::Instant;
use slb_sync::sim::{Fabric, LinkModel, SimTable};
use slb_sync::{SessionEvent, SessionKey, SessionRecord};

fn lossy(loss: f64) -> LinkModel {
    LinkModel {
        loss,
        duplicate: 0.02,
        min_delay: Duration::from_micros(100),
        max_delay: Duration::from_millis(3),
    }
}

fn cluster(seed: u64, n: u32, link: LinkModel) -> Fabric {
    let mut f = Fabric::new(seed, link);
    for node in 1..=n {
        f.add_node(engine(node, 1, false, f.now()), SimTable::default());
    }
    f
}

/// Every node's view of the sessions the others synced (latest version each).
fn expected_for(f: &Fabric, i: usize) -> BTreeMap<SessionKey, SessionRecord> {
    let mut m = BTreeMap::new();
    for j in 0..f.len() {
        if j != i {
            m.extend(f.node(j).owner.local.iter().map(|(k, r)| (*k, r.clone())));
        }
    }
    m
}

fn learned(f: &Fabric, i: usize) -> BTreeMap<SessionKey, SessionRecord> {
    f.node(i).owner.learned.iter().map(|(k, s)| (*k, s.record.clone())).collect()
}

fn converged(f: &Fabric) -> bool {
    let total: usize = (0..f.len()).map(|j| f.node(j).owner.local.len()).sum();
    // Cheap check first: this runs after every simulation step.
    let counts_match =
        (0..f.len()).all(|i| f.node(i).owner.learned.len() == total - f.node(i).owner.local.len());
    counts_match && (0..f.len()).all(|i| learned(f, i) == expected_for(f, i))
}

/// Feeds `per_node` sessions per node, spread over `spread`, then closes every fifth one
/// (FIN_WAIT: forced sync) so later versions must win over earlier ones.
fn feed(f: &mut Fabric, per_node: u32, spread: Duration) {
    let nodes = f.len() as u32;
    let step = spread / (per_node * nodes).max(1);
    for i in 0..per_node {
        for n in 0..nodes {
            f.local(n as usize, third_packet(record(n + 1, i)));
            let t = f.now() + step;
            f.run_until(t);
        }
    }
    for i in (0..per_node).step_by(5) {
        for n in 0..nodes {
            let mut r = record(n + 1, i);
            r.state = ConnState::FinWait;
            r.timeout = Duration::from_secs(120);
            assert!(f.local(n as usize, SessionEvent::new(r, 40, Some(ConnState::Established))));
        }
    }
}

#[test]
fn every_synced_session_converges_on_every_node() {
    for seed in 1..=3u64 {
        let mut f = cluster(seed, 4, lossy(0.01));
        feed(&mut f, 300, Duration::from_secs(1));
        // Below the trigger: never synced, and must not show up anywhere.
        let mut quiet = record(1, 9_999);
        quiet.state = ConnState::SynRecv;
        assert!(!f.local(0, SessionEvent::new(quiet.clone(), 1, None)));
        f.node_mut(0).owner.local.remove(&quiet.key);
        let deadline = f.now() + Duration::from_secs(5);
        assert!(f.run_until_cond(deadline, converged), "seed {seed}: no convergence");
        for i in 0..f.len() {
            assert!(!f.node(i).owner.learned.contains_key(&quiet.key));
            assert_eq!(learned(&f, i).len(), 900, "seed {seed} node {i}");
        }
        assert_eq!(f.stats().stalls, 0, "seed {seed}: an engine asked to be woken in the past");
    }
}

#[test]
fn five_percent_loss_converges_within_bounded_time_through_nacks() {
    for seed in 10..13u64 {
        let mut f = cluster(seed, 3, lossy(0.05));
        feed(&mut f, 1000, Duration::from_millis(500));
        let start = f.now();
        // Bound: a heartbeat period to see a tail loss, then NACK rounds of 20 ms; generous
        // margin for lost NACKs and retransmissions.
        let ok = f.run_until_cond(start + Duration::from_secs(2), converged);
        let took = f.now() - start;
        assert!(ok, "seed {seed}: not converged 2 s after the last update");
        let (mut nacks, mut retx) = (0, 0);
        for i in 0..f.len() {
            let s = f.node(i).engine.stats();
            nacks += s.nacks_sent;
            retx += s.tx_retransmits;
            assert_eq!(s.rx_bad_mac + s.rx_malformed + s.rx_bad_entries, 0, "seed {seed}");
        }
        assert!(nacks > 0 && retx > 0, "seed {seed}: loss must have been repaired by NACKs");
        assert!(f.stats().lost > 0);
        println!(
            "seed {seed}: converged {took:?} after the last update, {nacks} NACKs, {retx} retransmissions"
        );
    }
}

#[test]
fn a_joining_node_receives_the_whole_table_before_it_is_ready() {
    for (seed, loss) in [(21u64, 0.0), (22, 0.05)] {
        let mut f = cluster(seed, 3, lossy(loss));
        // 3000 entries: about 100 chunks, more than one resync window (64).
        feed(&mut f, 1000, Duration::from_millis(300));
        let t = f.now() + Duration::from_secs(2);
        assert!(f.run_until_cond(t, converged), "seed {seed}");
        let joiner = f.add_node(engine(4, 1, true, f.now()), SimTable::default());
        assert!(!f.node(joiner).engine.is_ready());
        let deadline = f.now() + Duration::from_secs(10);
        assert!(
            f.run_until_cond(deadline, |f| f.node(joiner).owner.ready),
            "seed {seed}: never ready"
        );
        let n = f.node(joiner);
        assert!(n.engine.is_ready());
        assert_eq!(
            learned(&f, joiner),
            expected_for(&f, joiner),
            "seed {seed}: table incomplete at Ready"
        );
        assert_eq!(n.owner.learned.len(), 3000);
        assert_eq!(n.owner.resyncs_complete, 3, "seed {seed}");
        assert!(n.engine.stats().resync_chunks_received >= 3000 / 29);
        let served: u32 = (0..3).map(|i| f.node(i).owner.snapshots_served).sum();
        assert_eq!(served, 3);
    }
}

#[test]
fn a_restarted_node_gets_its_own_sessions_back_and_peers_see_it_go_and_come() {
    let mut f = cluster(31, 3, lossy(0.0));
    feed(&mut f, 200, Duration::from_millis(100));
    let t = f.now() + Duration::from_secs(1);
    assert!(f.run_until_cond(t, converged));
    let before: Vec<SessionKey> = f.node(1).owner.local.keys().copied().collect();

    f.set_up(1, false);
    let t = f.now() + Duration::from_secs(3);
    assert!(
        f.run_until_cond(t, |f| f.node(0).owner.peer_downs == 1 && f.node(2).owner.peer_downs == 1)
    );
    // Peers keep the dead node's sessions: that is what keeps its flows alive.
    assert_eq!(f.node(0).owner.learned.len(), 400);

    let now = f.now();
    f.restart(1, engine(2, 2, true, now), SimTable::default());
    let t = f.now() + Duration::from_secs(5);
    assert!(f.run_until_cond(t, |f| f.node(1).owner.ready));
    let got = &f.node(1).owner.learned;
    assert!(before.iter().all(|k| got.contains_key(k)), "its own sessions came back from peers");
    assert_eq!(got.len(), 600);
    for i in [0, 2] {
        let p = f.node(i).engine.peers();
        let p1 = p.iter().find(|p| p.node.0 == 2).unwrap();
        assert!(p1.alive && p1.epoch == 2);
    }
}

#[test]
fn entries_beyond_the_per_origin_limit_are_shed_and_counted() {
    let mut f = Fabric::new(41, LinkModel::default());
    f.add_node(engine(1, 1, false, Instant::ZERO), SimTable::default());
    let mut c = config(2, 1);
    c.resync_on_start = false;
    c.max_entries_per_origin = 100;
    f.add_node(slb_sync::Engine::new(c, Instant::ZERO).unwrap(), SimTable::default());
    for i in 0..250 {
        f.local(0, third_packet(record(1, i)));
    }
    f.run_until(f.now() + Duration::from_secs(1));
    let n = f.node(1);
    assert_eq!(n.owner.learned.len(), 100);
    assert_eq!(n.engine.stats().peer_entries_shed, 150);
    assert_eq!(n.engine.known_sessions(), 100);
}

#[test]
fn removals_propagate_and_stale_updates_do_not_resurrect() {
    let mut f = cluster(51, 2, LinkModel::default());
    let r = record(1, 1);
    f.local(0, third_packet(r.clone()));
    f.run_until(f.now() + Duration::from_millis(50));
    assert!(f.node(1).owner.learned.contains_key(&r.key));
    let mut tomb = r.clone();
    tomb.flags.set(slb_sync::EntryFlags::REMOVED, true);
    assert!(f.local(0, SessionEvent::forced(tomb)));
    assert!(f.node(0).owner.local.is_empty());
    f.run_until(f.now() + Duration::from_millis(50));
    assert!(!f.node(1).owner.learned.contains_key(&r.key));
    assert_eq!(f.node(1).engine.stats().entries_applied, 2);
}
