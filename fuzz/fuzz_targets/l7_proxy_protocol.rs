//! slb-l7: untrusted bytes at the start of a connection -> PROXY protocol v1/v2 parser (whole and
//! prefixes), accepted addresses round-tripped through both writers.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    slb_l7::fuzzing::proxy_protocol_case(data);
});
