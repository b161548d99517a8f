//! The threaded driver: an engine thread and one reader thread per socket.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::Duration;

use slb_core::time::{Clock, Instant};

use super::Transport;
use crate::engine::{Engine, Event, PeerInfo, SessionEvent, SnapshotRequest, Stats};
use crate::types::SessionRecord;

/// Inputs waiting for the engine thread.
const CHANNEL: usize = 8192;
/// Longest the engine thread sleeps (bounds shutdown latency).
const MAX_WAIT: Duration = Duration::from_millis(100);
/// Reader threads wake this often to notice shutdown.
const READ_TIMEOUT: Duration = Duration::from_millis(50);
/// Inputs handled per wake-up before timers and output run.
const BATCH: usize = 512;

enum Input {
    Datagram(SocketAddr, Vec<u8>),
    Local(SessionEvent),
    Locals(Vec<SessionEvent>),
    Removed(SessionRecord),
    Snapshot(SnapshotRequest, Vec<SessionRecord>),
    Status(mpsc::Sender<DriverStatus>),
    Flush,
}

/// A snapshot of a running driver.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct DriverStatus {
    /// The engine's counters.
    pub stats: Stats,
    /// The startup resync is over.
    pub ready: bool,
    /// Peers.
    pub peers: Vec<PeerInfo>,
    /// Session keys the engine remembers.
    pub known_sessions: usize,
    /// Datagrams the transport failed to send.
    pub send_errors: u64,
    /// Socket receive errors (other than timeouts).
    pub recv_errors: u64,
    /// Local events shed because the driver's channel was full.
    pub local_shed: u64,
}

/// The dataplane's handle on a running driver. Dropping it stops the threads.
#[derive(Debug)]
pub struct SyncHandle {
    tx: Option<SyncSender<Input>>,
    stop: Arc<AtomicBool>,
    shed: Arc<AtomicU64>,
    threads: Vec<JoinHandle<()>>,
    clock: Clock,
}

/// Reads the system clock: drivers are the only code allowed to.
#[expect(clippy::disallowed_methods, reason = "the driver owns the clock; the engine takes `now`")]
fn read_clock(clock: &Clock) -> Instant {
    clock.at(std::time::Instant::now())
}

/// Runs `engine` over `transport`. `clock` must be the clock `engine` was created with;
/// `on_event` runs on the engine thread for every event and may call into the engine.
pub fn spawn<T, F>(
    engine: Engine,
    transport: T,
    clock: Clock,
    on_event: F,
) -> io::Result<SyncHandle>
where
    T: Transport,
    F: FnMut(&mut Engine, Instant, Event) + Send + 'static,
{
    let (tx, rx) = mpsc::sync_channel::<Input>(CHANNEL);
    let stop = Arc::new(AtomicBool::new(false));
    let shed = Arc::new(AtomicU64::new(0));
    let recv_errors = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    for (i, sock) in transport.receivers()?.into_iter().enumerate() {
        sock.set_read_timeout(Some(READ_TIMEOUT))?;
        let (tx, stop, errors) = (tx.clone(), stop.clone(), recv_errors.clone());
        threads.push(
            std::thread::Builder::new()
                .name(format!("slb-sync-rx{i}"))
                .spawn(move || reader(sock, tx, stop, errors))?,
        );
    }
    let st = (stop.clone(), shed.clone());
    threads.push(std::thread::Builder::new().name("slb-sync".into()).spawn(move || {
        engine_loop(engine, transport, clock, on_event, rx, st.0, st.1, recv_errors)
    })?);
    Ok(SyncHandle { tx: Some(tx), stop, shed, threads, clock })
}

