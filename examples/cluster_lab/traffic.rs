//! Long-lived TCP streams whose every byte is checked end to end.
//!
//! A client connects to the VIP and sends a 16-byte hello: `b"SLBS"`, a connection id (u32 BE)
//! and a seed (u64 BE). The server answers with an endless byte stream that is a pure function
//! of the seed (a keystream: SplitMix64's output function on a block counter), paced at a fixed
//! rate, and also echoes a 1-byte tick the client sends every 100 ms (so the director keeps
//! seeing client packets). The client checks every byte, so "survived" means no byte was lost,
//! duplicated or corrupted, and it records the longest gap between two bytes arriving (the
//! stall a failover causes).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use slb::core::rng::{GAMMA, mix64};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const MAGIC: &[u8; 4] = b"SLBS";

/// The keystream: byte `i` of the stream of `seed`.
pub(crate) struct Keystream {
    seed: u64,
    block: u64,
    buf: [u8; 8],
    pos: usize,
}

impl Keystream {
    pub(crate) fn new(seed: u64) -> Self {
        let mut k = Keystream { seed, block: 0, buf: [0; 8], pos: 8 };
        k.refill();
        k.pos = 0;
        k
    }

    fn refill(&mut self) {
        self.buf = mix64(self.seed ^ self.block.wrapping_mul(GAMMA)).to_le_bytes();
        self.block += 1;
    }

    pub(crate) fn fill(&mut self, out: &mut [u8]) {
        for b in out {
            if self.pos == 8 {
                self.refill();
                self.pos = 0;
            }
            *b = self.buf[self.pos];
            self.pos += 1;
        }
    }
}

/// Serves streams on `listen` at `rate` bytes per second per connection, one write every
/// `tick`, until the process dies. The first byte of every stream is the server's `id`.
pub(crate) async fn serve(
    listen: SocketAddr,
    rate: u64,
    tick: Duration,
    id: u8,
) -> anyhow::Result<()> {
    let l = TcpListener::bind(listen).await?;
    loop {
        let (sock, _) = l.accept().await?;
        tokio::spawn(async move {
            let _ = serve_one(sock, rate, tick, id).await;
        });
    }
}

