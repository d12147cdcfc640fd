#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| topicbus_fuzz::envelope_decode(data));
