#![no_main]
//! Fuzz target: see `t4::fuzzing::request_validation`. Run: `scripts/fuzz.sh 10 request_validation`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| t4::fuzzing::request_validation(data));
