#![no_main]
//! Fuzz target: see `t4::fuzzing::store_model`. Run: `scripts/fuzz.sh 10 store_model`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| t4::fuzzing::store_model(data));
