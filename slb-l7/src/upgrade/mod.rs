//! Zero-downtime binary upgrade: a running proxy hands its listening sockets to a new process
//! over a unix socket (SCM_RIGHTS, as HAProxy's `-x` and pingora's `--upgrade` do); the new
//! process serves on them at once, the old one stops accepting and drains.
//!
//! ```text
//!  old process (UpgradeServer on PATH)            new process (take_over(PATH))
//!      <- "SLB-UPGRADE 1"
//!      -> manifest (key, "socket ROLE ADDR" lines) + the descriptors (SCM_RIGHTS)
//!                                                  builds the proxy on them, starts serving
//!      <- "READY"
//!  stops accepting, closes its upgrade listener
//!      -> "BYE"                                    binds PATH itself (for the next upgrade)
//!  drains (server.drain_timeout), exits
//! ```
//!
//! The listening sockets never close: connections waiting in their accept queues are accepted
//! by whichever process accepts next, so no client is refused. If the new process fails before
//! READY, the old one never stopped accepting. The sticky-cookie key travels along, so cookies
//! issued by the old process stay valid.

mod sys;

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::net::UnixListener;

use crate::sticky::StickyKey;

const HELLO: &[u8] = b"SLB-UPGRADE 1\n";
const MANIFEST: &str = "SLB-SOCKETS 1";
/// Longest wait for the other side at each step of the exchange.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// A proxy's listening sockets by role (`listener:NAME`, `status`, `admin`), as duplicates that
/// can be handed to another process.
#[derive(Debug, Default)]
pub struct ListeningSockets(Vec<(String, std::net::TcpListener)>);

impl ListeningSockets {
    pub(crate) fn push(&mut self, role: &str, l: &std::net::TcpListener) -> io::Result<()> {
        self.0.push((role.to_owned(), l.try_clone()?));
        Ok(())
    }

    /// Roles and bound addresses.
    pub fn list(&self) -> Vec<(String, SocketAddr)> {
        self.0.iter().filter_map(|(r, l)| Some((r.clone(), l.local_addr().ok()?))).collect()
    }

    /// Number of sockets.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Sockets and key received from the previous process.
#[derive(Debug)]
pub struct Inherited {
    key: StickyKey,
    sockets: HashMap<String, Vec<std::net::TcpListener>>,
}

impl Inherited {
    /// The previous process's sticky-cookie key.
    pub fn key(&self) -> &StickyKey {
        &self.key
    }

    /// Roles and addresses received.
    pub fn roles(&self) -> Vec<(String, usize)> {
        self.sockets.iter().map(|(r, v)| (r.clone(), v.len())).collect()
    }

    pub(crate) fn into_sockets(self) -> HashMap<String, Vec<std::net::TcpListener>> {
        self.sockets
    }
}

/// The new process's end of the exchange, until it serves.
#[derive(Debug)]
pub struct Handoff {
    stream: BufReader<UnixStream>,
}

impl Handoff {
    /// Tells the old process that this one serves, and waits until it stopped accepting.
    pub fn ready(mut self) -> io::Result<()> {
        self.stream.get_mut().write_all(b"READY\n")?;
        let mut line = String::new();
        self.stream.read_line(&mut line)?;
        if line.trim_end() != "BYE" {
            return Err(bad("the old process did not confirm (expected BYE)"));
        }
        Ok(())
    }
}

fn bad(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_owned())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Connects to a running proxy's upgrade socket at `path` and receives its listening sockets.
/// Call [`Handoff::ready`] once the new proxy serves on them.
pub fn take_over(path: &Path) -> io::Result<(Inherited, Handoff)> {
    let stream = UnixStream::connect(path)
        .map_err(|e| io::Error::new(e.kind(), format!("upgrade socket {}: {e}", path.display())))?;
    stream.set_read_timeout(Some(STEP_TIMEOUT))?;
    stream.set_write_timeout(Some(STEP_TIMEOUT))?;
    (&stream).write_all(HELLO)?;
    let mut first = vec![0u8; 64 * 1024];
    let (n, fds) = sys::recv_with_fds(&stream, &mut first)?;
    if n == 0 {
        return Err(bad("the old process closed the upgrade socket"));
    }
    let mut text = first[..n].to_vec();
    let mut reader = BufReader::new(stream);
    while !text.ends_with(b"end\n") {
        let mut more = [0u8; 4096];
        let k = reader.get_mut().read(&mut more)?;
        if k == 0 || text.len() > 1 << 20 {
            return Err(bad("truncated socket manifest"));
        }
        text.extend_from_slice(&more[..k]);
    }
    let text = String::from_utf8(text).map_err(|_| bad("manifest is not UTF-8"))?;
    let mut lines = text.lines();
    if lines.next() != Some(MANIFEST) {
        return Err(bad("not an slb upgrade manifest"));
    }
    let key = lines
        .next()
        .and_then(|l| l.strip_prefix("key "))
        .and_then(unhex32)
        .map(StickyKey::from_bytes)
        .ok_or_else(|| bad("manifest without a key"))?;
    let mut fds = fds.into_iter();
    let mut sockets: HashMap<String, Vec<std::net::TcpListener>> = HashMap::new();
    for line in lines {
        if line == "end" {
            break;
        }
        let mut parts = line.split(' ');
        let (Some("socket"), Some(role), Some(_addr)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("bad manifest line"));
        };
        let fd = fds.next().ok_or_else(|| bad("fewer descriptors than sockets"))?;
        let l = std::net::TcpListener::from(fd);
        l.set_nonblocking(true)?;
        sockets.entry(role.to_owned()).or_default().push(l);
    }
    Ok((Inherited { key, sockets }, Handoff { stream: reader }))
}

