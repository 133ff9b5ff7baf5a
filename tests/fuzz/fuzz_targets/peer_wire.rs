#![no_main]
//! Fuzz target: the peer wire: handshake and the message stream decoder.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    use ccbt_core::wire::{Decoder, Handshake, HANDSHAKE_LEN};
    if let Some(h) = data.get(..HANDSHAKE_LEN) {
        let _ = Handshake::decode(h.try_into().unwrap());
    }
    // The stream decoder with a small limit, fed in two parts.
    let mut d = Decoder::with_limit(1 << 16);
    let (a, b) = data.split_at(data.len() / 2);
    for part in [a, b] {
        d.buffer().extend_from_slice(part);
        while let Ok(Some(m)) = d.next_message() {
            let mut out = bytes::BytesMut::new();
            m.encode(&mut out);
        }
    }
});
