//! The director's driver loop (feature `io`): links in, [`Forwarder::process_batch`], links out, plus
//! the session sweep, health events and periodic counters. This is the part that reads the clock.
//!
//! ```text
//!   loop until stop:
//!     recv_batch on every link (non-blocking)      -- nothing anywhere? poll(fds, <= 50 ms)
//!     process the batch (session lookups overlapped) -> per-port send queues (buffers are
//!       moved, never allocated)
//!     poll_transmit (frames released by resolved neighbours)
//!     send_batch per port
//!     every 50 ms: expire sessions (incremental), apply health flips
//!     with a cluster (feature `sync`): local session changes to the sync engine, its events
//!       (peer sessions, snapshot requests, peers' liveness) to the forwarder, gratuitous ARPs
//!       out; the loop then waits at most 5 ms for frames so engine events are not held back
//! ```
//!
//! [`Director::leave_cluster`] and [`Director::run_for`] make a graceful exit: stop the sync
//! engine (peers take over this node's addresses once they miss its heartbeats) while the
//! forwarder keeps serving the frames that still arrive, then stop.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use slb_core::time::{Clock, Instant};

use crate::frame::FrameBuf;
use crate::fwd::{Forwarder, PortId, Verdict};
use crate::health::HealthEvent;
use crate::link::offload::{OffloadConfig, OffloadStats, Offloader, Snap};
use crate::link::{FlowOffload, Link, LinkStats, sys};

/// A link the director can move to its thread.
pub type BoxLink = Box<dyn Link + Send>;

/// Driver settings.
#[derive(Clone, Copy, Debug)]
pub struct DriverConfig {
    /// Frames per receive batch.
    pub batch: usize,
    /// Session slots examined per housekeeping round (every 50 ms).
    pub sweep_budget: usize,
    /// Print the counters (ipvsadm layout) to stderr this often, if set.
    pub print_stats: Option<Duration>,
    /// Receive coalescing, like a NIC's interrupt moderation: after a pass that found fewer
    /// than a quarter of a batch, the loop sleeps this long before the next one, so that at
    /// moderate rates frames gather into bigger batches (fewer system calls, wake-ups and
    /// transmit kicks per frame). Frames are never held: a pass forwards everything it read
    /// before sleeping; those arriving meanwhile wait at most this long. Zero: off.
    pub coalesce: Duration,
}

impl Default for DriverConfig {
    fn default() -> Self {
        DriverConfig { batch: 64, sweep_budget: 4096, print_stats: None, coalesce: Duration::ZERO }
    }
}

/// A forwarder driven by real links, one per port (link `i` is port `i`).
pub struct Director {
    fwd: Forwarder,
    links: Vec<BoxLink>,
    clock: Clock,
    cfg: DriverConfig,
    health: Option<Receiver<HealthEvent>>,
    rx: Vec<FrameBuf>,
    /// The verdicts of a received batch.
    verdicts: Vec<Verdict>,
    tx: Vec<Vec<FrameBuf>>,
    pool: Vec<FrameBuf>,
    metrics: Arc<Mutex<String>>,
    metrics_every: Option<Duration>,
    /// The XDP flow cache's upkeep, and the heads of a batch's frames before their step.
    offload: Option<(Offloader, Vec<Snap>)>,
    #[cfg(feature = "sync")]
    cluster: Option<crate::cluster::driver::ClusterDriver>,
}

impl std::fmt::Debug for Director {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Director")
            .field("links", &self.links.len())
            .field("cfg", &self.cfg)
            .finish()
    }
}

const HOUSEKEEPING: Duration = Duration::from_millis(50);

