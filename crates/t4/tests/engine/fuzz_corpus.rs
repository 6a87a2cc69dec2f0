//! Replays the engine's committed fuzz corpora (fuzz/corpus) through their targets on the
//! stable toolchain.

use t4_testkit::replay_corpus;

#[test]
fn wal_batch_corpus() {
    replay_corpus("wal_batch", t4::fuzzing::wal_batch);
}

#[test]
fn store_entry_corpus() {
    replay_corpus("store_entry", t4::fuzzing::store_entry);
}

#[test]
fn request_validation_corpus() {
    replay_corpus("request_validation", t4::fuzzing::request_validation);
}

#[test]
fn bucket_objects_corpus() {
    replay_corpus("bucket_objects", t4::fuzzing::bucket_objects);
}

#[test]
fn auth_records_corpus() {
    replay_corpus("auth_records", t4::fuzzing::auth_records);
}

#[test]
fn store_model_corpus() {
    replay_corpus("store_model", t4::fuzzing::store_model);
}

#[test]
fn etcd_core_corpus() {
    replay_corpus("etcd_core", t4::fuzzing::etcd_core);
}
