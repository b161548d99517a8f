//! Ketama consistent hashing, compatible with nginx's `hash $key consistent`.

use std::net::SocketAddr;

use super::{PickContext, PickError, Picked, Scheduler, picked};
use crate::backend::BackendSet;
use crate::flow::HashKey;

/// Points per weight unit, as in nginx and libketama.
const POINTS_PER_WEIGHT: u64 = 160;

/// A sorted ring of 32-bit points, each owned by a backend (set index), with a prefix index
/// that turns the "first point >= h" search into a short search within one bucket.
#[derive(Debug, Default)]
pub(crate) struct Ring {
    /// (point hash, owner set index), ascending by hash: one cache line holds both.
    points: Vec<(u32, u32)>,
    /// `index[p]` = number of points whose top `bits` bits are `< p`.
    index: Vec<u32>,
    shift: u32,
}

impl Ring {
    /// Most points on a ring; larger configurations have their weights scaled down.
    pub(crate) const MAX_POINTS: u64 = 1 << 20;

    /// The ring of `set`'s usable backends, `160 * weight` points each (see [`Ketama`]).
    pub(crate) fn new(set: &BackendSet) -> Self {
        let usable = set.usable();
        let mut weights: Vec<u64> =
            usable.iter().map(|&i| u64::from(set.backends()[i as usize].weight)).collect();
        let total: u64 = weights.iter().sum();
        if total.saturating_mul(POINTS_PER_WEIGHT) > Self::MAX_POINTS {
            let budget = u128::from(Self::MAX_POINTS / POINTS_PER_WEIGHT);
            for w in &mut weights {
                *w = ((u128::from(*w) * budget / u128::from(total)) as u64).max(1);
            }
        }
        // Rank backends by address: points sort as `hash << 32 | rank`, so that of equal hashes
        // the lowest address comes first. nginx sorts by hash only and keeps the first of equal
        // hashes in an order qsort leaves unspecified; this makes every node keep the same one.
        let mut by_addr: Vec<(SocketAddr, u32, u64)> = usable
            .iter()
            .zip(&weights)
            .map(|(&i, &w)| (set.backends()[i as usize].addr, i, w))
            .collect();
        by_addr.sort_unstable();
        let n_points: u64 = weights.iter().sum::<u64>() * POINTS_PER_WEIGHT;
        let mut points: Vec<u64> = Vec::with_capacity(n_points as usize);
        for (rank, &(addr, _, w)) in by_addr.iter().enumerate() {
            nginx_points(&addr, w * POINTS_PER_WEIGHT, |h| {
                points.push(u64::from(h) << 32 | rank as u64)
            });
        }
        // Sort: one counting pass on the top bits of the hash (which also yields the prefix
        // index), then a small sort per bucket.
        let n_est = points.len();
        // About 8 points per index bucket, at most 2^16 buckets.
        let bits = (usize::BITS - (n_est / 8).leading_zeros()).min(16);
        let shift = 32 - bits;
        let bucket = |p: u64| ((p >> 32) >> shift) as usize;
        let mut start = vec![0u32; (1usize << bits) + 1];
        for &p in &points {
            start[bucket(p) + 1] += 1;
        }
        for b in 1..start.len() {
            start[b] += start[b - 1];
        }
        let mut sorted = vec![0u64; points.len()];
        let mut fill = start.clone();
        for &p in &points {
            let b = bucket(p);
            sorted[fill[b] as usize] = p;
            fill[b] += 1;
        }
        drop(points);
        for b in 0..start.len() - 1 {
            sorted[start[b] as usize..start[b + 1] as usize].sort_unstable();
        }
        // Drop points whose hash repeats (keeping the lowest address), fixing the index up.
        let mut index = vec![0u32; start.len()];
        let mut kept = 0usize;
        for b in 0..start.len() - 1 {
            index[b] = kept as u32;
            let mut last: Option<u64> = None;
            for k in start[b] as usize..start[b + 1] as usize {
                let p = sorted[k];
                if last != Some(p >> 32) {
                    sorted[kept] = p;
                    kept += 1;
                    last = Some(p >> 32);
                }
            }
        }
        *index.last_mut().unwrap_or(&mut 0) = kept as u32;
        sorted.truncate(kept);
        let points =
            sorted.iter().map(|&p| ((p >> 32) as u32, by_addr[p as u32 as usize].1)).collect();
        Ring { points, index, shift }
    }

