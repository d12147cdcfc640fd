#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| topicbus_fuzz::topic_parse(data));
