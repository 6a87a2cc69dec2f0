//! Replays every committed fuzz corpus input through its target on the stable toolchain.

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
    let mut inputs = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|error| panic!("{}: {error}", dir.display())) {
        let path = entry.unwrap().path();
        run(&std::fs::read(&path).unwrap());
        inputs += 1;
    }
    assert!(inputs >= 3, "the {target} corpus must hold seed inputs, found {inputs}");
}

#[test]
fn wal_batch_corpus() {
    replay("wal_batch", t4::fuzzing::wal_batch);
}

#[test]
fn store_entry_corpus() {
    replay("store_entry", t4::fuzzing::store_entry);
}

#[test]
fn request_validation_corpus() {
    replay("request_validation", t4::fuzzing::request_validation);
}

#[test]
fn bucket_objects_corpus() {
    replay("bucket_objects", t4::fuzzing::bucket_objects);
}

#[test]
fn auth_records_corpus() {
    replay("auth_records", t4::fuzzing::auth_records);
}

#[test]
fn s4_metadata_corpus() {
    replay("s4_metadata", t4::fuzzing::s4_metadata);
}

#[test]
fn store_model_corpus() {
    replay("store_model", t4::fuzzing::store_model);
}

#[test]
fn etcd_core_corpus() {
    replay("etcd_core", t4::fuzzing::etcd_core);
}

#[test]
fn s4_request_corpus() {
    replay("s4_request", t4::fuzzing::s4_request);
}

#[test]
fn common_name_corpus() {
    replay("common_name", t4::fuzzing::common_name);
}
