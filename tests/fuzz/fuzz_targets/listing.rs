#![no_main]
//! Fuzz target: version listings (every accepted listing is canonical and safe).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(l) = ccbt_xet::listing::decode(data) {
        assert_eq!(
            ccbt_xet::listing::decode(&ccbt_xet::listing::encode(&l)).unwrap(),
            l
        );
    }
});
