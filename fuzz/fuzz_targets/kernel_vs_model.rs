//! Fuzz target `kernel_vs_model`: see `filter_user::fuzzing::kernel_vs_model`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| filter_user::fuzzing::kernel_vs_model(data));
