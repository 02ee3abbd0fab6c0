#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| milter_core_fuzz::recording(data));
