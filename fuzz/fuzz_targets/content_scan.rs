#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| warden_fuzz::content_scan(data));
