//! Client streams spread over the client namespaces, one tokio runtime per namespace.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use slb::l4::lab::in_netns;

use crate::topo::Topology;
use crate::traffic::{StreamParams, StreamReport, run_stream};

pub(crate) struct Streams {
    threads: Vec<JoinHandle<Vec<StreamReport>>>,
    flowing: Arc<AtomicUsize>,
}

impl Streams {
    /// Streams that have verified their first bytes.
    pub(crate) fn flowing(&self) -> usize {
        self.flowing.load(Ordering::Relaxed)
    }

    /// Waits for every stream to end (after the stop signal) and returns their reports.
    pub(crate) fn join(self) -> Vec<StreamReport> {
        let mut out = Vec::new();
        for t in self.threads {
            match t.join() {
                Ok(r) => out.extend(r),
                Err(_) => eprintln!("a client thread panicked"),
            }
        }
        out
    }
}

/// Starts `n` streams with ids `first_id..`, spread round robin over the client namespaces.
pub(crate) fn spawn_streams(
    topo: &Topology,
    n: usize,
    first_id: u32,
    base: &StreamParams,
) -> Streams {
    let flowing = Arc::clone(&base.flowing);
    let k = topo.clients.len().max(1);
    let threads = topo
        .clients
        .iter()
        .enumerate()
        .map(|(ci, ns)| {
            let ids: Vec<u32> =
                (0..n).filter(|i| i % k == ci).map(|i| first_id + i as u32).collect();
            let name = ns.name().to_owned();
            let p = base.clone();
            std::thread::spawn(move || {
                let run = move || {
                    let rt =
                        match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                            Ok(rt) => rt,
                            Err(e) => {
                                eprintln!("client runtime: {e}");
                                return Vec::new();
                            }
                        };
                    rt.block_on(async move {
                        let mut tasks = Vec::new();
                        for id in ids {
                            let seed =
                                0x5eed_0000_0000_0000 ^ u64::from(id).wrapping_mul(0x9e37_79b9);
                            tasks.push(tokio::spawn(run_stream(id, seed, p.clone())));
                            // Spread the handshakes a little, as real clients would.
                            tokio::time::sleep(Duration::from_millis(2)).await;
                        }
                        let mut out = Vec::new();
                        for t in tasks {
                            if let Ok(r) = t.await {
                                out.push(r);
                            }
                        }
                        out
                    })
                };
                in_netns(&name, run).unwrap_or_else(|e| {
                    eprintln!("client namespace {name}: {e}");
                    Vec::new()
                })
            })
        })
        .collect();
    Streams { threads, flowing }
}
