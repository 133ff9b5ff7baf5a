#![no_main]
//! Fuzz target: version listings (every accepted listing is canonical and safe) and listing
//! pieces (a piece that parses holds only safe paths, and the pieces of an accepted listing
//! parse back to it).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let flags = data.first().copied().unwrap_or(0);
    if let Ok(entries) = ccbt_xet::listing::decode_piece(data, flags & 1 == 1, flags & 2 == 2) {
        for e in &entries {
            assert!(ccbt_xet::listing::check_path(&e.path).is_ok());
        }
    }
    if let Ok(l) = ccbt_xet::listing::decode(data) {
        assert_eq!(
            ccbt_xet::listing::decode(&ccbt_xet::listing::encode(&l)).unwrap(),
            l
        );
        let pieces = ccbt_xet::listing::encode_pieces(&l);
        let n = pieces.len();
        let back: Vec<_> = pieces
            .iter()
            .enumerate()
            .flat_map(|(i, p)| ccbt_xet::listing::decode_piece(p, i == 0, i + 1 == n).unwrap())
            .collect();
        assert_eq!(back, l);
    }
});
