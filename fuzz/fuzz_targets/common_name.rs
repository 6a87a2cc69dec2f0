#![no_main]
//! Fuzz target: see `t4::fuzzing::common_name`. Run: `scripts/fuzz.sh 10 common_name`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| t4::fuzzing::common_name(data));
