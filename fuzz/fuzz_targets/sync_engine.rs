//! slb-sync: arbitrary sequences of local events, deliveries (lost, duplicated, reordered,
//! corrupted), raw datagrams and time steps on three engines; checks bounds and timers.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    slb_sync::fuzzing::engine_case(data);
});
