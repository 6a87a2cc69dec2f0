#![no_main]
//! Fuzz target: see `t4::fuzzing::auth_records`. Run: `scripts/fuzz.sh 10 auth_records`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| t4::fuzzing::auth_records(data));
