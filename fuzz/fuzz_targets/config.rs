//! Fuzz target `config`: see `filter_user::fuzzing::config`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| filter_user::fuzzing::config(data));
