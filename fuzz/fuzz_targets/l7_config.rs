//! slb-l7: untrusted TOML -> configuration parser, validation with field/line errors, proxy build.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    slb_l7::fuzzing::config_case(data);
});