async fn serve_one(mut sock: TcpStream, rate: u64, tick: Duration, id: u8) -> anyhow::Result<()> {
    sock.set_nodelay(true)?;
    let mut hello = [0u8; 16];
    sock.read_exact(&mut hello).await?;
    anyhow::ensure!(&hello[..4] == MAGIC, "bad hello");
    let seed = u64::from_be_bytes(hello[8..16].try_into()?);
    let mut ks = Keystream::new(seed);
    let (mut rd, mut wr) = sock.into_split();
    wr.write_all(&[id]).await?;
    // Echo ticks in the background; the stream goes out on the write half.
    let echo = tokio::spawn(async move {
        let mut b = [0u8; 64];
        loop {
            match rd.read(&mut b).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    });
    let per_tick = (rate * tick.as_millis() as u64 / 1000).max(1) as usize;
    let mut buf = vec![0u8; per_tick];
    let mut next = tokio::time::Instant::now();
    loop {
        ks.fill(&mut buf);
        if wr.write_all(&buf).await.is_err() {
            break;
        }
        next += tick;
        tokio::time::sleep_until(next).await;
        if echo.is_finished() {
            break;
        }
    }
    Ok(())
}

/// What one client connection saw.
#[derive(Clone, Debug, Default)]
pub(crate) struct StreamReport {
    pub(crate) id: u32,
    pub(crate) connected: bool,
    pub(crate) attempts: u32,
    pub(crate) bytes_verified: u64,
    pub(crate) error: Option<String>,
    pub(crate) max_stall: Duration,
    pub(crate) server: Option<u8>,
}

/// Shared progress counter (all connections' verified bytes), for the orchestrator to watch.
pub(crate) type Progress = Arc<AtomicU64>;

/// How a stream is run.
#[derive(Clone)]
pub(crate) struct StreamParams {
    pub(crate) vip: SocketAddr,
    /// Extra connect attempts after the first (each after `retry_delay`).
    pub(crate) retries: u32,
    pub(crate) retry_delay: Duration,
    pub(crate) connect_timeout: Duration,
    /// Stalls are measured from this instant on, once it is set (the first failure).
    pub(crate) measure_from: Arc<std::sync::OnceLock<Instant>>,
    /// Becomes true when the streams should end.
    pub(crate) stop: tokio::sync::watch::Receiver<bool>,
    /// All streams' verified bytes.
    pub(crate) progress: Progress,
    /// Streams that have verified their first bytes.
    pub(crate) flowing: Arc<std::sync::atomic::AtomicUsize>,
}

/// Opens stream `id` and verifies it until `p.stop` turns true.
pub(crate) async fn run_stream(id: u32, seed: u64, p: StreamParams) -> StreamReport {
    let StreamParams {
        vip,
        retries,
        retry_delay,
        connect_timeout,
        measure_from,
        mut stop,
        progress,
        flowing,
    } = p;
    let mut rep = StreamReport { id, ..StreamReport::default() };
    let mut sock = None;
    for attempt in 0..=retries {
        if attempt > 0 {
            tokio::time::sleep(retry_delay).await;
        }
        rep.attempts += 1;
        match tokio::time::timeout(connect_timeout, TcpStream::connect(vip)).await {
            Ok(Ok(s)) => {
                sock = Some(s);
                break;
            }
            Ok(Err(e)) => rep.error = Some(format!("connect: {e}")),
            Err(_) => rep.error = Some("connect: timed out".into()),
        }
    }
    let Some(mut sock) = sock else { return rep };
    rep.connected = true;
    rep.error = None;
    let _ = sock.set_nodelay(true);
    let mut hello = [0u8; 16];
    hello[..4].copy_from_slice(MAGIC);
    hello[4..8].copy_from_slice(&id.to_be_bytes());
    hello[8..].copy_from_slice(&seed.to_be_bytes());
    if let Err(e) = sock.write_all(&hello).await {
        rep.error = Some(format!("hello: {e}"));
        return rep;
    }
    let mut id_byte = [0u8; 1];
    match tokio::time::timeout(Duration::from_secs(5), sock.read_exact(&mut id_byte)).await {
        Ok(Ok(_)) => rep.server = Some(id_byte[0]),
        Ok(Err(e)) => {
            rep.error = Some(format!("server id: {e}"));
            return rep;
        }
        Err(_) => {
            rep.error = Some("server id: timed out".into());
            return rep;
        }
    }
    let mut ks = Keystream::new(seed);
    let mut buf = vec![0u8; 16 * 1024];
    let mut want = vec![0u8; 16 * 1024];
    let mut last = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_millis(100));
    let (mut rd, mut wr) = sock.into_split();
    loop {
        if *stop.borrow() {
            break;
        }
        tokio::select! {
            r = rd.read(&mut buf) => match r {
                Ok(0) => { rep.error = Some("closed by peer".into()); break; }
                Ok(n) => {
                    ks.fill(&mut want[..n]);
                    if buf[..n] != want[..n] {
                        let off = buf[..n].iter().zip(&want[..n]).position(|(a, b)| a != b).unwrap_or(0);
                        rep.error = Some(format!("corrupt byte at offset {}", rep.bytes_verified + off as u64));
                        break;
                    }
                    let t = Instant::now();
                    if let Some(&from) = measure_from.get() {
                        rep.max_stall = rep.max_stall.max(t.saturating_duration_since(last.max(from)));
                    }
                    last = t;
                    if rep.bytes_verified == 0 {
                        flowing.fetch_add(1, Ordering::Relaxed);
                    }
                    rep.bytes_verified += n as u64;
                    progress.fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(e) => { rep.error = Some(format!("read: {e}")); break; }
            },
            _ = ticker.tick() => {
                if let Err(e) = wr.write_all(&[1]).await {
                    rep.error = Some(format!("tick: {e}"));
                    break;
                }
            }
            _ = stop.changed() => {}
        }
    }
    if rep.error.is_none()
        && let Some(&from) = measure_from.get()
    {
        let t = Instant::now();
        rep.max_stall = rep.max_stall.max(t.saturating_duration_since(last.max(from)));
    }
    rep
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keystream_is_deterministic_and_chunking_invariant() {
        let mut a = Keystream::new(42);
        let mut whole = [0u8; 100];
        a.fill(&mut whole);
        let mut b = Keystream::new(42);
        let mut parts = [0u8; 100];
        let (x, y) = parts.split_at_mut(37);
        b.fill(x);
        b.fill(y);
        assert_eq!(whole, parts);
        let mut c = Keystream::new(43);
        let mut other = [0u8; 100];
        c.fill(&mut other);
        assert_ne!(whole, other);
    }
}
