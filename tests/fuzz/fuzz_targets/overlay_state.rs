#![no_main]
//! Fuzz target: the owner mount's overlay state file.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ccbt_fs::overlay::fuzz_decode_state(data);
});
