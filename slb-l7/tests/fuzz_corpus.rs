//! Replays the committed fuzz corpora (fuzz/corpus/l7_*) through the fuzz harnesses, so that
//! `cargo test` catches regressions without a fuzzer.

use std::path::Path;

fn replay(target: &str, case: fn(&[u8])) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus").join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        case(&std::fs::read(&path).unwrap());
        n += 1;
    }
    n
}

#[test]
fn request_head_corpus() {
    assert!(replay("l7_request_head", slb_l7::fuzzing::request_head_case) >= 5);
}

#[test]
fn config_corpus() {
    assert!(replay("l7_config", slb_l7::fuzzing::config_case) >= 3);
}

#[test]
fn proxy_protocol_corpus() {
    assert!(replay("l7_proxy_protocol", slb_l7::fuzzing::proxy_protocol_case) >= 5);
}

#[test]
fn sticky_cookie_corpus() {
    assert!(replay("l7_sticky_cookie", slb_l7::fuzzing::sticky_cookie_case) >= 5);
}
