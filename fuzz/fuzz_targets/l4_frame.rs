//! Arbitrary frames into the L4 forwarding step (`slb_l4::craft::replay` documents the input
//! format): it must never panic and never emit a frame on a port that does not exist. The
//! committed corpus is replayed by `cargo test -p slb-l4 --test fuzz_corpus`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| slb_l4::craft::replay(data));
