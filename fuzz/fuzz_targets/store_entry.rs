#![no_main]
//! Fuzz target: see `t4::fuzzing::store_entry`. Run: `cargo +nightly fuzz run store_entry` in fuzz/.
libfuzzer_sys::fuzz_target!(|data: &[u8]| t4::fuzzing::store_entry(data));
