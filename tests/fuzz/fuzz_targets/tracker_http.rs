#![no_main]
//! Fuzz target: HTTP tracker replies (the raw response, announce and scrape bodies, compact peers).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ccbt_core::tracker::http_response_body(data);
    let _ = ccbt_core::tracker::parse_announce_reply(data);
    let _ = ccbt_core::tracker::parse_scrape_reply(data, &[7; 20]);
    let _ = ccbt_core::tracker::parse_compact_v4(data);
    let _ = ccbt_core::tracker::parse_compact_v6(data);
});
