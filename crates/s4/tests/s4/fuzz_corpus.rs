//! Replays s4's committed fuzz corpora (fuzz/corpus) through their targets.

use t4_testkit::replay_corpus;

#[test]
fn s4_metadata_corpus() {
    replay_corpus("s4_metadata", s4::fuzzing::s4_metadata);
}

#[test]
fn s4_request_corpus() {
    replay_corpus("s4_request", s4::fuzzing::s4_request);
}
