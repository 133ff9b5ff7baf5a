#![no_main]
//! Fuzz target: the strict bencode decoder (round trip on success).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = ccbt_core::bencode::decode(data) {
        // What decodes re-encodes to the same bytes (the codec is canonical).
        assert_eq!(v.to_owned_value().encode(), data);
    }
    let _ = ccbt_core::bencode::decode_prefix(data);
});
