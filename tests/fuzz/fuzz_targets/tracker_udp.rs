#![no_main]
//! Fuzz target: UDP tracker packets (BEP 15).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let tid = data
        .get(4..8)
        .map_or(0, |b| u32::from_be_bytes(b.try_into().unwrap()));
    let _ = ccbt_core::tracker::udp_parse_connect(data, tid);
    let _ = ccbt_core::tracker::udp_parse_announce(data, tid, false);
    let _ = ccbt_core::tracker::udp_parse_announce(data, tid, true);
});
