//! The BEP 3 peer wire protocol with BEP 10 extended messages: a sans-IO codec.
//!
//! [`Decoder`] takes bytes as they arrive and yields whole messages; it never allocates more than
//! one message and refuses lengths above its limit, so a hostile peer cannot make us buffer
//! gigabytes. Encoding writes into a caller's buffer.

use bytes::{Buf, BufMut, Bytes, BytesMut};

pub const PROTOCOL: &[u8; 19] = b"BitTorrent protocol";
pub const HANDSHAKE_LEN: usize = 68;
/// Standard request size.
pub const BLOCK_SIZE: u32 = 16 * 1024;
/// Largest message accepted: a 16 KiB piece block plus header, or a big bitfield / extension
/// message (ut_metadata pieces are 16 KiB). 1 MiB covers a bitfield of 8M pieces.
pub const MAX_MESSAGE: usize = 1 << 20;
/// Largest block we serve (BEP 3 clients never ask for more than 16 KiB; some allow 128 KiB).
pub const MAX_REQUEST: u32 = 128 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handshake {
    pub reserved: [u8; 8],
    pub info_hash: [u8; 20],
    pub peer_id: [u8; 20],
}

impl Handshake {
    pub fn new(info_hash: [u8; 20], peer_id: [u8; 20]) -> Self {
        let mut reserved = [0u8; 8];
        reserved[5] |= 0x10; // BEP 10 extension protocol
        reserved[7] |= 0x04; // BEP 6 Fast extension
        Handshake {
            reserved,
            info_hash,
            peer_id,
        }
    }

    pub fn supports_extensions(&self) -> bool {
        self.reserved[5] & 0x10 != 0
    }

    /// BEP 6: both sides must set the bit for the Fast messages to be used.
    pub fn supports_fast(&self) -> bool {
        self.reserved[7] & 0x04 != 0
    }

    pub fn encode(&self) -> [u8; HANDSHAKE_LEN] {
        let mut b = [0u8; HANDSHAKE_LEN];
        b[0] = 19;
        b[1..20].copy_from_slice(PROTOCOL);
        b[20..28].copy_from_slice(&self.reserved);
        b[28..48].copy_from_slice(&self.info_hash);
        b[48..68].copy_from_slice(&self.peer_id);
        b
    }

