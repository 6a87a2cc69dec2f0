//! Replays the server's committed fuzz corpus (fuzz/corpus/common_name) through its target.

use t4_testkit::replay_corpus;

#[test]
fn common_name_corpus() {
    replay_corpus("common_name", t4_server::fuzzing::common_name);
}
