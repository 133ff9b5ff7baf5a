#![no_main]
//! Fuzz target: BEP 9 ut_metadata messages.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ccbt_core::metadata::MetaMsg::decode(bytes::Bytes::copy_from_slice(data));
});
