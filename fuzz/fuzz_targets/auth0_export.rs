#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mfa_recall::fuzzing::auth0_export(data));
