//! Replays the committed fuzz corpora through the same harnesses the fuzz targets use, so
//! `cargo test` catches regressions without a fuzzer.

use std::path::PathBuf;

fn corpus(name: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus").join(name);
    let mut v: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    v.sort();
    v
}

#[test]
fn sync_datagram_corpus_replays_cleanly() {
    let c = corpus("sync_datagram");
    assert!(c.len() >= 5, "seed corpus missing");
    for (_, bytes) in &c {
        slb_sync::fuzzing::datagram_case(bytes);
    }
}

#[test]
fn sync_engine_corpus_replays_cleanly() {
    let c = corpus("sync_engine");
    assert!(c.len() >= 3, "seed corpus missing");
    for (_, bytes) in &c {
        slb_sync::fuzzing::engine_case(bytes);
    }
}
