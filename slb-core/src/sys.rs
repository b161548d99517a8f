//! The crate's only `unsafe` code: the prefetch hint of the session table's burst lookups.
//!
//! A burst ([`SessionTable::prepare`](crate::session::SessionTable::prepare)) asks for the cache
//! lines of many lookups before it reads any of them. A prefetch instruction retires at once,
//! so a round of them never fills the CPU's reorder window the way the same number of missing
//! loads does, and the work after it starts sooner. On targets without one (anything but
//! x86_64 here) the burst reads the memory instead ([`PREFETCH`] is false).
#![allow(unsafe_code)]

/// Whether [`prefetch`] issues an instruction on this target (otherwise it does nothing).
pub(crate) const PREFETCH: bool = cfg!(target_arch = "x86_64");

/// Starts fetching the cache line holding `p` into every cache level, without waiting for it.
/// Any pointer is allowed: nothing is read or written, so the result never depends on it.
#[inline(always)]
pub(crate) fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 is a hint: it never faults, whatever the address (dangling, unmapped
    // or null), reads nothing into a register and writes nothing; `_mm_prefetch` needs SSE,
    // which every x86_64 CPU has.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}
