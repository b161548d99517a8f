//! [`PnetLink`]: pnet's AF_PACKET datalink channel (feature `io`), with the traps of
//! LAB-NOTES.md handled: the socket is opened here with `PACKET_IGNORE_OUTGOING` and handed to
//! pnet (`Config::socket_fd`), so the link never receives its own transmissions; the read
//! timeout is zero (the driver waits on [`Link::poll_fd`], so the loop can always shut down);
//! the read buffer holds 64 KB frames, and frames larger than a [`FrameBuf`] are counted as
//! oversize instead of being forwarded truncated. pnet tells nothing about checksum offloads,
//! so frames are marked [`CsumState::Unknown`](crate::frame::CsumState) and the forwarder
//! detects partial sums itself.

use std::io;
use std::os::fd::{IntoRawFd, RawFd};
use std::time::Duration;

use pnet_datalink::{Channel, Config, DataLinkReceiver, DataLinkSender};

use super::sys::{self, SocketOpts};
use super::{Link, LinkStats};
use crate::frame::{FrameBuf, FrameMeta};

/// pnet's read buffer: a whole 64 KB GSO frame fits, so oversize frames are seen whole.
const READ_BUFFER: usize = 65536 + 4096;

/// A link on pnet's `datalink::channel`: one poll + recvfrom per received frame and one poll +
/// sendto per sent frame (the per-packet baseline).
pub struct PnetLink {
    tx: Box<dyn DataLinkSender>,
    rx: Box<dyn DataLinkReceiver>,
    fd: RawFd,
    stats: LinkStats,
}

impl std::fmt::Debug for PnetLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PnetLink").field("fd", &self.fd).field("stats", &self.stats).finish()
    }
}

impl PnetLink {
    /// Opens interface `ifname`.
    pub fn open(ifname: &str, buffer: usize) -> io::Result<Self> {
        let iface = pnet_datalink::interfaces().into_iter().find(|i| i.name == ifname).ok_or_else(
            || io::Error::new(io::ErrorKind::NotFound, format!("no interface {ifname}")),
        )?;
        let idx = sys::if_index(ifname)?;
        let fd = sys::packet_socket(
            idx,
            SocketOpts { bind: false, auxdata: false, buffer, qdisc_bypass: false },
        )?
        .into_raw_fd();
        let cfg = Config {
            read_buffer_size: READ_BUFFER,
            write_buffer_size: READ_BUFFER,
            read_timeout: Some(Duration::ZERO),
            write_timeout: Some(Duration::from_millis(10)),
            promiscuous: false,
            socket_fd: Some(fd),
            ..Config::default()
        };
        match pnet_datalink::channel(&iface, cfg)? {
            Channel::Ethernet(tx, rx) => Ok(PnetLink { tx, rx, fd, stats: LinkStats::default() }),
            _ => Err(io::Error::other("pnet returned a non-Ethernet channel")),
        }
    }
}

impl Link for PnetLink {
    fn recv_batch(&mut self, bufs: &mut [FrameBuf]) -> io::Result<usize> {
        let mut n = 0;
        while n < bufs.len() {
            match self.rx.next() {
                Ok(frame) => {
                    if frame.len() > bufs[n].capacity() {
                        self.stats.rx_oversize += 1;
                        continue;
                    }
                    let len = frame.len();
                    bufs[n].recv_area()[..len].copy_from_slice(frame);
                    bufs[n].set_received(len, FrameMeta::default());
                    self.stats.rx_frames += 1;
                    self.stats.rx_bytes += len as u64;
                    n += 1;
                }
                Err(e)
                    if matches!(e.kind(), io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock) =>
                {
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return if n > 0 { Ok(n) } else { Err(e) },
            }
        }
        Ok(n)
    }

    fn send_batch(&mut self, frames: &[FrameBuf]) -> io::Result<usize> {
        let mut sent = 0;
        for f in frames {
            match self.tx.send_to(f.as_slice(), None) {
                Some(Ok(())) => {
                    sent += 1;
                    self.stats.tx_frames += 1;
                    self.stats.tx_bytes += f.len() as u64;
                }
                _ => self.stats.tx_dropped += 1,
            }
        }
        Ok(sent)
    }

    fn stats(&self) -> LinkStats {
        let mut s = self.stats;
        s.rx_dropped = sys::packet_drops(self.fd);
        s
    }

    fn poll_fd(&self) -> Option<RawFd> {
        Some(self.fd)
    }
}
