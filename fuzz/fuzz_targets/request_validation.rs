#![no_main]
//! Fuzz target: see `t4::fuzzing::request_validation`. Run: `cargo +nightly fuzz run request_validation` in fuzz/.
libfuzzer_sys::fuzz_target!(|data: &[u8]| t4::fuzzing::request_validation(data));