    pub fn decode(b: &[u8; HANDSHAKE_LEN]) -> Result<Handshake, WireError> {
        if b[0] != 19 || &b[1..20] != PROTOCOL {
            return Err(WireError::BadHandshake);
        }
        Ok(Handshake {
            reserved: b[20..28].try_into().unwrap(),
            info_hash: b[28..48].try_into().unwrap(),
            peer_id: b[48..68].try_into().unwrap(),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    KeepAlive,
    Choke,
    Unchoke,
    Interested,
    NotInterested,
    Have(u32),
    Bitfield(Bytes),
    Request {
        index: u32,
        begin: u32,
        length: u32,
    },
    Piece {
        index: u32,
        begin: u32,
        data: Bytes,
    },
    Cancel {
        index: u32,
        begin: u32,
        length: u32,
    },
    Port(u16),
    /// BEP 6: a piece worth fetching from us (a hint).
    Suggest(u32),
    /// BEP 6: we have every piece / none (instead of a bitfield).
    HaveAll,
    HaveNone,
    /// BEP 6: a request that will not be served.
    Reject {
        index: u32,
        begin: u32,
        length: u32,
    },
    /// BEP 6: a piece that may be requested while choked.
    AllowedFast(u32),
    /// BEP 10: extension id (0 = handshake) and payload.
    Extended {
        id: u8,
        payload: Bytes,
    },
    /// BEP 52: ask for hashes of one layer of a file's Merkle tree.
    HashRequest(HashReq),
    /// BEP 52: the answer: the requested hashes, then the proof (uncle) hashes.
    Hashes {
        req: HashReq,
        hashes: Bytes,
    },
    /// BEP 52: the request will not be served.
    HashReject(HashReq),
    /// An id we do not implement; ignored, not an error (BEP 3 says to skip unknown messages).
    Unknown {
        id: u8,
    },
}

/// The header shared by BEP 52's hash request, hashes and hash reject messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashReq {
    pub pieces_root: [u8; 32],
    /// Layers above the 16 KiB block layer (the piece layer is log2(piece length / 16 KiB)).
    pub base_layer: u32,
    pub index: u32,
    pub length: u32,
    pub proof_layers: u32,
}

impl HashReq {
    const LEN: usize = 48;
    fn put(&self, out: &mut BytesMut) {
        out.put_slice(&self.pieces_root);
        for v in [self.base_layer, self.index, self.length, self.proof_layers] {
            out.put_u32(v);
        }
    }
    fn get(body: &mut Bytes) -> HashReq {
        let mut pieces_root = [0u8; 32];
        body.copy_to_slice(&mut pieces_root);
        HashReq {
            pieces_root,
            base_layer: body.get_u32(),
            index: body.get_u32(),
            length: body.get_u32(),
            proof_layers: body.get_u32(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("peer sent a malformed handshake")]
    BadHandshake,
    #[error("peer sent a {0}-byte message (limit {MAX_MESSAGE})")]
    TooLarge(usize),
    #[error("peer sent a malformed message (id {id}, {len} bytes)")]
    Malformed { id: u8, len: usize },
}

impl Message {
    /// Appends the encoded message to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        let mut simple = |id: u8, body: &[u32]| {
            out.put_u32(1 + 4 * body.len() as u32);
            out.put_u8(id);
            for v in body {
                out.put_u32(*v);
            }
        };
        match self {
            Message::KeepAlive => out.put_u32(0),
            Message::Choke => simple(0, &[]),
            Message::Unchoke => simple(1, &[]),
            Message::Interested => simple(2, &[]),
            Message::NotInterested => simple(3, &[]),
            Message::Have(i) => simple(4, &[*i]),
            Message::Suggest(i) => simple(0x0D, &[*i]),
            Message::HaveAll => simple(0x0E, &[]),
            Message::HaveNone => simple(0x0F, &[]),
            Message::Reject {
                index,
                begin,
                length,
            } => simple(0x10, &[*index, *begin, *length]),
            Message::AllowedFast(i) => simple(0x11, &[*i]),
            Message::Request {
                index,
                begin,
                length,
            } => simple(6, &[*index, *begin, *length]),
            Message::Cancel {
                index,
                begin,
                length,
            } => simple(8, &[*index, *begin, *length]),
            Message::Bitfield(b) => {
                out.put_u32(1 + b.len() as u32);
                out.put_u8(5);
                out.put_slice(b);
            }
            Message::Piece { index, begin, data } => {
                out.put_u32(9 + data.len() as u32);
                out.put_u8(7);
                out.put_u32(*index);
                out.put_u32(*begin);
                out.put_slice(data);
            }
            Message::Port(p) => {
                out.put_u32(3);
                out.put_u8(9);
                out.put_u16(*p);
            }
            Message::Extended { id, payload } => {
                out.put_u32(2 + payload.len() as u32);
                out.put_u8(20);
                out.put_u8(*id);
                out.put_slice(payload);
            }
            Message::HashRequest(r) | Message::HashReject(r) => {
                out.put_u32(1 + HashReq::LEN as u32);
                out.put_u8(if matches!(self, Message::HashRequest(_)) {
                    21
                } else {
                    23
                });
                r.put(out);
            }
            Message::Hashes { req, hashes } => {
                out.put_u32(1 + (HashReq::LEN + hashes.len()) as u32);
                out.put_u8(22);
                req.put(out);
                out.put_slice(hashes);
            }
            Message::Unknown { .. } => {}
        }
    }

    /// Parses one message body (after the length prefix).
    pub fn parse(mut body: Bytes) -> Result<Message, WireError> {
        if body.is_empty() {
            return Ok(Message::KeepAlive);
        }
        let id = body.get_u8();
        let len = body.len();
        let bad = || WireError::Malformed { id, len: len + 1 };
        let want = |n: usize| if len == n { Ok(()) } else { Err(bad()) };
        Ok(match id {
            0 => want(0).map(|_| Message::Choke)?,
            1 => want(0).map(|_| Message::Unchoke)?,
            2 => want(0).map(|_| Message::Interested)?,
            3 => want(0).map(|_| Message::NotInterested)?,
            4 => {
                want(4)?;
                Message::Have(body.get_u32())
            }
            5 => Message::Bitfield(body),
            6 | 8 => {
                want(12)?;
                let (index, begin, length) = (body.get_u32(), body.get_u32(), body.get_u32());
                if id == 6 {
                    Message::Request {
                        index,
                        begin,
                        length,
                    }
                } else {
                    Message::Cancel {
                        index,
                        begin,
                        length,
                    }
                }
            }
            7 => {
                if len < 8 {
                    return Err(bad());
                }
                let index = body.get_u32();
                let begin = body.get_u32();
                Message::Piece {
                    index,
                    begin,
                    data: body,
                }
            }
            9 => {
                want(2)?;
                Message::Port(body.get_u16())
            }
            0x0D => {
                want(4)?;
                Message::Suggest(body.get_u32())
            }
            0x0E => want(0).map(|_| Message::HaveAll)?,
            0x0F => want(0).map(|_| Message::HaveNone)?,
            0x10 => {
                want(12)?;
                Message::Reject {
                    index: body.get_u32(),
                    begin: body.get_u32(),
                    length: body.get_u32(),
                }
            }
            0x11 => {
                want(4)?;
                Message::AllowedFast(body.get_u32())
            }
            20 => {
                if len < 1 {
                    return Err(bad());
                }
                let eid = body.get_u8();
                Message::Extended {
                    id: eid,
                    payload: body,
                }
            }
            21 | 23 => {
                want(HashReq::LEN)?;
                let r = HashReq::get(&mut body);
                if id == 21 {
                    Message::HashRequest(r)
                } else {
                    Message::HashReject(r)
                }
            }
            22 => {
                if len < HashReq::LEN || !(len - HashReq::LEN).is_multiple_of(32) {
                    return Err(bad());
                }
                let req = HashReq::get(&mut body);
                Message::Hashes { req, hashes: body }
            }
            other => Message::Unknown { id: other },
        })
    }
}

/// Incremental decoder: push bytes, pull messages.
#[derive(Debug)]
pub struct Decoder {
    buf: BytesMut,
    limit: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder {
            buf: BytesMut::with_capacity(64 * 1024),
            limit: MAX_MESSAGE,
        }
    }
}

impl Decoder {
    pub fn with_limit(limit: usize) -> Self {
        Decoder {
            limit,
            ..Default::default()
        }
    }

