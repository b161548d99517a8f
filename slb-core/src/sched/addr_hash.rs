//! Source hashing and destination hashing (IPVS `sh` and `dh`).

use std::net::IpAddr;

use super::{PickContext, PickError, Picked, Scheduler, picked};
use crate::backend::BackendSet;
use crate::flow::{FlowKey, HashKey};

/// A weighted bucket table: each usable backend owns a share of the buckets proportional to its
/// weight (largest-remainder apportionment, so within one bucket of exact).
///
/// Backends are laid out in address order, not configuration order, so that nodes configured in
/// a different order build the same table. The table has `2^k >= 128 n` buckets (at least 256,
/// at most 2^20): enough that every backend's share is within about 1% of its weight's, where
/// IPVS's fixed 256 buckets can be far off for large pools.
#[derive(Debug)]
struct BucketTable {
    buckets: Vec<u32>,
    shift: u32,
}

impl BucketTable {
    const MIN_BITS: u32 = 8;
    const MAX_BITS: u32 = 20;

    fn new(set: &BackendSet) -> Self {
        let mut members: Vec<(u32, u64)> = set
            .usable()
            .iter()
            .map(|&i| (i, u64::from(set.backends()[i as usize].weight)))
            .collect();
        if members.is_empty() {
            return BucketTable { buckets: Vec::new(), shift: 0 };
        }
        members.sort_by_key(|&(i, _)| (set.backends()[i as usize].addr, i));
        let want = (members.len() as u64).saturating_mul(128).max(1).next_power_of_two();
        let bits = want.trailing_zeros().clamp(Self::MIN_BITS, Self::MAX_BITS);
        let size = 1u64 << bits;
        let total: u128 = members.iter().map(|&(_, w)| u128::from(w)).sum();
        // Floors first, then the leftover buckets to the largest remainders (earliest on ties).
        let mut counts: Vec<(u64, u128)> = members
            .iter()
            .map(|&(_, w)| {
                let exact = u128::from(w) * u128::from(size);
                ((exact / total) as u64, exact % total)
            })
            .collect();
        let assigned: u64 = counts.iter().map(|c| c.0).sum();
        let mut order: Vec<usize> = (0..counts.len()).collect();
        order.sort_by(|&a, &b| counts[b].1.cmp(&counts[a].1).then(a.cmp(&b)));
        for &k in order.iter().take((size - assigned) as usize) {
            counts[k].0 += 1;
        }
        let mut buckets = Vec::with_capacity(size as usize);
        for (&(i, _), &(c, _)) in members.iter().zip(&counts) {
            buckets.extend(std::iter::repeat_n(i, c as usize));
        }
        BucketTable { buckets, shift: 64 - bits }
    }

    #[inline(always)]
    fn get(&self, hash: u64) -> Option<u32> {
        self.buckets.get((hash >> self.shift) as usize).copied()
    }
}

#[derive(Debug)]
struct AddrHash {
    set: BackendSet,
    key: HashKey,
    table: BucketTable,
}

impl AddrHash {
    fn new(set: BackendSet, key: HashKey) -> Self {
        AddrHash { table: BucketTable::new(&set), set, key }
    }

    #[inline]
    fn pick(
        &self,
        ctx: &PickContext<'_>,
        addr: impl Fn(&FlowKey) -> IpAddr,
    ) -> Result<Picked<'_>, PickError> {
        if self.table.buckets.is_empty() {
            return Err(PickError::NoBackend);
        }
        let h = match (ctx.flow, ctx.hash) {
            (Some(f), _) => self.key.hash_ip(addr(f)),
            (None, Some(h)) => h,
            (None, None) => return Err(PickError::MissingKey),
        };
        let i = self.table.get(h).ok_or(PickError::NoBackend)?;
        Ok(picked(&self.set, i as usize))
    }
}

/// Source hashing (IPVS `sh`): the client address, hashed with the cluster [`HashKey`]
/// ([`HashKey::hash_ip`]), selects a bucket of a weighted bucket table. Every flow of a client
/// goes to the same backend while the backend set is unchanged, on every node that shares the
/// key. Without a flow, [`PickContext::hash`] is used as the hash (e.g. of an L7 client address
/// taken from a header). Like IPVS, no minimal-disruption promise: use Maglev for that.
#[derive(Debug)]
pub struct SourceHash(AddrHash);

impl SourceHash {
    /// A source-hash scheduler over `set`.
    pub fn new(set: BackendSet, key: HashKey) -> Self {
        SourceHash(AddrHash::new(set, key))
    }
}

impl Scheduler for SourceHash {
    fn name(&self) -> &'static str {
        "sh"
    }

    fn backends(&self) -> &BackendSet {
        &self.0.set
    }

    #[inline]
    fn pick(&self, ctx: &PickContext<'_>) -> Result<Picked<'_>, PickError> {
        self.0.pick(ctx, |f| f.src)
    }
}

/// Destination hashing (IPVS `dh`): as [`SourceHash`], keyed by the flow's destination address
/// (for caches and transparent proxies, where the destination names the content).
#[derive(Debug)]
pub struct DestinationHash(AddrHash);

impl DestinationHash {
    /// A destination-hash scheduler over `set`.
    pub fn new(set: BackendSet, key: HashKey) -> Self {
        DestinationHash(AddrHash::new(set, key))
    }
}

impl Scheduler for DestinationHash {
    fn name(&self) -> &'static str {
        "dh"
    }

    fn backends(&self) -> &BackendSet {
        &self.0.set
    }

    #[inline]
    fn pick(&self, ctx: &PickContext<'_>) -> Result<Picked<'_>, PickError> {
        self.0.pick(ctx, |f| f.dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{RuntimeRegistry, SetOptions};
    use crate::sched::tests::backends;

    #[test]
    fn buckets_follow_weights_and_address_order() {
        let set = BackendSet::new(
            backends(&[3, 1, 0, 4]),
            &RuntimeRegistry::new(),
            SetOptions::default(),
        )
        .unwrap();
        let t = BucketTable::new(&set);
        assert_eq!(t.buckets.len(), 512, "3 usable * 128 rounded up to a power of two");
        let count = |i| t.buckets.iter().filter(|&&b| b == i).count();
        assert_eq!((count(0), count(1), count(2), count(3)), (192, 64, 0, 256));
        let mut reversed = backends(&[3, 1, 0, 4]);
        reversed.reverse();
        let set2 =
            BackendSet::new(reversed, &RuntimeRegistry::new(), SetOptions::default()).unwrap();
        let ids = |s: &BackendSet, t: &BucketTable| -> Vec<u32> {
            t.buckets.iter().map(|&i| s.backends()[i as usize].id.0).collect()
        };
        assert_eq!(ids(&set, &t), ids(&set2, &BucketTable::new(&set2)));
    }
}