impl Director {
    /// A director for `fwd` with `links[i]` as port `i`; `clock` converts readings to the
    /// forwarder's time.
    pub fn new(fwd: Forwarder, links: Vec<BoxLink>, clock: Clock, cfg: DriverConfig) -> Self {
        let n = links.len();
        let batch = cfg.batch.max(1);
        Director {
            fwd,
            links,
            clock,
            cfg,
            health: None,
            rx: (0..batch).map(|_| FrameBuf::default()).collect(),
            verdicts: vec![Verdict::Host; batch],
            tx: (0..n).map(|_| Vec::with_capacity(batch)).collect(),
            pool: (0..batch * (n + 1)).map(|_| FrameBuf::default()).collect(),
            metrics: Arc::new(Mutex::new(String::new())),
            metrics_every: None,
            offload: None,
            #[cfg(feature = "sync")]
            cluster: None,
        }
    }

    /// Keeps the flow cache `cache` (shared with this director's [`crate::link::XdpLink`]s) in
    /// step with the forwarder: established flows are cached after their step marks a frame
    /// steady, their traffic is reported back once per `cfg.cycle`, and they are forgotten
    /// when their session changes. See [`crate::link::offload`].
    pub fn with_offload(mut self, cache: FlowOffload, cfg: OffloadConfig) -> Self {
        let ifindex = self.links.iter().map(|l| l.ifindex()).collect();
        let snaps = vec![Snap::default(); self.rx.len()];
        self.offload = Some((Offloader::new(cache, ifindex, cfg), snaps));
        self
    }

    /// The flow cache's counters, with one.
    pub fn offload_stats(&self) -> Option<OffloadStats> {
        self.offload.as_ref().map(|(o, _)| o.stats())
    }

    /// Logs (at `info`, through `tracing`) the forwarder's counters in `ipvsadm -L -n --stats`
    /// layout, the links' counters and the flow cache's.
    pub fn log_stats(&self) {
        tracing::info!(
            links = ?self.link_stats(),
            offload = ?self.offload_stats(),
            "counters\n{}",
            self.fwd.report().ipvsadm()
        );
    }

    /// Renders Prometheus text (forwarder counters, and the cluster's with one) every `every`
    /// into [`Director::metrics`], for a status endpoint on another thread.
    pub fn with_metrics(mut self, every: Duration) -> Self {
        self.metrics_every = Some(every);
        self
    }

    /// The latest rendered metrics (empty until the first rendering).
    pub fn metrics(&self) -> Arc<Mutex<String>> {
        Arc::clone(&self.metrics)
    }

    /// Replicates sessions and takes over addresses with `cluster` (whose [`crate::cluster::Cluster`]
    /// was attached to this director's forwarder).
    #[cfg(feature = "sync")]
    pub fn with_cluster(mut self, cluster: crate::cluster::driver::ClusterDriver) -> Self {
        self.cluster = Some(cluster);
        self
    }

    /// The cluster driver, if any.
    #[cfg(feature = "sync")]
    pub fn cluster(&self) -> Option<&crate::cluster::driver::ClusterDriver> {
        self.cluster.as_ref()
    }

    /// Stops replicating (see the module docs); the forwarder keeps its sessions and addresses.
    #[cfg(feature = "sync")]
    pub fn leave_cluster(&mut self) {
        let now = self.now();
        if let Some(c) = self.cluster.as_mut() {
            c.leave(&mut self.fwd, now);
        }
    }

    #[cfg(feature = "sync")]
    fn cluster_step(&mut self, now: Instant) -> std::io::Result<()> {
        let Some(c) = self.cluster.as_mut() else { return Ok(()) };
        for (port, frame) in c.step(&mut self.fwd, now) {
            if let Some(l) = self.links.get_mut(usize::from(port.0)) {
                l.send_batch(std::slice::from_ref(&frame))?;
            }
        }
        Ok(())
    }

    #[cfg(not(feature = "sync"))]
    fn cluster_step(&mut self, _now: Instant) -> std::io::Result<()> {
        Ok(())
    }

    fn has_cluster(&self) -> bool {
        #[cfg(feature = "sync")]
        return self.cluster.is_some();
        #[cfg(not(feature = "sync"))]
        false
    }

