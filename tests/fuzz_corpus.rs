//! Replays every checked-in fuzz corpus file through the fuzz harnesses on the
//! stable toolchain, so CI exercises each harness even without cargo-fuzz
//! (zenoh's `verify_all_corpora` idea). The bounded `cargo fuzz run` smoke
//! check in `.ci/fuzz-smoke.sh` comes on top.

#[allow(dead_code, unreachable_pub, missing_docs)]
#[path = "../fuzz/src/lib.rs"]
mod harness;

use std::path::Path;

fn replay(target: &str, harness: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("corpus entry").path();
        let data = std::fs::read(&path).expect("corpus file");
        harness(&data);
        files += 1;
    }
    assert!(files > 0, "empty corpus for {target}");
}

#[test]
fn topic_parse_corpus() {
    replay("topic_parse", harness::topic_parse);
}

#[test]
fn pattern_parse_corpus() {
    replay("pattern_parse", harness::pattern_parse);
}

#[test]
fn matcher_diff_corpus() {
    replay("matcher_diff", harness::matcher_diff);
}

#[cfg(feature = "envelope")]
#[test]
fn envelope_decode_corpus() {
    replay("envelope_decode", harness::envelope_decode);
}
