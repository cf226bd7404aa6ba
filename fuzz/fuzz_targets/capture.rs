//! Fuzz target `capture`: see `filter_user::fuzzing::capture`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| filter_user::fuzzing::capture(data));
