#![no_main]
//! Fuzz target: see `t4::fuzzing::bucket_objects`. Run: `scripts/fuzz.sh 10 bucket_objects`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| t4::fuzzing::bucket_objects(data));