    fn render_metrics(&self) {
        #[cfg_attr(not(feature = "sync"), allow(unused_mut))]
        let mut text = self.fwd.report().prometheus();
        #[cfg(feature = "sync")]
        if let Some(c) = &self.cluster {
            text.push_str(&c.prometheus(&self.fwd));
        }
        if let Ok(mut m) = self.metrics.lock() {
            *m = text;
        }
    }

    /// Applies health flips received on `events` (from [`crate::health::spawn_prober`]).
    pub fn with_health(mut self, events: Receiver<HealthEvent>) -> Self {
        self.health = Some(events);
        self
    }

    /// The forwarder.
    pub fn forwarder(&self) -> &Forwarder {
        &self.fwd
    }

    /// The forwarder, mutable (configuration changes between runs).
    pub fn forwarder_mut(&mut self) -> &mut Forwarder {
        &mut self.fwd
    }

    /// Counters of every link.
    pub fn link_stats(&self) -> Vec<LinkStats> {
        self.links.iter().map(|l| l.stats()).collect()
    }

    #[allow(clippy::disallowed_methods)] // the driver is where the clock is read
    fn now(&self) -> Instant {
        self.clock.at(std::time::Instant::now())
    }

    /// Sends gratuitous ARPs / unsolicited NAs for every VIP and local address (takeover).
    pub fn announce(&mut self) -> std::io::Result<()> {
        for (port, frame) in self.fwd.announcements() {
            if let Some(l) = self.links.get_mut(usize::from(port.0)) {
                l.send_batch(std::slice::from_ref(&frame))?;
            }
        }
        Ok(())
    }

