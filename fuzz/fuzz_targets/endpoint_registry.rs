#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| xtmp_adapter::fuzzing::endpoint_registry(data));
