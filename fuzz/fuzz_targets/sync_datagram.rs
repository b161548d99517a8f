//! slb-sync: untrusted datagram bytes -> views, decoder, engine (raw and with a valid tag).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    slb_sync::fuzzing::datagram_case(data);
});
