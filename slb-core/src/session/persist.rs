//! Persistence templates: client -> backend stickiness with a timeout (IPVS `-p`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use crate::backend::BackendId;
use crate::flow::Protocol;
use crate::time::Instant;

/// What a persistence template is keyed by: the client (masked by the service's persistence
/// netmask), the virtual address and port (0 for a service that persists across all ports).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PersistKey {
    /// Protocol of the virtual service.
    pub proto: Protocol,
    /// Client address, already masked.
    pub client: IpAddr,
    /// Virtual address.
    pub vip: IpAddr,
    /// Virtual port, or 0 for all ports.
    pub vport: u16,
}

#[derive(Clone, Copy, Debug)]
struct Template {
    backend: BackendId,
    expires: Instant,
}

/// Client -> backend templates, bounded in number.
///
/// A template lives for its timeout after the client's last new connection (every lookup that
/// finds it and every [`PersistTable::set`] extend it), like a HAProxy stick-table entry. Unlike
/// IPVS, live connections do not pin their template: a client idle for longer than the timeout
/// may be scheduled afresh, while its existing connections keep their sessions.
#[derive(Debug)]
pub struct PersistTable {
    map: HashMap<PersistKey, Template>,
    capacity: usize,
    refused: u64,
}

impl PersistTable {
    /// A table holding at most `capacity` templates.
    pub fn new(capacity: usize) -> Self {
        PersistTable { map: HashMap::new(), capacity, refused: 0 }
    }

    /// The backend `key` sticks to, extending the template by `timeout` from `now`.
    pub fn get(&mut self, key: &PersistKey, now: Instant, timeout: Duration) -> Option<BackendId> {
        match self.map.get_mut(key) {
            Some(t) if t.expires > now => {
                t.expires = t.expires.max(now + timeout);
                Some(t.backend)
            }
            Some(_) => {
                self.map.remove(key);
                None
            }
            None => None,
        }
    }

    /// Makes `key` stick to `backend` for `timeout` from `now`. Returns false (and counts it) when
    /// the table is full of live templates.
    pub fn set(
        &mut self,
        key: PersistKey,
        backend: BackendId,
        now: Instant,
        timeout: Duration,
    ) -> bool {
        if self.map.len() >= self.capacity && !self.map.contains_key(&key) {
            self.expire(now);
            if self.map.len() >= self.capacity {
                self.refused += 1;
                return false;
            }
        }
        self.map.insert(key, Template { backend, expires: now + timeout });
        true
    }

    /// Forgets the template of `key`.
    pub fn remove(&mut self, key: &PersistKey) -> Option<BackendId> {
        self.map.remove(key).map(|t| t.backend)
    }

    /// Forgets every template pointing at `backend` (it was removed or failed).
    pub fn remove_backend(&mut self, backend: BackendId) {
        self.map.retain(|_, t| t.backend != backend);
    }

    /// Drops expired templates; returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let before = self.map.len();
        self.map.retain(|_, t| t.expires > now);
        before - self.map.len()
    }

    /// Live and not yet collected templates.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when there are no templates.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Templates refused because the table was full.
    pub fn refused(&self) -> u64 {
        self.refused
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_expire_and_are_bounded() {
        let key = |c: u8| PersistKey {
            proto: Protocol::Tcp,
            client: IpAddr::from([10, 0, 1, c]),
            vip: IpAddr::from([10, 0, 0, 100]),
            vport: 0,
        };
        let t = Duration::from_secs(300);
        let mut p = PersistTable::new(2);
        assert!(p.set(key(1), BackendId(7), Instant::ZERO, t));
        assert_eq!(p.get(&key(1), Instant::from_secs(200), t), Some(BackendId(7)));
        // Extended by the lookup at 200 s: alive at 450 s, gone at 501 s.
        assert_eq!(p.get(&key(1), Instant::from_secs(450), t), Some(BackendId(7)));
        assert!(p.set(key(2), BackendId(8), Instant::from_secs(450), t));
        assert!(!p.set(key(3), BackendId(9), Instant::from_secs(451), t));
        assert_eq!(p.refused(), 1);
        assert_eq!(p.get(&key(1), Instant::from_secs(751), t), None);
        assert!(p.set(key(3), BackendId(9), Instant::from_secs(751), t));
        p.remove_backend(BackendId(9));
        assert_eq!(p.get(&key(3), Instant::from_secs(752), t), None);
    }
}
