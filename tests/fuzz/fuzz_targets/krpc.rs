#![no_main]
//! Fuzz target: DHT KRPC packets (BEP 5); a decoded packet re-decodes from its own encoding.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = ccbt_dht::krpc::Message::decode(data) {
        let again = ccbt_dht::krpc::Message::decode(&m.encode()).expect("re-decodes");
        assert_eq!(again, m);
    }
});
