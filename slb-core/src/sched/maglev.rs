//! Maglev consistent hashing (Google's Maglev paper; IPVS `mh`; Envoy's weighted variant).

use super::{PickContext, PickError, Picked, Scheduler, picked};
use crate::backend::BackendSet;
use crate::flow::HashKey;

/// Maglev: a lookup table of prime size `M` filled from per-backend permutations.
///
/// Each usable backend gets `offset = h1(addr) mod M` and `skip = h2(addr) mod (M-1) + 1`; backends
/// take turns claiming their next free slot in `offset + j * skip`, a backend of weight `w` taking
/// a turn in `w / max_weight` of the rounds (Envoy's weighted build). A flow's backend is
/// `table[hash mod M]`. With `M > 100 N` every backend gets within about 1% of its share, and a
/// backend change remaps few keys. Backends are ordered by address before the build and hashed by
/// address with the cluster [`HashKey`], so independently built tables on different nodes agree.
///
/// Build is O(M log M) on average; a pick is one table read.
#[derive(Debug)]
pub struct Maglev {
    set: BackendSet,
    key: HashKey,
    table: Vec<u32>,
}

impl Maglev {
    /// The default table size (prime), as in Envoy and Katran.
    pub const DEFAULT_TABLE_SIZE: u32 = 65537;

    /// Builds the table. A `table_size` that is not prime is raised to the next prime (a
    /// non-prime size breaks the permutations); sizes below 2 become 2.
    pub fn new(set: BackendSet, table_size: u32, key: HashKey) -> Self {
        let m = next_prime(table_size.max(2));
        let mut entries: Vec<Entry> = set
            .usable()
            .iter()
            .map(|&i| {
                let b = &set.backends()[i as usize];
                let name = b.addr.to_string();
                let h1 = key.hash_bytes(name.as_bytes());
                let h2 = key.hash_bytes(&[name.as_bytes(), b"#maglev-skip"].concat());
                Entry {
                    index: i,
                    addr: b.addr,
                    weight: u64::from(b.weight),
                    skip: h2 % u64::from(m - 1) + 1,
                    pos: h1 % u64::from(m),
                    target: 0,
                }
            })
            .collect();
        entries.sort_by(|a, b| a.addr.cmp(&b.addr).then(a.index.cmp(&b.index)));
        let table = build_table(&mut entries, m);
        Maglev { set, key, table }
    }

    /// The table size in use.
    pub fn table_size(&self) -> usize {
        self.table.len()
    }

    /// The lookup table (set indices), for tests and diagnostics; empty without usable backends.
    pub fn table(&self) -> &[u32] {
        &self.table
    }
}

struct Entry {
    index: u32,
    addr: std::net::SocketAddr,
    weight: u64,
    skip: u64,
    /// `(offset + skip * j) mod M` for the next permutation index `j`, kept incrementally so
    /// that the build needs no division.
    pos: u64,
    target: u64,
}

impl Entry {
    /// The next slot of this backend's permutation.
    #[inline(always)]
    fn advance(&mut self, m: u64) -> usize {
        let c = self.pos as usize;
        self.pos += self.skip;
        if self.pos >= m {
            self.pos -= m;
        }
        c
    }
}

fn build_table(entries: &mut [Entry], m: u32) -> Vec<u32> {
    if entries.is_empty() {
        return Vec::new();
    }
    let m64 = u64::from(m);
    let max_w = entries.iter().map(|e| e.weight).max().unwrap_or(1).max(1);
    let mut table = vec![u32::MAX; m as usize];
    // Which slots are taken, one bit each: the probe loop reads this (8 KiB at M = 65537, in L1)
    // instead of the table itself.
    let mut taken = vec![0u64; (m as usize).div_ceil(64)];
    let is_taken = |taken: &[u64], c: usize| taken[c >> 6] & (1 << (c & 63)) != 0;
    let mut filled = 0u32;
    let mut iteration: u64 = 1;
    while filled < m {
        for e in entries.iter_mut() {
            if filled == m {
                break;
            }
            if iteration * e.weight < e.target {
                continue;
            }
            e.target += max_w;
            let mut c = e.advance(m64);
            while is_taken(&taken, c) {
                c = e.advance(m64);
            }
            taken[c >> 6] |= 1 << (c & 63);
            table[c] = e.index;
            filled += 1;
        }
        iteration += 1;
    }
    table
}

