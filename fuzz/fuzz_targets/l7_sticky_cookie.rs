//! slb-l7: untrusted Cookie / Set-Cookie bytes -> sticky cookie value decoder (canonical
//! encoding), session time checks, Cookie field edits and Set-Cookie rewrites.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    slb_l7::fuzzing::sticky_cookie_case(data);
});
