#![no_main]
//! Fuzz target: share heads: decoding and signature verification.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = ccbt_xet::head::Head::decode(data) {
        let _ = h.verify();
        let _ = h.verify_for(&[0; 20]);
    }
});
