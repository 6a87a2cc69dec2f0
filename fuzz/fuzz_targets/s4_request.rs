#![no_main]
//! Fuzz target: see `s4::fuzzing::s4_request`. Run: `scripts/fuzz.sh 10 s4_request`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| s4::fuzzing::s4_request(data));
