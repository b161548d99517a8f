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
                    offset: h1 % u64::from(m),
                    skip: h2 % u64::from(m - 1) + 1,
                    next: 0,
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
    offset: u64,
    skip: u64,
    next: u64,
    target: u64,
}

fn build_table(entries: &mut [Entry], m: u32) -> Vec<u32> {
    if entries.is_empty() {
        return Vec::new();
    }
    const EMPTY: u32 = u32::MAX;
    let m64 = u64::from(m);
    let max_w = entries.iter().map(|e| e.weight).max().unwrap_or(1).max(1);
    let mut table = vec![EMPTY; m as usize];
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
            let mut c = ((e.offset + e.skip * e.next) % m64) as usize;
            while table[c] != EMPTY {
                e.next += 1;
                c = ((e.offset + e.skip * e.next) % m64) as usize;
            }
            table[c] = e.index;
            e.next += 1;
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
