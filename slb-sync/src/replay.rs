//! Replay protection: a sliding window over each sender's per-datagram sequence numbers.
//!
//! Every datagram carries its sender's epoch (which grows with each restart of the sender) and a
//! sequence number unique within that epoch. A receiver keeps, per sender, the highest epoch it
//! has accepted and a bitmap of the last [`WINDOW`] sequence numbers of that epoch. A datagram
//! is accepted once: a smaller epoch, a sequence number already seen, or one more than
//! [`WINDOW`] behind the highest is refused. The window is only updated by datagrams whose tag
//! verified, so forged datagrams cannot move it.
//!
//! Limit: a receiver that restarts knows no sender's history; until it hears a sender's current
//! epoch, an old authenticated datagram of an older epoch could be replayed to it once. The
//! entries it carries are bounded by their timeouts and lose against newer stamps.

/// Sequence numbers tracked below the highest one.
pub const WINDOW: u64 = 1024;
const WORDS: usize = (WINDOW / 64) as usize;

/// Why a datagram was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Replay {
    /// The sender's epoch is older than one already accepted.
    StaleEpoch,
    /// This sequence number was accepted before.
    Duplicate,
    /// The sequence number is too far behind the window.
    TooOld,
}

/// Outcome of an accepted datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accepted {
    /// Same epoch as before.
    Current,
    /// The first datagram from this sender, or the sender restarted with a newer epoch.
    NewEpoch,
}

/// Per-sender replay window.
#[derive(Clone, Debug, Default)]
pub struct ReplayWindow {
    epoch: Option<u32>,
    top: u64,
    bits: [u64; WORDS],
}

impl ReplayWindow {
    /// A window that has accepted nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// The epoch accepted last, if any.
    pub fn epoch(&self) -> Option<u32> {
        self.epoch
    }

    fn bit(seq: u64) -> (usize, u64) {
        let i = seq % WINDOW;
        ((i / 64) as usize, 1u64 << (i % 64))
    }

    /// Checks (epoch, seq) and records it if accepted. Call only for authenticated datagrams.
    pub fn accept(&mut self, epoch: u32, seq: u64) -> Result<Accepted, Replay> {
        let fresh = match self.epoch {
            Some(e) if epoch < e => return Err(Replay::StaleEpoch),
            Some(e) => epoch > e,
            None => true,
        };
        if fresh {
            self.epoch = Some(epoch);
            self.top = seq;
            self.bits = [0; WORDS];
            let (w, m) = Self::bit(seq);
            self.bits[w] |= m;
            return Ok(Accepted::NewEpoch);
        }
        if seq > self.top {
            if seq - self.top >= WINDOW {
                self.bits = [0; WORDS];
            } else {
                for s in self.top + 1..seq {
                    let (w, m) = Self::bit(s);
                    self.bits[w] &= !m;
                }
            }
            self.top = seq;
        } else if self.top - seq >= WINDOW {
            return Err(Replay::TooOld);
        } else {
            let (w, m) = Self::bit(seq);
            if self.bits[w] & m != 0 {
                return Err(Replay::Duplicate);
            }
        }
        let (w, m) = Self::bit(seq);
        self.bits[w] |= m;
        Ok(Accepted::Current)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn window_semantics() {
        let mut w = ReplayWindow::new();
        assert_eq!(w.accept(5, 10), Ok(Accepted::NewEpoch));
        assert_eq!(w.accept(5, 10), Err(Replay::Duplicate));
        assert_eq!(w.accept(5, 8), Ok(Accepted::Current), "reordered but new");
        assert_eq!(w.accept(5, 8), Err(Replay::Duplicate));
        assert_eq!(w.accept(5, 10 + WINDOW), Ok(Accepted::Current));
        assert_eq!(w.accept(5, 10), Err(Replay::TooOld));
        assert_eq!(w.accept(5, 11), Ok(Accepted::Current), "just inside the window");
        assert_eq!(w.accept(4, 99_999), Err(Replay::StaleEpoch));
        assert_eq!(w.accept(6, 1), Ok(Accepted::NewEpoch), "restart resets the window");
        assert_eq!(w.accept(6, 1), Err(Replay::Duplicate));
        assert_eq!(w.epoch(), Some(6));
    }

    proptest! {
        /// Against a set oracle: a sequence number inside the window is accepted exactly once.
        #[test]
        fn accepts_each_sequence_number_once(seqs in proptest::collection::vec(1u64..3000, 1..400)) {
            let mut w = ReplayWindow::new();
            let mut seen = std::collections::HashSet::new();
            let mut top = 0u64;
            for s in seqs {
                let r = w.accept(1, s);
                let expect_ok = !seen.contains(&s) && (top == 0 || s > top || top - s < WINDOW);
                prop_assert_eq!(r.is_ok(), expect_ok, "seq {} top {}", s, top);
                if r.is_ok() {
                    seen.insert(s);
                    top = top.max(s);
                }
            }
        }
    }
}
