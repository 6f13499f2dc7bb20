#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mfa_recall::fuzzing::provider_headers(data));
