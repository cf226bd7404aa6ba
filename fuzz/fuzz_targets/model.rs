//! Fuzz target `model`: see `filter_user::fuzzing::model`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| filter_user::fuzzing::model(data));
