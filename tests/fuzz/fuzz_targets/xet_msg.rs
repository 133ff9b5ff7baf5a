#![no_main]
//! Fuzz target: the ccbt_xet wire codec (round trip on success).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = ccbt_xet::net::Msg::decode(bytes::Bytes::copy_from_slice(data)) {
        let again = ccbt_xet::net::Msg::decode(m.encode()).expect("re-decodes");
        assert_eq!(again, m);
    }
});
