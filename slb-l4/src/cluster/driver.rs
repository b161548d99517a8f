//! The cluster on real threads (features `io` + `sync`): slb-sync's threaded driver runs the
//! engine; this module carries its events to the director's forwarding thread and the
//! forwarder's session changes back, without ever blocking the forwarding loop on the engine.
//!
//! ```text
//!   forwarding thread (Director)                     engine thread (slb_sync::transport)
//!     Cluster::poll_local ---- try_submit_batch --->   Engine::handle_local
//!     Cluster::handle_event <---- events channel ---   on_event (every Event)
//!     Cluster::update_peers <---- status channel ---   monitor thread: SyncHandle::status, 50 ms
//!     snapshot answers ------- provide_snapshot --->   Engine::provide_snapshot
//! ```
//! The events channel is unbounded on purpose: the engine thread must never wait for the
//! forwarding thread (which may itself be waiting to hand the engine a snapshot); the engine's
//! own event queue and its peers' rate bound what arrives.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use slb_core::time::{Clock, Instant};
use slb_sync::transport::{DriverStatus, SyncHandle, Transport, spawn};
use slb_sync::{Engine, Event, PeerInfo, SessionEvent};

use super::{Cluster, Followup};
use crate::frame::FrameBuf;
use crate::fwd::{Forwarder, PEER_SESSION, PortId};
use slb_core::session::ConnState;

/// A per-peer Prometheus gauge: name, help, value.
type PeerGauge = (&'static str, &'static str, fn(&PeerInfo) -> bool);

/// How often the monitor thread asks the engine for its peers and readiness.
const STATUS_EVERY: Duration = Duration::from_millis(50);
/// Engine events applied per forwarding-loop pass (the rest wait for the next pass).
const EVENTS_PER_PASS: usize = 4096;
/// Local events kept while the engine's channel is full, before shedding.
const PENDING_MAX: usize = 1 << 16;

#[allow(clippy::large_enum_variant)] // events are many and stay unboxed; statuses are rare
enum FromEngine {
    Event(Event),
    Status(Box<DriverStatus>),
}

/// The engine running on its threads, as the forwarding thread sees it.
pub struct SyncLink {
    handle: Option<Arc<SyncHandle>>,
    rx: Receiver<FromEngine>,
    stop: Arc<AtomicBool>,
    monitor: Option<JoinHandle<()>>,
    status: Arc<Mutex<Option<DriverStatus>>>,
}

impl std::fmt::Debug for SyncLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncLink").field("running", &self.handle.is_some()).finish()
    }
}

impl SyncLink {
    /// Starts `engine` on `transport` (slb-sync's threaded driver) plus a monitor thread.
    /// `clock` must be the clock the engine was created with.
    pub fn spawn<T: Transport>(engine: Engine, transport: T, clock: Clock) -> io::Result<SyncLink> {
        let (tx, rx) = mpsc::channel();
        let events = tx.clone();
        let handle = Arc::new(spawn(engine, transport, clock, move |_, _, ev| {
            let _ = events.send(FromEngine::Event(ev));
        })?);
        let stop = Arc::new(AtomicBool::new(false));
        let status = Arc::new(Mutex::new(None));
        let (h, s, st) = (Arc::clone(&handle), Arc::clone(&stop), Arc::clone(&status));
        let monitor = std::thread::Builder::new().name("slb-sync-mon".into()).spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if let Some(d) = h.status() {
                    if let Ok(mut g) = st.lock() {
                        *g = Some(d.clone());
                    }
                    if tx.send(FromEngine::Status(Box::new(d))).is_err() {
                        return;
                    }
                }
                std::thread::sleep(STATUS_EVERY);
            }
        })?;
        Ok(SyncLink { handle: Some(handle), rx, stop, monitor: Some(monitor), status })
    }

    /// The engine driver's handle (e.g. for a status page on another thread).
    pub fn handle(&self) -> Option<&Arc<SyncHandle>> {
        self.handle.as_ref()
    }

    /// The latest driver status the monitor saw.
    pub fn last_status(&self) -> Option<DriverStatus> {
        self.status.lock().ok().and_then(|g| g.clone())
    }

    /// Stops the monitor and the engine (peers then see this node go down); waits for the
    /// threads.
    pub fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(m) = self.monitor.take() {
            let _ = m.join();
        }
        self.handle = None;
    }

    /// Like [`SyncLink::shutdown`], but on another thread after `delay` (time for a flushed
    /// datagram to go out), so that the caller's loop keeps running meanwhile.
    pub fn shutdown_in_background(&mut self, delay: Duration) {
        let (stop, monitor, handle) =
            (Arc::clone(&self.stop), self.monitor.take(), self.handle.take());
        let _ = std::thread::Builder::new().name("slb-sync-stop".into()).spawn(move || {
            std::thread::sleep(delay);
            stop.store(true, Ordering::Relaxed);
            if let Some(m) = monitor {
                let _ = m.join();
            }
            drop(handle);
        });
    }
}