    /// Number of points.
    pub(crate) fn len(&self) -> usize {
        self.points.len()
    }

    /// Position of the first point `>= h`, wrapping to 0 past the last point.
    #[inline]
    pub(crate) fn find(&self, h: u32) -> usize {
        let p = ((h as u64) >> self.shift) as usize;
        let (lo, hi) = (self.index[p] as usize, self.index[p + 1] as usize);
        let pos = lo + self.points[lo..hi].partition_point(|&(x, _)| x < h);
        if pos == self.points.len() { 0 } else { pos }
    }

    /// The backend (set index) owning the point at `pos`.
    #[inline(always)]
    pub(crate) fn owner(&self, pos: usize) -> u32 {
        self.points[pos].1
    }

    /// The point hashes, ascending.
    #[cfg(test)]
    pub(crate) fn hashes(&self) -> Vec<u32> {
        self.points.iter().map(|p| p.0).collect()
    }
}

/// nginx's points for one server: `base = crc32(host, "\0", port)`, then each point is the CRC
/// of `base`'s state continued with the previous point's four little-endian bytes (0 for the
/// first point). `host` and `port` are the server's `host:port` text split at the last colon
/// (an IPv6 host keeps its brackets, as nginx keeps them from the configuration).
fn nginx_points(addr: &SocketAddr, n: u64, mut emit: impl FnMut(u32)) {
    let name = addr.to_string();
    let (host, port) = name.rsplit_once(':').unwrap_or((name.as_str(), ""));
    let mut base = crc32fast::Hasher::new();
    base.update(host.as_bytes());
    base.update(&[0]);
    base.update(port.as_bytes());
    // The CRC register after `base` (CRC-32 inverts on the way in and out).
    let base = !base.finalize();
    let mut prev = 0u32;
    for _ in 0..n {
        prev = !crc32_continue4(base, prev.to_le_bytes());
        emit(prev);
    }
}

/// Reflected CRC-32 (IEEE 802.3) byte table.
const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 == 1 { 0xedb8_8320 ^ (c >> 1) } else { c >> 1 };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// Feeds four bytes to a CRC-32 register. The ring's hot loop (160 points per weight unit) is
/// only ever four bytes long, where a table step beats a general-purpose CRC call; the base of
/// each server and key hashes go through `crc32fast`, which the tests check this against.
#[inline(always)]
fn crc32_continue4(mut reg: u32, bytes: [u8; 4]) -> u32 {
    for b in bytes {
        reg = CRC_TABLE[((reg ^ u32::from(b)) & 0xff) as usize] ^ (reg >> 8);
    }
    reg
}

/// The 32-bit hash of a request for a ring, from [`PickContext::hash`] or the flow.
#[inline]
pub(crate) fn ring_hash(ctx: &PickContext<'_>, key: &HashKey) -> Result<u32, PickError> {
    match (ctx.hash, ctx.flow) {
        (Some(h), _) => Ok(h as u32),
        (None, Some(f)) => Ok(key.hash_flow(f) as u32),
        (None, None) => Err(PickError::MissingKey),
    }
}

