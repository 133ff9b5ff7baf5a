#![no_main]
//! Fuzz target: the BEP 10 extended handshake.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(h) = ccbt_core::extension::ExtHandshake::decode(data) {
        let _ = ccbt_core::extension::ExtHandshake::decode(&h.encode()).expect("re-decodes");
    }
});
