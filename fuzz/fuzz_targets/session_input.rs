#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| xtmp_core::fuzzing::session_input(data));
