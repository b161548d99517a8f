//! slb-core: arbitrary session-table programs (insert, lookup, packets, state and backend
//! changes, time, removal, expiry sweeps, filling past capacity) run on a real `SessionTable`
//! and a `HashMap` oracle side by side (`slb_core::testing`, the same interpreter as the
//! proptest model test); any divergence or panic is a finding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use slb_core::testing::SessionModel;

fuzz_target!(|data: &[u8]| {
    if let Err(d) = SessionModel::run(data) {
        panic!("session table diverged from the oracle: {d}");
    }
});