/// The smallest prime `>= n`.
pub(crate) fn next_prime(n: u32) -> u32 {
    let is_prime = |n: u32| {
        if n < 2 {
            return false;
        }
        let mut d = 2u32;
        while u64::from(d) * u64::from(d) <= u64::from(n) {
            if n % d == 0 {
                return false;
            }
            d += 1;
        }
        true
    };
    (n..=u32::MAX).find(|&k| is_prime(k)).unwrap_or(4_294_967_291)
}

impl Scheduler for Maglev {
    fn name(&self) -> &'static str {
        "mh"
    }

    fn backends(&self) -> &BackendSet {
        &self.set
    }

    fn pick(&self, ctx: &PickContext<'_>) -> Result<Picked<'_>, PickError> {
        if self.table.is_empty() {
            return Err(PickError::NoBackend);
        }
        let h = match (ctx.hash, ctx.flow) {
            (Some(h), _) => h,
            (None, Some(f)) => self.key.hash_flow(f),
            (None, None) => return Err(PickError::MissingKey),
        };
        let i = self.table[(h % self.table.len() as u64) as usize];
        Ok(picked(&self.set, i as usize))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{RuntimeRegistry, SetOptions};
    use crate::sched::tests::backends;

    /// The build written as the formula: slot `(offset + j * skip) mod M` for the j-th probe.
    fn reference(set: &BackendSet, m: u32, key: HashKey) -> Vec<u32> {
        let mut e: Vec<(std::net::SocketAddr, u32, u64, u64, u64, u64, u64)> = set
            .usable()
            .iter()
            .map(|&i| {
                let b = &set.backends()[i as usize];
                let name = b.addr.to_string();
                let h1 = key.hash_bytes(name.as_bytes());
                let h2 = key.hash_bytes(&[name.as_bytes(), b"#maglev-skip"].concat());
                let (offset, skip) = (h1 % u64::from(m), h2 % u64::from(m - 1) + 1);
                (b.addr, i, u64::from(b.weight), offset, skip, 0, 0)
            })
            .collect();
        e.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
        let max_w = e.iter().map(|x| x.2).max().unwrap_or(1);
        let mut table = vec![u32::MAX; m as usize];
        let (mut filled, mut iteration) = (0u32, 1u64);
        while filled < m {
            for x in e.iter_mut() {
                if filled == m {
                    break;
                }
                if iteration * x.2 < x.6 {
                    continue;
                }
                x.6 += max_w;
                let mut c = ((x.3 + x.4 * x.5) % u64::from(m)) as usize;
                while table[c] != u32::MAX {
                    x.5 += 1;
                    c = ((x.3 + x.4 * x.5) % u64::from(m)) as usize;
                }
                table[c] = x.1;
                x.5 += 1;
                filled += 1;
            }
            iteration += 1;
        }
        table
    }

    #[test]
    fn incremental_build_equals_the_formula() {
        for (weights, m) in
            [(&[1u32, 1, 1][..], 1009u32), (&[3, 1, 0, 2, 5, 1, 1], 4099), (&[1; 40], 65537)]
        {
            let set =
                BackendSet::new(backends(weights), &RuntimeRegistry::new(), SetOptions::default())
                    .unwrap();
            let key = HashKey::new(3, 4);
            assert_eq!(
                Maglev::new(set.clone(), m, key).table(),
                reference(&set, m, key).as_slice()
            );
        }
    }
}