/// Ketama consistent hashing, point for point nginx's `hash $key consistent`
/// (`ngx_http_upstream_init_chash`).
///
/// Each usable backend gets `160 * weight` points on a 32-bit ring (see the point formula on
/// [`Ketama::points_for`]); a request goes to the owner of the first point `>= crc32(key)`,
/// wrapping around. Removing a backend moves only the keys that were on its points; everything
/// else stays put. Unusable backends have no points, which places a request exactly where nginx's
/// walk past down peers would (nginx gives up after 20 steps and falls back to round robin; here
/// the next usable owner always wins).
///
/// **Supplying the key.** The caller puts `crc32(key)` in the low 32 bits of
/// [`PickContext::hash`]; [`Ketama::key_hash`] computes it from the key bytes (for nginx
/// compatibility, the same bytes nginx's `hash` directive evaluates, e.g. the request URI). When
/// only a flow is given, its [`HashKey::hash_flow`] is used instead: consistent across a cluster,
/// but not what nginx would compute.
///
/// Backends are named by `addr`'s `host:port` text, so this matches nginx configured with
/// `server <ip>:<port>` lines. A pick is a bucket read plus a binary search over about 8 points.
/// Memory is bounded: when the weights add up to more than 2^20 points (6 553 weight units, 8 MiB
/// of ring), they are scaled down proportionally first (each backend keeping at least one unit),
/// which keeps the shares but no longer nginx's exact points. Pools of plain weight-1 backends
/// are never scaled.
#[derive(Debug)]
pub struct Ketama {
    set: BackendSet,
    key: HashKey,
    ring: Ring,
}

impl Ketama {
    /// Builds the ring of `set`'s usable backends. `key` hashes flows when no key hash is given.
    pub fn new(set: BackendSet, key: HashKey) -> Self {
        Ketama { ring: Ring::new(&set), set, key }
    }

    /// nginx's key hash: CRC-32 (IEEE) of the key bytes, for [`PickContext::hash`].
    pub fn key_hash(key: &[u8]) -> u64 {
        u64::from(crc32fast::hash(key))
    }

    /// The first `n` ring points nginx computes for a server at `addr` (in generation order).
    pub fn points_for(addr: &SocketAddr, n: usize) -> Vec<u32> {
        let mut v = Vec::with_capacity(n);
        nginx_points(addr, n as u64, |h| v.push(h));
        v
    }

    /// Number of points on the ring (after removing duplicate hashes).
    pub fn ring_len(&self) -> usize {
        self.ring.len()
    }
}

impl Scheduler for Ketama {
    fn name(&self) -> &'static str {
        "ketama"
    }

    fn backends(&self) -> &BackendSet {
        &self.set
    }

    #[inline]
    fn pick(&self, ctx: &PickContext<'_>) -> Result<Picked<'_>, PickError> {
        if self.ring.len() == 0 {
            return Err(PickError::NoBackend);
        }
        let h = ring_hash(ctx, &self.key)?;
        Ok(picked(&self.set, self.ring.owner(self.ring.find(h)) as usize))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{RuntimeRegistry, SetOptions};
    use crate::sched::tests::backends;

    #[test]
    fn points_follow_nginx_formula() {
        let addr: SocketAddr = "127.0.0.1:8081".parse().unwrap();
        let p = Ketama::points_for(&addr, 3);
        assert_eq!(p[0], crc32fast::hash(b"127.0.0.1\x008081\x00\x00\x00\x00"));
        let mut second = b"127.0.0.1\x008081".to_vec();
        second.extend_from_slice(&p[0].to_le_bytes());
        assert_eq!(p[1], crc32fast::hash(&second));
        let v6: SocketAddr = "[2001:db8::1]:80".parse().unwrap();
        assert_eq!(Ketama::points_for(&v6, 1)[0], crc32fast::hash(b"[2001:db8::1]\x0080\0\0\0\0"));
        assert_eq!(Ketama::key_hash(b"123456789"), 0xcbf4_3926, "the CRC-32 check value");
    }

    #[test]
    fn find_is_first_point_at_or_after_with_wrap() {
        let set =
            BackendSet::new(backends(&[1, 2, 1]), &RuntimeRegistry::new(), SetOptions::default())
                .unwrap();
        let ring = Ring::new(&set);
        assert_eq!(ring.len(), 640);
        let hs = ring.hashes();
        assert!(hs.windows(2).all(|w| w[0] < w[1]));
        for probe in
            [0u32, 1, hs[0], hs[0] + 1, hs[100], hs[639], hs[639].wrapping_add(1), u32::MAX]
        {
            let want = hs.iter().position(|&x| x >= probe).unwrap_or(0);
            assert_eq!(ring.find(probe), want, "probe {probe:#x}");
        }
    }
}
