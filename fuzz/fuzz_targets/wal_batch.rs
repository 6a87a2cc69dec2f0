#![no_main]
//! Fuzz target: see `t4::fuzzing::wal_batch`. Run: `scripts/fuzz.sh 10 wal_batch`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| t4::fuzzing::wal_batch(data));