    /// The buffer to read socket data into (the caller extends it).
    pub fn buffer(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Next complete message, if any.
    pub fn next_message(&mut self) -> Result<Option<Message>, WireError> {
        if self.buf.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes(self.buf[..4].try_into().unwrap()) as usize;
        if len > self.limit {
            return Err(WireError::TooLarge(len));
        }
        if self.buf.len() < 4 + len {
            self.buf.reserve(4 + len - self.buf.len());
            return Ok(None);
        }
        self.buf.advance(4);
        let body = self.buf.split_to(len).freeze();
        Message::parse(body).map(Some)
    }
}

/// A piece bitfield (BEP 3: high bit of byte 0 is piece 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bitfield {
    bits: Vec<u8>,
    len: usize,
}

impl Bitfield {
    pub fn new(len: usize) -> Self {
        Bitfield {
            bits: vec![0; len.div_ceil(8)],
            len,
        }
    }

    pub fn full(len: usize) -> Self {
        let mut b = Self::new(len);
        for i in 0..len {
            b.set(i);
        }
        b
    }

    /// From the wire; spare bits must be zero and the length must match.
    pub fn from_bytes(bytes: &[u8], len: usize) -> Option<Self> {
        if bytes.len() != len.div_ceil(8) {
            return None;
        }
        let b = Bitfield {
            bits: bytes.to_vec(),
            len,
        };
        if (len..bytes.len() * 8).any(|i| b.get_raw(i)) {
            return None;
        }
        Some(b)
    }