impl Drop for SyncLink {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A [`Cluster`] wired to a running engine: the part of the director loop that replicates.
#[derive(Debug)]
pub struct ClusterDriver {
    cluster: Cluster,
    link: SyncLink,
    pending: Vec<SessionEvent>,
    shed: u64,
    held: Vec<std::net::IpAddr>,
}

impl ClusterDriver {
    /// Wires `cluster` (attached to the director's forwarder) to `link`.
    pub fn new(cluster: Cluster, link: SyncLink) -> Self {
        ClusterDriver { cluster, link, pending: Vec::new(), shed: 0, held: Vec::new() }
    }

    /// The cluster glue.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// The engine link.
    pub fn link(&self) -> &SyncLink {
        &self.link
    }

    /// Local events shed because the engine could not keep up.
    pub fn shed(&self) -> u64 {
        self.shed
    }

    /// One pass: local changes to the engine, engine events to the forwarder; returns the
    /// gratuitous ARPs due.
    pub fn step(&mut self, fwd: &mut Forwarder, now: Instant) -> Vec<(PortId, FrameBuf)> {
        while let Some(ev) = self.cluster.poll_local(fwd, now) {
            if self.pending.len() >= PENDING_MAX {
                self.shed += 1;
                continue;
            }
            self.pending.push(ev);
        }
        if !self.pending.is_empty()
            && let Some(h) = self.link.handle.as_ref()
        {
            let batch = std::mem::take(&mut self.pending);
            if let Err(back) = h.try_submit_batch(batch) {
                self.pending = back;
            }
        }
        for _ in 0..EVENTS_PER_PASS {
            match self.link.rx.try_recv() {
                Ok(FromEngine::Event(ev)) => {
                    if matches!(
                        ev,
                        Event::PeerUp { .. }
                            | Event::PeerDown { .. }
                            | Event::Ready
                            | Event::ResyncComplete { .. }
                            | Event::ResyncFailed { .. }
                    ) {
                        tracing::info!(clock_s = now.as_nanos() as f64 / 1e9, event = ?ev, "cluster event");
                    }
                    if let Followup::Snapshot(req) = self.cluster.handle_event(fwd, now, ev) {
                        let records = self.cluster.snapshot(fwd, now);
                        if let Some(h) = self.link.handle.as_ref() {
                            h.provide_snapshot(req, records);
                        }
                    }
                }
                Ok(FromEngine::Status(s)) => {
                    self.cluster.update_peers(fwd, now, &s.peers, s.ready);
                }
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        let held = self.cluster.held_addrs();
        if held != self.held {
            tracing::info!(clock_s = now.as_nanos() as f64 / 1e9, addresses = ?held, "cluster: answering for these addresses");
            self.held = held;
        }
        self.cluster.poll_announcements(fwd, now)
    }

    /// Sends what local changes are pending and stops the engine: peers see this node go down
    /// after their liveness timeout and take over its addresses while it keeps forwarding.
    pub fn leave(&mut self, fwd: &mut Forwarder, now: Instant) {
        let _ = self.step(fwd, now);
        if let Some(h) = self.link.handle.as_ref() {
            if !self.pending.is_empty() {
                h.submit_batch(std::mem::take(&mut self.pending));
            }
            h.flush();
        }
        self.cluster.go_quiet(fwd);
        // The engine thread sends the flushed datagram on its next wake-up; the forwarding
        // loop goes on meanwhile.
        self.link.shutdown_in_background(Duration::from_millis(20));
    }

    /// Prometheus text for the cluster: readiness, peers, held addresses, counters.
    pub fn prometheus(&self, fwd: &Forwarder) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let c = &self.cluster;
        let st = c.stats();
        let fc = fwd.sync_counters();
        let status = self.link.last_status();
        let mut g = |name: &str, kind: &str, help: &str, v: u64| {
            let _ = writeln!(
                s,
                "# HELP slb_cluster_{name} {help}\n# TYPE slb_cluster_{name} {kind}\nslb_cluster_{name} {v}"
            );
        };
        g("ready", "gauge", "1 once the startup resync is over.", u64::from(c.is_ready()));
        g(
            "ready_ms",
            "gauge",
            "Milliseconds from start to ready.",
            c.ready_at().map_or(0, |t| t.as_nanos() / 1_000_000),
        );
        let (mut established, mut synced) = (0u64, 0u64);
        for v in fwd.session_views() {
            established += u64::from(v.session.state() == ConnState::Established);
            synced += u64::from(v.session.flags & PEER_SESSION != 0);
        }
        g("sessions_established", "gauge", "ESTABLISHED sessions (local and synced).", established);
        g(
            "sessions_synced",
            "gauge",
            "Sessions installed from peers and not claimed by local traffic.",
            synced,
        );
        g(
            "local_events_total",
            "counter",
            "Local session changes handed to the engine.",
            st.local_events,
        );
        g("local_removals_total", "counter", "Tombstones handed to the engine.", st.local_removals);
        g(
            "local_shed_total",
            "counter",
            "Local changes shed (engine overloaded).",
            self.shed + status.as_ref().map_or(0, |d| d.local_shed),
        );
        g("upserts_total", "counter", "Sessions received from peers.", st.upserts);
        g("installed_total", "counter", "Peer sessions installed new.", fc.installed);
        g("updated_total", "counter", "Peer sessions updated.", fc.updated);
        g("install_refused_total", "counter", "Peer sessions refused.", fc.install_refused);
        g("removals_total", "counter", "Peer removals applied.", st.removals_applied);
        g("snapshots_total", "counter", "Snapshots served.", st.snapshots);
        g("snapshot_records_total", "counter", "Sessions sent in snapshots.", st.snapshot_records);
        g("peer_downs_total", "counter", "Peers seen going down.", st.peer_downs);
        g("addresses_taken_total", "counter", "Addresses taken.", st.addrs_taken);
        g("addresses_released_total", "counter", "Addresses given up.", st.addrs_released);
        g("announcements_total", "counter", "Gratuitous ARP / NA frames sent.", st.announcements);
        if let Some(d) = &status {
            let e = &d.stats;
            g(
                "known_sessions",
                "gauge",
                "Session keys the engine remembers.",
                d.known_sessions as u64,
            );
            g("tx_entries_total", "counter", "Entries sent in updates.", e.tx_entries);
            g("rx_entries_total", "counter", "Entries received.", e.rx_entries);
            g(
                "retransmits_total",
                "counter",
                "Updates datagrams resent after NACKs.",
                e.tx_retransmits,
            );
            g(
                "rx_rejected_total",
                "counter",
                "Datagrams rejected (bad MAC, replay, wrong cluster, malformed).",
                e.rx_bad_mac + e.rx_replayed + e.rx_wrong_cluster + e.rx_malformed + e.rx_truncated,
            );
            g(
                "resyncs_completed_total",
                "counter",
                "Snapshots received complete.",
                e.resync_completed,
            );
        }
        let peer_gauges: [PeerGauge; 2] = [
            ("peer_alive", "Peer heartbeats arriving.", |p| p.alive),
            ("peer_joining", "Peer still receiving its table.", |p| p.joining),
        ];
        for (name, help, value) in peer_gauges {
            let _ =
                writeln!(s, "# HELP slb_cluster_{name} {help}\n# TYPE slb_cluster_{name} gauge");
            for p in status.iter().flat_map(|d| d.peers.iter()) {
                let _ = writeln!(
                    s,
                    "slb_cluster_{name}{{node=\"{}\"}} {}",
                    p.node.0,
                    u64::from(value(p))
                );
            }
        }
        let _ = writeln!(
            s,
            "# HELP slb_cluster_address_held Addresses this node answers for (ARP/ND).\n# TYPE slb_cluster_address_held gauge"
        );
        for a in c.held_addrs() {
            let _ = writeln!(s, "slb_cluster_address_held{{address=\"{a}\"}} 1");
        }
        s
    }
}
