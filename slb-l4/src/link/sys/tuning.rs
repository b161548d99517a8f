//! Memory and timer tuning of the forwarding thread: transparent huge pages for its tables,
//! and its timer slack.

/// Advises transparent huge pages (`madvise(MADV_HUGEPAGE)`) for the whole 4 KiB pages inside
/// each region; returns the bytes advised. Regions the kernel refuses are skipped.
pub(crate) fn advise_huge_pages(regions: &[(*const u8, usize)]) -> usize {
    const PAGE: usize = 4096;
    let mut advised = 0;
    for &(start, len) in regions {
        let first = (start as usize).next_multiple_of(PAGE);
        let end = (start as usize + len) & !(PAGE - 1);
        if end <= first {
            continue;
        }
        // SAFETY: MADV_HUGEPAGE changes only the kernel's paging policy for the range, never the
        // contents or validity of memory, whatever the range (an unmapped one fails with
        // ENOMEM), so no Rust reference or allocation is affected.
        let rc =
            unsafe { libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_HUGEPAGE) };
        if rc == 0 {
            advised += end - first;
        }
    }
    advised
}

/// Sets the calling thread's timer slack (how late the kernel may wake a sleep, 50 µs by
/// default). Best effort.
pub(crate) fn set_timer_slack(d: std::time::Duration) {
    let ns = d.as_nanos().clamp(1, libc::c_ulong::MAX as u128) as libc::c_ulong;
    // SAFETY: prctl(PR_SET_TIMERSLACK) takes a plain integer and touches no user memory.
    unsafe {
        libc::prctl(
            libc::PR_SET_TIMERSLACK,
            ns,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
}

#[cfg(test)]
mod tests {
    use super::advise_huge_pages;

    #[test]
    fn huge_page_advice_rounds_to_whole_pages() {
        assert_eq!(advise_huge_pages(&[(std::ptr::null(), 0)]), 0);
        let v = vec![0u8; 8 << 20];
        assert_eq!(advise_huge_pages(&[(v.as_ptr().wrapping_add(1), 4096)]), 0, "no whole page");
        let n = advise_huge_pages(&[(v.as_ptr(), v.len())]);
        assert_eq!(n % 4096, 0);
        assert!(n <= v.len() && n + 4096 >= v.len() || n == 0, "{n}");
        if std::path::Path::new("/sys/kernel/mm/transparent_hugepage/enabled").exists() {
            assert!(n > 0, "THP is configured, yet the advice was refused");
        }
    }
}
