//! The uTP header (20 bytes), its extension chain (selective ACK is extension 1) and payload.

/// Packet types (the high nibble of the first byte; the low nibble is version 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    Data = 0,
    Fin = 1,
    State = 2,
    Reset = 3,
    Syn = 4,
}

pub const HEADER: usize = 20;
const EXT_SACK: u8 = 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub ty: Type,
    pub conn_id: u16,
    /// Sender's clock, microseconds.
    pub ts: u32,
    /// The sender's receive time of our last packet minus its timestamp (one-way delay plus the
    /// clock offset; only its changes mean anything).
    pub ts_diff: u32,
    /// Bytes the sender can still take.
    pub wnd: u32,
    pub seq: u16,
    pub ack: u16,
    /// Selective ACK bitmask: bit i (LSB first in each byte) is `ack + 2 + i`.
    pub sack: Option<Vec<u8>>,
    pub payload: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    #[error("uTP packet shorter than its header")]
    Short,
    #[error("not uTP version 1")]
    Version,
    #[error("unknown uTP packet type {0}")]
    BadType(u8),
    #[error("malformed uTP extension")]
    BadExtension,
}

impl Packet {
    pub fn decode(b: &[u8]) -> Result<Packet, PacketError> {
        if b.len() < HEADER {
            return Err(PacketError::Short);
        }
        if b[0] & 0x0f != 1 {
            return Err(PacketError::Version);
        }
        let ty = match b[0] >> 4 {
            0 => Type::Data,
            1 => Type::Fin,
            2 => Type::State,
            3 => Type::Reset,
            4 => Type::Syn,
            t => return Err(PacketError::BadType(t)),
        };
        let u16_at = |i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
        let u32_at = |i: usize| u32::from_be_bytes(b[i..i + 4].try_into().unwrap());
        let mut next = b[1];
        let mut at = HEADER;
        let mut sack = None;
        // Bounded: each extension consumes at least 2 bytes of a datagram.
        while next != 0 {
            let (Some(&n), Some(&len)) = (b.get(at), b.get(at + 1)) else {
                return Err(PacketError::BadExtension);
            };
            let data = b
                .get(at + 2..at + 2 + len as usize)
                .ok_or(PacketError::BadExtension)?;
            // BEP 29 draws the mask in 4-byte words, but libtorrent sizes it by the byte
            // (`(span + 7) / 8`, so often 1 to 3 bytes). Rejecting those dropped every packet
            // libtorrent sent while it held out-of-order data, ACKs and requests alike, and a
            // transfer to it could stall for good. An empty mask says nothing.
            if next == EXT_SACK && len > 0 {
                sack = Some(data.to_vec());
            }
            next = n;
            at += 2 + len as usize;
        }
        Ok(Packet {
            ty,
            conn_id: u16_at(2),
            ts: u32_at(4),
            ts_diff: u32_at(8),
            wnd: u32_at(12),
            seq: u16_at(16),
            ack: u16_at(18),
            sack,
            payload: b[at..].to_vec(),
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(HEADER + 8 + self.payload.len());
        v.push(((self.ty as u8) << 4) | 1);
        v.push(if self.sack.is_some() { EXT_SACK } else { 0 });
        v.extend_from_slice(&self.conn_id.to_be_bytes());
        v.extend_from_slice(&self.ts.to_be_bytes());
        v.extend_from_slice(&self.ts_diff.to_be_bytes());
        v.extend_from_slice(&self.wnd.to_be_bytes());
        v.extend_from_slice(&self.seq.to_be_bytes());
        v.extend_from_slice(&self.ack.to_be_bytes());
        if let Some(s) = &self.sack {
            v.push(0);
            v.push(s.len() as u8);
            v.extend_from_slice(s);
        }
        v.extend_from_slice(&self.payload);
        v
    }

    /// Whether a datagram looks like uTP (version 1, a known type): the listen port's UDP socket
    /// also carries the DHT, whose packets start with `d`.
    pub fn is_utp(b: &[u8]) -> bool {
        b.len() >= HEADER && b[0] & 0x0f == 1 && b[0] >> 4 <= 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_vector() {
        let p = Packet {
            ty: Type::Syn,
            conn_id: 0x1234,
            ts: 1,
            ts_diff: 2,
            wnd: 0x10000,
            seq: 1,
            ack: 0,
            sack: None,
            payload: vec![],
        };
        let b = p.encode();
        assert_eq!(
            b,
            [0x41, 0, 0x12, 0x34, 0, 0, 0, 1, 0, 0, 0, 2, 0, 1, 0, 0, 0, 1, 0, 0]
        );
        assert_eq!(Packet::decode(&b).unwrap(), p);
        let d = Packet {
            ty: Type::Data,
            sack: Some(vec![0b101, 0, 0, 0]),
            payload: b"hello".to_vec(),
            ..p
        };
        assert_eq!(Packet::decode(&d.encode()).unwrap(), d);
        assert!(Packet::is_utp(&b));
        assert!(!Packet::is_utp(
            b"d1:ad2:id20:aaaaaaaaaaaaaaaaaaaae1:q4:ping1:t2:aa1:y1:qe"
        ));
    }

    /// libtorrent's selective ACK, sized by the byte: a 1-byte mask (here packet ack+2 and
    /// ack+4 received) is a valid packet, as is a 3-byte one.
    #[test]
    fn a_sack_of_any_byte_length_decodes() {
        // STATE, extension 1 (SACK), then ext header [next=0, len=1], mask 0b101.
        let mut b = vec![0x21, 1, 0, 7];
        b.resize(HEADER, 0);
        b.extend_from_slice(&[0, 1, 0b101]);
        let p = Packet::decode(&b).unwrap();
        assert_eq!(p.ty, Type::State);
        assert_eq!(p.sack, Some(vec![0b101]));
        assert!(p.payload.is_empty());
        // DATA with a 3-byte mask and a payload after it.
        let mut d = vec![0x01, 1, 0, 7];
        d.resize(HEADER, 0);
        d.extend_from_slice(&[0, 3, 1, 0, 0x80, b'h', b'i']);
        let p = Packet::decode(&d).unwrap();
        assert_eq!(p.sack, Some(vec![1, 0, 0x80]));
        assert_eq!(p.payload, b"hi");
        // A zero-length mask is no mask.
        let mut z = vec![0x21, 1, 0, 7];
        z.resize(HEADER, 0);
        z.extend_from_slice(&[0, 0]);
        assert_eq!(Packet::decode(&z).unwrap().sack, None);
    }

    #[test]
    fn hostile_packets() {
        assert_eq!(Packet::decode(&[0x41; 10]), Err(PacketError::Short));
        let mut b = vec![0x01, 1, 0, 0];
        b.resize(HEADER, 0);
        assert_eq!(Packet::decode(&b), Err(PacketError::BadExtension));
        b.extend_from_slice(&[0, 200]); // length past the end
        assert_eq!(Packet::decode(&b), Err(PacketError::BadExtension));
        let mut c = vec![0x51];
        c.resize(HEADER, 0);
        assert_eq!(Packet::decode(&c), Err(PacketError::BadType(5)));
        // A chain of unknown extensions is walked and bounded by the datagram.
        let mut e = vec![0x01, 9];
        e.resize(HEADER, 0);
        e.extend_from_slice(&[9, 0, 9, 0, 0, 1, 7, b'x']);
        let p = Packet::decode(&e).unwrap();
        assert_eq!(p.payload, b"x");
    }
}
