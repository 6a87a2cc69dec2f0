#![no_main]
//! Fuzz target: see `t4_server::fuzzing::common_name`. Run: `scripts/fuzz.sh 10 common_name`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| t4_server::fuzzing::common_name(data));
