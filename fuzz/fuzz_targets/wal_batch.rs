#![no_main]
//! Fuzz target: see `t4::fuzzing::wal_batch`. Run: `cargo +nightly fuzz run wal_batch` in fuzz/.
libfuzzer_sys::fuzz_target!(|data: &[u8]| t4::fuzzing::wal_batch(data));
