//! Replays the committed corpus of the `l4_frame` fuzz target (../fuzz/corpus/l4_frame) through
//! the same function the fuzzer calls, so that `cargo test` catches regressions without it.

#[test]
fn l4_frame_corpus_replays_without_panics() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/corpus/l4_frame");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).expect("corpus directory") {
        let path = entry.unwrap().path();
        slb_l4::craft::replay(&std::fs::read(&path).unwrap());
        n += 1;
    }
    assert!(n >= 10, "the seed corpus is there ({n} files)");
}