fn reader(sock: UdpSocket, tx: SyncSender<Input>, stop: Arc<AtomicBool>, errors: Arc<AtomicU64>) {
    let mut buf = vec![0u8; 65_536];
    while !stop.load(Ordering::Relaxed) {
        match sock.recv_from(&mut buf) {
            Ok((n, from)) => {
                if tx.send(Input::Datagram(from, buf[..n].to_vec())).is_err() {
                    return;
                }
            }
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
            Err(_) => {
                errors.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

#[expect(clippy::too_many_arguments, reason = "private thread entry point; the args are its state")]
fn engine_loop<T: Transport, F: FnMut(&mut Engine, Instant, Event)>(
    mut engine: Engine,
    transport: T,
    clock: Clock,
    mut on_event: F,
    rx: mpsc::Receiver<Input>,
    stop: Arc<AtomicBool>,
    shed: Arc<AtomicU64>,
    recv_errors: Arc<AtomicU64>,
) {
    let mut send_errors = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let now = read_clock(&clock);
        let wait = engine
            .poll_timeout()
            .map_or(MAX_WAIT, |t| t.saturating_duration_since(now))
            .min(MAX_WAIT);
        let first = match rx.recv_timeout(wait) {
            Ok(i) => Some(i),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let mut now = read_clock(&clock);
        let mut input = first;
        let mut n = 0;
        while let Some(i) = input {
            match i {
                Input::Datagram(from, bytes) => engine.handle_datagram(now, from, &bytes),
                Input::Local(ev) => {
                    engine.handle_local(now, ev);
                }
                Input::Locals(evs) => {
                    for ev in evs {
                        engine.handle_local(now, ev);
                    }
                }
                Input::Removed(r) => {
                    engine.handle_local_removed(now, r);
                }
                Input::Snapshot(req, records) => {
                    engine.provide_snapshot(now, req, records);
                }
                Input::Flush => engine.flush(now),
                Input::Status(reply) => {
                    let _ = reply.send(DriverStatus {
                        stats: engine.stats().clone(),
                        ready: engine.is_ready(),
                        peers: engine.peers(),
                        known_sessions: engine.known_sessions(),
                        send_errors,
                        recv_errors: recv_errors.load(Ordering::Relaxed),
                        local_shed: shed.load(Ordering::Relaxed),
                    });
                }
            }
            n += 1;
            // Outputs after every input: events reach the owner without waiting for a batch.
            send_errors += drain(&mut engine, &transport, &mut on_event, now);
            input = if n < BATCH { rx.try_recv().ok() } else { None };
            if n % 16 == 0 {
                now = read_clock(&clock);
            }
        }
        if engine.poll_timeout().is_some_and(|t| t <= now) {
            engine.handle_timeout(now);
        }
        send_errors += drain(&mut engine, &transport, &mut on_event, now);
    }
}

/// Sends every queued datagram and hands out every event; returns send errors.
fn drain<T: Transport, F: FnMut(&mut Engine, Instant, Event)>(
    engine: &mut Engine,
    transport: &T,
    on_event: &mut F,
    now: Instant,
) -> u64 {
    let mut errors = 0;
    loop {
        let mut any = false;
        while let Some(t) = engine.poll_transmit() {
            any = true;
            if transport.send(&t.dest, &t.bytes).is_err() {
                errors += 1;
            }
        }
        while let Some(e) = engine.poll_event() {
            any = true;
            on_event(engine, now, e);
        }
        if !any {
            return errors;
        }
    }
}

impl SyncHandle {
    fn try_input(&self, i: Input) -> bool {
        let Some(tx) = &self.tx else { return false };
        match tx.try_send(i) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.shed.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Hands a local session event to the engine; false (counted) if the driver is overloaded.
    pub fn submit(&self, ev: SessionEvent) -> bool {
        self.try_input(Input::Local(ev))
    }

    /// Hands several local events at once (cheaper per event).
    pub fn submit_batch(&self, evs: Vec<SessionEvent>) -> bool {
        self.try_input(Input::Locals(evs))
    }

    /// Like [`SyncHandle::submit_batch`], but hands the events back when the channel is full
    /// (not counted as shed: the caller decides whether to retry or drop them).
    pub fn try_submit_batch(&self, evs: Vec<SessionEvent>) -> Result<(), Vec<SessionEvent>> {
        let Some(tx) = &self.tx else { return Err(evs) };
        match tx.try_send(Input::Locals(evs)) {
            Ok(()) => Ok(()),
            Err(
                TrySendError::Full(Input::Locals(v)) | TrySendError::Disconnected(Input::Locals(v)),
            ) => Err(v),
            Err(_) => Ok(()),
        }
    }

    /// A local session was removed.
    pub fn remove(&self, record: SessionRecord) -> bool {
        self.try_input(Input::Removed(record))
    }

    /// Sends the pending updates datagram now.
    pub fn flush(&self) -> bool {
        self.try_input(Input::Flush)
    }

    /// Answers a snapshot request from another thread (blocks while the channel is full).
    pub fn provide_snapshot(&self, req: SnapshotRequest, records: Vec<SessionRecord>) -> bool {
        self.tx.as_ref().is_some_and(|tx| tx.send(Input::Snapshot(req, records)).is_ok())
    }

    /// The driver's state, or `None` if it does not answer within a second.
    pub fn status(&self) -> Option<DriverStatus> {
        let (reply, answer) = mpsc::channel();
        self.tx.as_ref()?.send(Input::Status(reply)).ok()?;
        answer.recv_timeout(Duration::from_secs(1)).ok()
    }

    /// The driver's clock, read now.
    pub fn now(&self) -> Instant {
        read_clock(&self.clock)
    }

    /// Stops the threads and waits for them.
    pub fn shutdown(mut self) {
        self.stop_threads();
    }

    fn stop_threads(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.tx = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for SyncHandle {
    fn drop(&mut self) {
        self.stop_threads();
    }
}
