//! BEP 9 metadata exchange (`ut_metadata`), sans-IO: the message codec, the serving rule and an
//! assembler that only hands out an info dictionary whose hash matches the magnet.
//!
//! The async fetcher that dials peers for a magnet is [`crate::session::metadata_fetch`]; the peer
//! connection serves our own torrents' metadata with [`serve`].

use crate::bencode::{self, OwnedValue, Value};
use bytes::Bytes;
use sha1::{Digest, Sha1};
use sha2::Sha256;

/// Metadata travels in 16 KiB pieces (the last may be shorter).
pub const PIECE: usize = 16 * 1024;
/// Larger info dictionaries are refused (a torrent of ~800k pieces; anything bigger is hostile).
pub const MAX_METADATA: u64 = 16 << 20;
/// The extension's name in the BEP 10 handshake.
pub const NAME: &str = "ut_metadata";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MetadataError {
    #[error("malformed ut_metadata message: {0}")]
    Malformed(&'static str),
    #[error("the peer announced metadata of {0} bytes (allowed: 1 to 16 MiB)")]
    BadSize(u64),
    #[error("metadata piece {0} is out of range or has the wrong length")]
    BadPiece(u32),
    #[error("the peer's total_size {0} differs from the size it announced")]
    SizeChanged(u64),
    #[error("the metadata does not hash to the magnet's info-hash")]
    HashMismatch,
    #[error("the metadata is not a valid info dictionary")]
    NotInfo,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetaMsg {
    Request {
        piece: u32,
    },
    Data {
        piece: u32,
        total_size: u64,
        data: Bytes,
    },
    Reject {
        piece: u32,
    },
}

impl MetaMsg {
    pub fn encode(&self) -> Bytes {
        let (t, piece) = match self {
            MetaMsg::Request { piece } => (0, *piece),
            MetaMsg::Data { piece, .. } => (1, *piece),
            MetaMsg::Reject { piece } => (2, *piece),
        };
        let mut d = vec![
            ("msg_type", OwnedValue::Int(t)),
            ("piece", OwnedValue::Int(piece as i64)),
        ];
        if let MetaMsg::Data { total_size, .. } = self {
            d.push(("total_size", OwnedValue::Int(*total_size as i64)));
        }
        let mut out = OwnedValue::dict(d).encode();
        if let MetaMsg::Data { data, .. } = self {
            out.extend_from_slice(data);
        }
        Bytes::from(out)
    }

    /// `Ok(None)` for a message type this version does not know (BEP 9: ignore it).
    pub fn decode(payload: Bytes) -> Result<Option<MetaMsg>, MetadataError> {
        let (v, used) = bencode::decode_prefix(&payload)
            .map_err(|_| MetadataError::Malformed("not a bencoded dictionary"))?;
        let d = v
            .as_dict()
            .ok_or(MetadataError::Malformed("not a dictionary"))?;
        let int = |k: &[u8]| d.get(k).and_then(Value::as_int);
        let t = int(b"msg_type").ok_or(MetadataError::Malformed("no msg_type"))?;
        let piece = int(b"piece")
            .and_then(|p| u32::try_from(p).ok())
            .ok_or(MetadataError::Malformed("no valid piece"))?;
        Ok(Some(match t {
            0 => MetaMsg::Request { piece },
            1 => {
                let total_size = int(b"total_size")
                    .and_then(|s| u64::try_from(s).ok())
                    .ok_or(MetadataError::Malformed("data without total_size"))?;
                MetaMsg::Data {
                    piece,
                    total_size,
                    data: payload.slice(used..),
                }
            }
            2 => MetaMsg::Reject { piece },
            _ => return Ok(None),
        }))
    }
}

/// Number of pieces for `size` bytes of metadata.
pub fn piece_count(size: u64) -> u32 {
    size.div_ceil(PIECE as u64) as u32
}

/// The answer to a request for `piece` of our `info` dictionary.
pub fn serve(info: &[u8], piece: u32) -> MetaMsg {
    let start = piece as usize * PIECE;
    if info.is_empty() || start >= info.len() {
        return MetaMsg::Reject { piece };
    }
    let end = (start + PIECE).min(info.len());
    MetaMsg::Data {
        piece,
        total_size: info.len() as u64,
        data: Bytes::copy_from_slice(&info[start..end]),
    }
}

/// Collects one peer's metadata pieces and checks the whole against the info-hash(es).
#[derive(Debug)]
pub struct Assembler {
    v1: Option<[u8; 20]>,
    v2: Option<[u8; 32]>,
    size: u64,
    pieces: Vec<Option<Bytes>>,
}

impl Assembler {
    /// `size` is the peer's `metadata_size`. At least one of `v1`/`v2` must be given.
    pub fn new(
        v1: Option<[u8; 20]>,
        v2: Option<[u8; 32]>,
        size: u64,
    ) -> Result<Self, MetadataError> {
        if size == 0 || size > MAX_METADATA {
            return Err(MetadataError::BadSize(size));
        }
        Ok(Assembler {
            v1,
            v2,
            size,
            pieces: vec![None; piece_count(size) as usize],
        })
    }

    pub fn piece_count(&self) -> u32 {
        self.pieces.len() as u32
    }

    /// Pieces still wanted.
    pub fn missing(&self) -> impl Iterator<Item = u32> + '_ {
        self.pieces
            .iter()
            .enumerate()
            .filter(|(_, p)| p.is_none())
            .map(|(i, _)| i as u32)
    }

    pub fn on_data(
        &mut self,
        piece: u32,
        total_size: u64,
        data: Bytes,
    ) -> Result<(), MetadataError> {
        if total_size != self.size {
            return Err(MetadataError::SizeChanged(total_size));
        }
        let n = self.pieces.len() as u32;
        let want = if piece + 1 == n {
            self.size as usize - (n as usize - 1) * PIECE
        } else {
            PIECE
        };
        if piece >= n || data.len() != want {
            return Err(MetadataError::BadPiece(piece));
        }
        self.pieces[piece as usize] = Some(data);
        Ok(())
    }

    pub fn is_complete(&self) -> bool {
        self.pieces.iter().all(Option::is_some)
    }

    /// The verified info dictionary. Every given hash must match (a hybrid magnet names both).
    pub fn finish(self) -> Result<Vec<u8>, MetadataError> {
        if !self.is_complete() {
            return Err(MetadataError::Malformed(
                "finish before every piece arrived",
            ));
        }
        let mut info = Vec::with_capacity(self.size as usize);
        for p in self.pieces.into_iter().flatten() {
            info.extend_from_slice(&p);
        }
        let v1_ok = self.v1.is_none_or(|h| Sha1::digest(&info).as_slice() == h);
        let v2_ok = self
            .v2
            .is_none_or(|h| Sha256::digest(&info).as_slice() == h);
        if !(v1_ok && v2_ok) || (self.v1.is_none() && self.v2.is_none()) {
            return Err(MetadataError::HashMismatch);
        }
        match bencode::decode(&info) {
            Ok(v) if v.as_dict().is_some() => Ok(info),
            _ => Err(MetadataError::NotInfo),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_match_the_bep_examples() {
        let r = MetaMsg::Request { piece: 0 };
        assert_eq!(&r.encode()[..], b"d8:msg_typei0e5:piecei0ee");
        let d = MetaMsg::Data {
            piece: 0,
            total_size: 3,
            data: Bytes::from_static(b"xyz"),
        };
        assert_eq!(
            &d.encode()[..],
            b"d8:msg_typei1e5:piecei0e10:total_sizei3eexyz"
        );
        assert_eq!(MetaMsg::decode(d.encode()).unwrap(), Some(d));
        assert_eq!(
            MetaMsg::decode(Bytes::from_static(b"d8:msg_typei2e5:piecei7ee")).unwrap(),
            Some(MetaMsg::Reject { piece: 7 })
        );
        // Unknown types are ignored, garbage is an error.
        assert_eq!(
            MetaMsg::decode(Bytes::from_static(b"d8:msg_typei9e5:piecei0ee")).unwrap(),
            None
        );
        for bad in [
            &b"garbage"[..],
            b"d5:piecei0ee",
            b"d8:msg_typei1e5:piecei0ee",
            b"d8:msg_typei0e5:piecei-1ee",
        ] {
            assert!(
                MetaMsg::decode(Bytes::copy_from_slice(bad)).is_err(),
                "{bad:?}"
            );
        }
    }

    fn info(len: usize) -> Vec<u8> {
        let body: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
        let mut v = format!("d4:name{}:", body.len()).into_bytes();
        v.extend_from_slice(&body);
        v.push(b'e');
        v
    }

    /// Serves `pieces` of `info` into `a`.
    fn feed(a: &mut Assembler, info: &[u8], pieces: impl Iterator<Item = u32>) {
        for p in pieces {
            let MetaMsg::Data {
                piece,
                total_size,
                data,
            } = serve(info, p)
            else {
                panic!("piece {p} not served")
            };
            a.on_data(piece, total_size, data).unwrap();
        }
    }

    #[test]
    fn serve_and_assemble_roundtrip_with_hash_checks() {
        let info = info(40_000); // 3 pieces, the last short
        let v1: [u8; 20] = Sha1::digest(&info).into();
        let v2: [u8; 32] = Sha256::digest(&info).into();
        let mut a = Assembler::new(Some(v1), Some(v2), info.len() as u64).unwrap();
        assert_eq!(a.piece_count(), 3);
        let order: Vec<u32> = a.missing().collect();
        feed(&mut a, &info, order.into_iter().rev());
        assert_eq!(a.finish().unwrap(), info);
        assert_eq!(serve(&info, 3), MetaMsg::Reject { piece: 3 });

        // A wrong hash, a wrong total, a short middle piece, hostile sizes.
        let mut bad = Assembler::new(Some([0; 20]), None, info.len() as u64).unwrap();
        feed(&mut bad, &info, 0..3);
        assert_eq!(bad.finish(), Err(MetadataError::HashMismatch));
        let mut a = Assembler::new(Some(v1), None, info.len() as u64).unwrap();
        assert_eq!(
            a.on_data(0, 5, Bytes::from_static(b"x")),
            Err(MetadataError::SizeChanged(5))
        );
        assert_eq!(
            a.on_data(1, info.len() as u64, Bytes::from_static(b"x")),
            Err(MetadataError::BadPiece(1))
        );
        assert!(a.on_data(9, info.len() as u64, Bytes::new()).is_err());
        assert!(Assembler::new(Some(v1), None, 0).is_err());
        assert!(Assembler::new(Some(v1), None, MAX_METADATA + 1).is_err());
        // Bytes that hash right but are not a dictionary are refused too.
        let junk = b"i5e".to_vec();
        let mut a = Assembler::new(Some(Sha1::digest(&junk).into()), None, 3).unwrap();
        a.on_data(0, 3, Bytes::from(junk)).unwrap();
        assert_eq!(a.finish(), Err(MetadataError::NotInfo));
    }
}