    fn queue(&mut self, port: PortId, i: usize) {
        let spare = self.pool.pop().unwrap_or_default();
        let frame = std::mem::replace(&mut self.rx[i], spare);
        if let Some(q) = self.tx.get_mut(usize::from(port.0)) {
            q.push(frame);
        } else {
            self.pool.push(frame);
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        for (p, q) in self.tx.iter_mut().enumerate() {
            if q.is_empty() {
                continue;
            }
            self.links[p].send_batch(q)?;
            self.pool.append(q);
        }
        Ok(())
    }

    /// One pass: receive what is waiting on every link, process, send. Returns frames received.
    pub fn poll_once(&mut self) -> std::io::Result<usize> {
        let mut total = 0;
        for p in 0..self.links.len() {
            let n = self.links[p].recv_batch(&mut self.rx)?;
            if n == 0 {
                continue;
            }
            total += n;
            let now = self.now();
            let n = n.min(self.rx.len());
            let port = PortId(p as u8);
            if let Some((_, snaps)) = &mut self.offload {
                for (s, f) in snaps.iter_mut().zip(&self.rx[..n]) {
                    s.take(f);
                }
            }
            self.fwd.process_batch(now, &mut self.rx[..n], port, &mut self.verdicts[..n]);
            if let Some((o, snaps)) = &mut self.offload {
                o.observe(&mut self.fwd, now, &snaps[..n], &self.rx[..n], &self.verdicts[..n]);
            }
            for i in 0..n {
                match self.verdicts[i] {
                    Verdict::Forward(out) | Verdict::Reply(out) | Verdict::Solicit(out) => {
                        self.queue(out, i)
                    }
                    Verdict::Held | Verdict::Host | Verdict::Drop(_) => {}
                }
            }
            let mut spare = self.pool.pop().unwrap_or_default();
            while let Some(out) = self.fwd.poll_transmit(&mut spare) {
                if let Some(q) = self.tx.get_mut(usize::from(out.0)) {
                    q.push(spare);
                    spare = self.pool.pop().unwrap_or_default();
                }
            }
            self.pool.push(spare);
            self.flush()?;
        }
        Ok(total)
    }

    fn housekeeping(&mut self, now: Instant) {
        // The cache's traffic first, so that no session it keeps busy expires.
        if let Some((o, _)) = &mut self.offload {
            o.scan(&mut self.fwd, now, false);
        }
        self.fwd.expire(now, self.cfg.sweep_budget);
        if let Some(rx) = &self.health {
            let events: Vec<HealthEvent> = rx.try_iter().collect();
            for ev in events {
                let _ = self.fwd.set_real_state(ev.id, ev.state(), now);
                tracing::info!(target = %ev.target, status = ?ev.status, "health: real server changed state");
            }
        }
    }

    /// Runs until `stop` is set: forwards, sweeps sessions, applies health flips.
    pub fn run(&mut self, stop: &AtomicBool) -> std::io::Result<()> {
        self.run_until(stop, None)
    }

    /// Runs for `d` (e.g. the drain period of a graceful exit), or until `stop` is set.
    pub fn run_for(&mut self, stop: &AtomicBool, d: Duration) -> std::io::Result<()> {
        let until = self.now() + d;
        self.run_until(stop, Some(until))
    }

    fn run_until(&mut self, stop: &AtomicBool, until: Option<Instant>) -> std::io::Result<()> {
        let fds: Vec<_> = self.links.iter().filter_map(|l| l.poll_fd()).collect();
        let mut next_house = self.now();
        let mut next_stats = self.cfg.print_stats.map(|d| self.now() + d);
        let mut next_metrics = self.now();
        let wait = if self.has_cluster() { Duration::from_millis(5) } else { HOUSEKEEPING };
        let coalesce = self.cfg.coalesce;
        if !coalesce.is_zero() {
            // The default 50 µs timer slack would stretch a short sleep to several times its length.
            sys::set_timer_slack(Duration::from_micros(5));
        }
        let few = (self.cfg.batch / 4).max(1);
        while !stop.load(Ordering::Relaxed) {
            let n = self.poll_once()?;
            let now = self.now();
            if until.is_some_and(|u| now >= u) {
                break;
            }
            self.cluster_step(now)?;
            if now >= next_house {
                self.housekeeping(now);
                next_house = now + HOUSEKEEPING;
            }
            if let Some(every) = self.metrics_every
                && now >= next_metrics
            {
                self.render_metrics();
                next_metrics = now + every;
            }
            if let (Some(t), Some(every)) = (next_stats, self.cfg.print_stats)
                && now >= t
            {
                self.log_stats();
                next_stats = Some(now + every);
            }
            if n > 0 && n < few && !coalesce.is_zero() {
                std::thread::sleep(coalesce);
            } else if n == 0 {
                if fds.len() == self.links.len() {
                    sys::poll_readable(&fds, wait.as_millis() as i32)?;
                } else {
                    std::thread::sleep(Duration::from_micros(100));
                }
            }
        }
        // The flow cache's last traffic, so that the counters are complete at exit.
        let now = self.now();
        if let Some((o, _)) = &mut self.offload {
            o.scan(&mut self.fwd, now, true);
        }
        Ok(())
    }
}

/// The MAC and addresses (with prefix lengths) of interface `name`, as the system has them.
pub fn interface_info(name: &str) -> std::io::Result<(crate::fwd::Mac, Vec<crate::fwd::Cidr>)> {
    let iface =
        pnet_datalink::interfaces().into_iter().find(|i| i.name == name).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotFound, format!("no interface {name}"))
        })?;
    let mac = iface.mac.map(|m| m.octets()).unwrap_or([0; 6]);
    let addrs = iface.ips.iter().map(|n| crate::fwd::Cidr::new(n.ip(), n.prefix())).collect();
    Ok((mac, addrs))
}

/// Sets `stop` on SIGTERM or SIGINT (a thread with a small tokio runtime waits for them).
pub fn stop_on_signals(stop: Arc<AtomicBool>) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    std::thread::Builder::new().name("slb-signals".into()).spawn(move || {
        rt.block_on(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut term), Ok(mut int)) =
                (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
            else {
                return;
            };
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            stop.store(true, Ordering::Relaxed);
        });
    })?;
    Ok(())
}