/// A running proxy's upgrade socket.
#[derive(Debug)]
pub struct UpgradeServer {
    listener: UnixListener,
    path: PathBuf,
}

/// The old process's end of a handover: the new process serves; call
/// [`Handover::finish`] once this one stopped accepting.
#[derive(Debug)]
pub struct Handover {
    stream: UnixStream,
}

impl Handover {
    /// Tells the new process that this one no longer accepts.
    pub fn finish(mut self) -> io::Result<()> {
        self.stream.write_all(b"BYE\n")
    }
}

impl UpgradeServer {
    /// Listens on `path` (on the current tokio runtime). A socket file left by a process that is
    /// gone is replaced; one that a live process answers on is an error.
    pub fn bind(path: &Path) -> io::Result<UpgradeServer> {
        if path.exists() {
            if UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("{}: another process serves upgrades here", path.display()),
                ));
            }
            std::fs::remove_file(path)?;
        }
        Ok(UpgradeServer { listener: UnixListener::bind(path)?, path: path.to_owned() })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits for a new process, hands it `sockets` and `key`, and returns once it serves on
    /// them. An error means that this attempt failed (this process keeps serving); call again
    /// to wait for the next one.
    pub async fn hand_over(
        &self,
        sockets: &ListeningSockets,
        key: &StickyKey,
    ) -> io::Result<Handover> {
        let (stream, _) = self.listener.accept().await?;
        let stream = stream.into_std()?;
        let sockets: Vec<(String, SocketAddr, std::net::TcpListener)> = sockets
            .0
            .iter()
            .map(|(r, l)| Ok((r.clone(), l.local_addr()?, l.try_clone()?)))
            .collect::<io::Result<_>>()?;
        let key = key.clone();
        tokio::task::spawn_blocking(move || exchange(stream, &sockets, &key))
            .await
            .map_err(|e| io::Error::other(e.to_string()))?
    }
}

/// The old side of the exchange (blocking, each step bounded by [`STEP_TIMEOUT`]).
fn exchange(
    stream: UnixStream,
    sockets: &[(String, SocketAddr, std::net::TcpListener)],
    key: &StickyKey,
) -> io::Result<Handover> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(STEP_TIMEOUT))?;
    stream.set_write_timeout(Some(STEP_TIMEOUT))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut hello = String::new();
    reader.read_line(&mut hello)?;
    if hello.as_bytes() != HELLO {
        return Err(bad("not an slb upgrade request"));
    }
    let mut manifest = format!("{MANIFEST}\nkey {}\n", hex(key.bytes()));
    for (role, addr, _) in sockets {
        manifest.push_str(&format!("socket {role} {addr}\n"));
    }
    manifest.push_str("end\n");
    let fds: Vec<_> = sockets.iter().map(|(_, _, l)| l.as_fd()).collect();
    let sent = sys::send_with_fds(&stream, manifest.as_bytes(), &fds)?;
    (&stream).write_all(&manifest.as_bytes()[sent..])?;
    let mut ready = String::new();
    // The new process builds its proxy before it answers: allow it the step timeout.
    reader.read_line(&mut ready)?;
    if ready.trim_end() != "READY" {
        return Err(bad("the new process did not report READY"));
    }
    tracing::info!(sockets = sockets.len(), "listening sockets handed to the new process");
    Ok(Handover { stream })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_travel_as_hex() {
        let k = [0xa5u8; 32];
        assert_eq!(unhex32(&hex(&k)), Some(k));
        assert_eq!(unhex32("zz"), None);
    }
}
