//! slb-l7: untrusted request-head bytes -> parser, upstream rewrite (re-parsed), chunked decoder,
//! response-head parser and rewrite.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    slb_l7::fuzzing::request_head_case(data);
});
