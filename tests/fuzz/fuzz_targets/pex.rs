#![no_main]
//! Fuzz target: ut_pex messages (BEP 11): bounded, and a decoded message re-decodes from its own
//! encoding.
use ccbt_core::pex::{PexMsg, MAX_ACCEPT};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = PexMsg::decode(data) {
        assert!(m.added.len() <= 2 * MAX_ACCEPT && m.dropped.len() <= 2 * MAX_ACCEPT);
        assert_eq!(PexMsg::decode(&m.encode()).expect("re-decodes"), m);
    }
});
