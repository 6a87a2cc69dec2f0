#![no_main]
//! Fuzz target: see `t4::fuzzing::store_entry`. Run: `scripts/fuzz.sh 10 store_entry`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| t4::fuzzing::store_entry(data));
