//! The conformance suite against the stores that need no server: the in-memory bucket, the
//! simulated S3 (no faults, quick) and a directory. The S3 backend runs it against s4
//! (crates/t4-cli/tests/it/node_bucket.rs and the s4 crate's tests).

use std::sync::Arc;

use t4_env::{MemObjectStore, RealClock, SimS3};
use t4_object::conformance;

#[tokio::test]
async fn the_in_memory_store_passes() {
    conformance::run(&MemObjectStore::new(), "conformance/").await;
}

#[tokio::test]
async fn the_simulated_s3_passes() {
    let store = SimS3::new(7, Arc::new(RealClock::new()));
    store.set_latency_micros(0, 10);
    conformance::run(&store, "conformance/").await;
}
