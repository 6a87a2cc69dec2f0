#![no_main]
//! Fuzz target: see `t4::fuzzing::s4_metadata`. Run: `scripts/fuzz.sh 10 s4_metadata`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| t4::fuzzing::s4_metadata(data));
