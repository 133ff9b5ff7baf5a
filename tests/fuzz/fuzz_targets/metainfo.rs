#![no_main]
//! Fuzz target: metainfo (v1, v2, hybrid, piece layers).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // v1, v2 and hybrid, piece layers included; a parsed torrent re-parses from its own bytes.
    if let Ok(m) = ccbt_core::Metainfo::from_bytes(data) {
        let again = ccbt_core::Metainfo::from_bytes(&m.to_torrent_bytes()).expect("re-parses");
        assert_eq!(again.files, m.files);
    }
    let _ = ccbt_core::Metainfo::from_info_bytes(data);
});
