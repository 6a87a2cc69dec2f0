#![no_main]
//! Fuzz target: see `t4::fuzzing::etcd_core`. Run: `scripts/fuzz.sh 10 etcd_core`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| t4::fuzzing::etcd_core(data));
