#![no_main]
//! Fuzz target: see `s4::fuzzing::s4_metadata`. Run: `scripts/fuzz.sh 10 s4_metadata`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| s4::fuzzing::s4_metadata(data));
