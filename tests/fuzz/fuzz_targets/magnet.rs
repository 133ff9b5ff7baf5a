#![no_main]
//! Fuzz target: magnet links (round trip on success).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(m) = ccbt_core::Magnet::parse(s) {
            let back = ccbt_core::Magnet::parse(&m.format()).expect("a formatted magnet parses");
            assert_eq!(back.v1, m.v1);
            assert_eq!(back.v2, m.v2);
        }
    }
});