    fn get_raw(&self, i: usize) -> bool {
        self.bits[i / 8] & (0x80 >> (i % 8)) != 0
    }

    pub fn get(&self, i: usize) -> bool {
        i < self.len && self.get_raw(i)
    }

    pub fn set(&mut self, i: usize) {
        if i < self.len {
            self.bits[i / 8] |= 0x80 >> (i % 8);
        }
    }

    pub fn clear(&mut self, i: usize) {
        if i < self.len {
            self.bits[i / 8] &= !(0x80 >> (i % 8));
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn count(&self) -> usize {
        self.bits.iter().map(|b| b.count_ones() as usize).sum()
    }

    pub fn all(&self) -> bool {
        self.count() == self.len
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bits
    }

    pub fn ones(&self) -> impl Iterator<Item = usize> + '_ {
        self.ones_and(self)
    }

    /// Indices set in both `self` and `other` (a byte at a time: zero bytes cost one test).
    pub fn ones_and<'a>(&'a self, other: &'a Bitfield) -> impl Iterator<Item = usize> + 'a {
        let len = self.len.min(other.len);
        self.bits
            .iter()
            .zip(&other.bits)
            .enumerate()
            .filter(|(_, (a, b))| *a & *b != 0)
            .flat_map(move |(k, (a, b))| {
                let mut m = a & b;
                std::iter::from_fn(move || {
                    if m == 0 {
                        return None;
                    }
                    let bit = m.leading_zeros() as usize;
                    m &= !(0x80 >> bit);
                    Some(k * 8 + bit)
                })
            })
            .filter(move |&i| i < len)
    }

    /// Some index is set in both.
    pub fn intersects(&self, other: &Bitfield) -> bool {
        self.ones_and(other).next().is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitfield_ones_and_intersection() {
        for n in [0usize, 1, 7, 8, 9, 63, 100] {
            let mut a = Bitfield::new(n);
            let mut b = Bitfield::new(n);
            for i in 0..n {
                if i % 3 == 0 || i == n - 1 {
                    a.set(i);
                }
                if i % 2 == 0 || i == n - 1 {
                    b.set(i);
                }
            }
            let want: Vec<usize> = (0..n).filter(|&i| a.get(i) && b.get(i)).collect();
            assert_eq!(a.ones_and(&b).collect::<Vec<_>>(), want, "n={n}");
            assert_eq!(
                a.ones().collect::<Vec<_>>(),
                (0..n).filter(|&i| a.get(i)).collect::<Vec<_>>()
            );
            assert_eq!(a.intersects(&b), !want.is_empty());
        }
    }

    #[test]
    fn handshake_vector() {
        let h = Handshake::new([0xaa; 20], *b"-CC0100-abcdefghijkl");
        let e = h.encode();
        assert_eq!(e[0], 19);
        assert_eq!(&e[1..20], b"BitTorrent protocol");
        assert_eq!(&e[20..28], &[0, 0, 0, 0, 0, 0x10, 0, 0x04]); // BEP 10, BEP 6
        assert_eq!(Handshake::decode(&e).unwrap(), h);
        let mut bad = e;
        bad[0] = 18;
        assert_eq!(Handshake::decode(&bad), Err(WireError::BadHandshake));
    }

    fn hr() -> HashReq {
        HashReq {
            pieces_root: [0xab; 32],
            base_layer: 2,
            index: 512,
            length: 512,
            proof_layers: 3,
        }
    }

    /// BEP 52 layout: pieces root, then base layer, index, length, proof layers (u32 BE).
    fn hash_msg(id: u8, tail: &[u8]) -> Vec<u8> {
        let mut v = ((49 + tail.len()) as u32).to_be_bytes().to_vec();
        v.push(id);
        v.extend_from_slice(&[0xab; 32]);
        for x in [2u32, 512, 512, 3] {
            v.extend_from_slice(&x.to_be_bytes());
        }
        v.extend_from_slice(tail);
        v
    }

    #[test]
    fn message_vectors() {
        let cases: Vec<(Message, Vec<u8>)> = vec![
            (Message::KeepAlive, vec![0, 0, 0, 0]),
            (Message::Interested, vec![0, 0, 0, 1, 2]),
            (Message::Have(258), vec![0, 0, 0, 5, 4, 0, 0, 1, 2]),
            (
                Message::Request {
                    index: 1,
                    begin: 16384,
                    length: 16384,
                },
                vec![0, 0, 0, 13, 6, 0, 0, 0, 1, 0, 0, 0x40, 0, 0, 0, 0x40, 0],
            ),
            (
                Message::Piece {
                    index: 2,
                    begin: 0,
                    data: Bytes::from_static(b"xyz"),
                },
                vec![0, 0, 0, 12, 7, 0, 0, 0, 2, 0, 0, 0, 0, b'x', b'y', b'z'],
            ),
            (
                Message::Extended {
                    id: 0,
                    payload: Bytes::from_static(b"de"),
                },
                vec![0, 0, 0, 4, 20, 0, b'd', b'e'],
            ),
            (Message::Port(6881), vec![0, 0, 0, 3, 9, 0x1a, 0xe1]),
            // BEP 6's messages.
            (Message::Suggest(3), vec![0, 0, 0, 5, 0x0D, 0, 0, 0, 3]),
            (Message::HaveAll, vec![0, 0, 0, 1, 0x0E]),
            (Message::HaveNone, vec![0, 0, 0, 1, 0x0F]),
            (
                Message::Reject {
                    index: 1,
                    begin: 16384,
                    length: 16384,
                },
                vec![0, 0, 0, 13, 0x10, 0, 0, 0, 1, 0, 0, 0x40, 0, 0, 0, 0x40, 0],
            ),
            (Message::AllowedFast(9), vec![0, 0, 0, 5, 0x11, 0, 0, 0, 9]),
            (Message::HashRequest(hr()), hash_msg(21, &[])),
            (Message::HashReject(hr()), hash_msg(23, &[])),
            (
                Message::Hashes {
                    req: hr(),
                    hashes: Bytes::from(vec![7u8; 64]),
                },
                hash_msg(22, &[7u8; 64]),
            ),
        ];
        let mut d = Decoder::default();
        for (m, bytes) in &cases {
            let mut out = BytesMut::new();
            m.encode(&mut out);
            assert_eq!(&out[..], &bytes[..], "{m:?}");
            // Feed one byte at a time.
            for b in bytes {
                assert!(d.next_message().unwrap().is_none());
                d.buffer().put_u8(*b);
            }
            assert_eq!(d.next_message().unwrap().as_ref(), Some(m));
        }
    }

    #[test]
    fn hostile_messages() {
        let mut d = Decoder::default();
        d.buffer().put_u32(MAX_MESSAGE as u32 + 1);
        assert!(matches!(d.next_message(), Err(WireError::TooLarge(_))));
        let mut d = Decoder::default();
        d.buffer().put_slice(&[0, 0, 0, 3, 4, 0, 0]); // have with 2 bytes
        assert!(matches!(
            d.next_message(),
            Err(WireError::Malformed { id: 4, .. })
        ));
        let mut d = Decoder::default();
        d.buffer().put_slice(&[0, 0, 0, 5, 7, 0, 0, 0, 1]); // piece too short
        assert!(matches!(
            d.next_message(),
            Err(WireError::Malformed { id: 7, .. })
        ));
        let mut d = Decoder::default();
        d.buffer().put_slice(&[0, 0, 0, 1, 99]);
        assert_eq!(d.next_message().unwrap(), Some(Message::Unknown { id: 99 }));
    }

    #[test]
    fn bitfield() {
        let mut b = Bitfield::new(10);
        b.set(0);
        b.set(9);
        assert_eq!(b.as_bytes(), &[0x80, 0x40]);
        assert_eq!(b.count(), 2);
        assert!(Bitfield::from_bytes(&[0x80, 0x40], 10).is_some());
        assert!(
            Bitfield::from_bytes(&[0x80, 0x41], 10).is_none(),
            "spare bit set"
        );
        assert!(Bitfield::from_bytes(&[0x80], 10).is_none(), "wrong length");
        assert_eq!(b.ones().collect::<Vec<_>>(), vec![0, 9]);
    }
}
