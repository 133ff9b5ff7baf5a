//! The `ccbt_xet` extension's messages (docs/protocol.md): a bencoded header dictionary, then
//! (for `data`) the raw bytes, whose length the header states, so a truncated message is
//! detected. Pure codec; [`crate::net`] runs it.

use bytes::Bytes;
use ccbt_core::bencode::{self, OwnedValue, Value};

/// Largest reply payload accepted (a max-size chunk).
pub const MAX_REPLY: usize = 128 * 1024;

/// What a hash names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Chunk,
    Node,
    /// Either (the asker does not know yet).
    Any,
}

impl Kind {
    pub(crate) fn code(self) -> &'static str {
        match self {
            Kind::Chunk => "c",
            Kind::Node => "n",
            Kind::Any => "x",
        }
    }
    fn from_code(b: &[u8]) -> Option<Kind> {
        match b {
            b"c" => Some(Kind::Chunk),
            b"n" => Some(Kind::Node),
            b"x" => Some(Kind::Any),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    Head(Vec<u8>),
    Req {
        id: u32,
        kind: Kind,
        hash: [u8; 32],
    },
    Data {
        id: u32,
        kind: Kind,
        data: Bytes,
    },
    NotFound {
        id: u32,
    },
    HaveVersion {
        seq: u64,
    },
    /// Asks for the signed head of version `seq` (an old version: `ccbt mount ID@SEQ`,
    /// `.ccbt/history/SEQ`). Answered by `HeadRep` or `NotFound`.
    HeadReq {
        id: u32,
        seq: u64,
    },
    HeadRep {
        id: u32,
        head: Vec<u8>,
    },
    /// A message type this version does not know: ignored (and counted), so the protocol can
    /// grow as BEP 10 intends. A malformed message of a known type still bans.
    Unknown(Vec<u8>),
}

impl Msg {
    pub fn encode(&self) -> Bytes {
        let (hdr, data): (OwnedValue, Option<&Bytes>) = match self {
            Msg::Head(h) => (
                OwnedValue::dict([
                    ("t", OwnedValue::bytes("head")),
                    ("h", OwnedValue::bytes(h.clone())),
                ]),
                None,
            ),
            Msg::Req { id, kind, hash } => (
                OwnedValue::dict([
                    ("t", OwnedValue::bytes("req")),
                    ("id", OwnedValue::Int(*id as i64)),
                    ("k", OwnedValue::bytes(kind.code())),
                    ("h", OwnedValue::bytes(hash.to_vec())),
                ]),
                None,
            ),
            Msg::Data { id, kind, data } => (
                OwnedValue::dict([
                    ("t", OwnedValue::bytes("data")),
                    ("id", OwnedValue::Int(*id as i64)),
                    ("k", OwnedValue::bytes(kind.code())),
                    ("len", OwnedValue::Int(data.len() as i64)),
                ]),
                Some(data),
            ),
            Msg::NotFound { id } => (
                OwnedValue::dict([
                    ("t", OwnedValue::bytes("nf")),
                    ("id", OwnedValue::Int(*id as i64)),
                ]),
                None,
            ),
            Msg::HaveVersion { seq } => (
                OwnedValue::dict([
                    ("t", OwnedValue::bytes("hv")),
                    ("seq", OwnedValue::Int(*seq as i64)),
                ]),
                None,
            ),
            Msg::HeadReq { id, seq } => (
                OwnedValue::dict([
                    ("t", OwnedValue::bytes("hreq")),
                    ("id", OwnedValue::Int(*id as i64)),
                    ("seq", OwnedValue::Int(*seq as i64)),
                ]),
                None,
            ),
            Msg::HeadRep { id, head } => (
                OwnedValue::dict([
                    ("t", OwnedValue::bytes("hrep")),
                    ("id", OwnedValue::Int(*id as i64)),
                    ("h", OwnedValue::bytes(head.clone())),
                ]),
                None,
            ),
            Msg::Unknown(t) => (
                OwnedValue::dict([("t", OwnedValue::bytes(t.clone()))]),
                None,
            ),
        };
        let mut out = hdr.encode();
        if let Some(d) = data {
            out.extend_from_slice(d);
        }
        Bytes::from(out)
    }

    pub fn decode(b: Bytes) -> Result<Msg, String> {
        let (v, used) = bencode::decode_prefix(&b).map_err(|e| format!("bad header: {e}"))?;
        let d = v.as_dict().ok_or("header is not a dictionary")?;
        let t = d
            .get(b"t")
            .and_then(Value::as_bytes)
            .ok_or("no message type")?;
        let int = |k: &[u8]| {
            d.get(k)
                .and_then(Value::as_int)
                .ok_or_else(|| format!("no '{}'", String::from_utf8_lossy(k)))
        };
        let id = || int(b"id").and_then(|i| u32::try_from(i).map_err(|_| "bad id".to_string()));
        let rest = b.slice(used..);
        let msg = match t {
            b"head" => Msg::Head(
                d.get(b"h")
                    .and_then(Value::as_bytes)
                    .ok_or("head without 'h'")?
                    .to_vec(),
            ),
            b"req" => Msg::Req {
                id: id()?,
                kind: d
                    .get(b"k")
                    .and_then(Value::as_bytes)
                    .and_then(Kind::from_code)
                    .ok_or("bad kind")?,
                hash: d
                    .get(b"h")
                    .and_then(Value::as_bytes)
                    .and_then(|h| h.try_into().ok())
                    .ok_or("bad hash")?,
            },
            b"data" => {
                let len = int(b"len")?;
                if len < 0 || len as usize > MAX_REPLY {
                    return Err(format!("reply of {len} bytes exceeds {MAX_REPLY}"));
                }
                if rest.len() != len as usize {
                    return Err(format!(
                        "truncated data: header says {len} bytes, {} present",
                        rest.len()
                    ));
                }
                let kind = d
                    .get(b"k")
                    .and_then(Value::as_bytes)
                    .and_then(Kind::from_code)
                    .ok_or("bad kind")?;
                return Ok(Msg::Data {
                    id: id()?,
                    kind,
                    data: rest,
                });
            }
            b"nf" => Msg::NotFound { id: id()? },
            b"hv" => Msg::HaveVersion {
                seq: int(b"seq")?.max(0) as u64,
            },
            b"hreq" => Msg::HeadReq {
                id: id()?,
                seq: int(b"seq")?.max(0) as u64,
            },
            b"hrep" => Msg::HeadRep {
                id: id()?,
                head: d
                    .get(b"h")
                    .and_then(Value::as_bytes)
                    .ok_or("hrep without 'h'")?
                    .to_vec(),
            },
            other => return Ok(Msg::Unknown(other.to_vec())),
        };
        if !rest.is_empty() {
            return Err("trailing bytes after the header".into());
        }
        Ok(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_vectors() {
        let cases = vec![
            Msg::Head(b"d1:ki1ee".to_vec()),
            Msg::Req {
                id: 7,
                kind: Kind::Any,
                hash: [3; 32],
            },
            Msg::Data {
                id: 7,
                kind: Kind::Chunk,
                data: Bytes::from_static(b"hello"),
            },
            Msg::NotFound { id: 9 },
            Msg::HaveVersion { seq: 4 },
            Msg::HeadReq { id: 3, seq: 12 },
            Msg::HeadRep {
                id: 3,
                head: b"d1:ki1ee".to_vec(),
            },
        ];
        for m in cases {
            assert_eq!(Msg::decode(m.encode()).unwrap(), m);
        }
        let d = Msg::Data {
            id: 1,
            kind: Kind::Node,
            data: Bytes::from_static(b"abc"),
        }
        .encode();
        assert_eq!(&d[..], b"d2:idi1e1:k1:n3:leni3e1:t4:dataeabc");
        // Truncated data, oversized claims, junk.
        assert!(Msg::decode(d.slice(..d.len() - 1))
            .unwrap_err()
            .contains("truncated"));
        let big = format!("d2:idi1e1:k1:c3:leni{}e1:t4:datae", MAX_REPLY + 1);
        assert!(Msg::decode(Bytes::from(big))
            .unwrap_err()
            .contains("exceeds"));
        // A type from a later version is not an error (and may carry data after its header).
        assert_eq!(
            Msg::decode(Bytes::from_static(b"d1:t3:zzz1:xi1eeDATA")).unwrap(),
            Msg::Unknown(b"zzz".to_vec())
        );
        assert!(Msg::decode(Bytes::from_static(b"d1:t3:reqe")).is_err());
        assert!(Msg::decode(Bytes::from_static(b"d1:t2:nf2:idi1eeXX")).is_err());
        assert!(Msg::decode(Bytes::from_static(b"garbage")).is_err());
    }
}
