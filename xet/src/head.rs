//! Share keys, share ids and signed heads (docs/formats.md).
//!
//! A head is a BEP 44 mutable item: `k` (ed25519 public key), `seq`, `v` = {root, size, t} and `sig`
//! over the BEP 44 signing string (empty salt). Share id = SHA-1(public key).

use ccbt_core::bencode::{self, OwnedValue};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use sha1::{Digest, Sha1};

pub type ShareId = [u8; 20];

/// BEP 44 caps `v` at 1000 bytes.
pub const MAX_V_LEN: usize = 1000;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeadError {
    #[error("malformed head: {0}")]
    Malformed(String),
    #[error("head signature does not verify")]
    BadSignature,
    #[error("head is signed by another key (not this share's)")]
    WrongKey,
}

pub fn share_id(public_key: &[u8; 32]) -> ShareId {
    Sha1::digest(public_key).into()
}

pub fn share_id_hex(id: &ShareId) -> String {
    ccbt_core::encoding::to_hex(id)
}

/// Parses a share id: 40 hex characters, or a `magnet:?xs=urn:btpk:` link (BEP 46).
pub fn parse_share_id(s: &str) -> Option<ShareId> {
    if s.starts_with("magnet:") {
        let m = ccbt_core::Magnet::parse(s).ok()?;
        return m.public_key.map(|k| share_id(&k));
    }
    ccbt_core::encoding::hex_array(s)
}

/// The head's value: which listing, how big, when; with `ccbt publish --torrent`, also the v1
/// info-hash of the version as a classic torrent (BEP 46's `ih`, so BEP 46 consumers can fetch
/// it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeadValue {
    pub root: [u8; 32],
    pub size: u64,
    pub time: i64,
    pub ih: Option<[u8; 20]>,
}

impl HeadValue {
    pub fn encode(&self) -> Vec<u8> {
        let mut d = Vec::new();
        if let Some(ih) = self.ih {
            d.push(("ih", OwnedValue::bytes(ih.to_vec())));
        }
        d.push(("root", OwnedValue::bytes(self.root.to_vec())));
        d.push(("size", OwnedValue::Int(self.size as i64)));
        d.push(("t", OwnedValue::Int(self.time)));
        OwnedValue::dict(d).encode()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub public_key: [u8; 32],
    pub seq: u64,
    pub value: HeadValue,
    pub signature: [u8; 64],
}

/// BEP 44 signing string with an empty salt: `3:seqi<seq>e1:v<bencoded v>`.
fn signing_string(seq: u64, v: &[u8]) -> Vec<u8> {
    let mut s = format!("3:seqi{seq}e1:v").into_bytes();
    s.extend_from_slice(v);
    s
}

impl Head {
    pub fn sign(key: &SigningKey, seq: u64, value: HeadValue) -> Head {
        let v = value.encode();
        let sig = key.sign(&signing_string(seq, &v));
        Head {
            public_key: key.verifying_key().to_bytes(),
            seq,
            value,
            signature: sig.to_bytes(),
        }
    }

    pub fn share_id(&self) -> ShareId {
        share_id(&self.public_key)
    }

    pub fn verify(&self) -> Result<(), HeadError> {
        let vk = VerifyingKey::from_bytes(&self.public_key)
            .map_err(|_| HeadError::Malformed("public key is not a valid ed25519 point".into()))?;
        let sig = Signature::from_bytes(&self.signature);
        vk.verify(&signing_string(self.seq, &self.value.encode()), &sig)
            .map_err(|_| HeadError::BadSignature)
    }

    /// Verifies the signature and that the head belongs to `share`.
    pub fn verify_for(&self, share: &ShareId) -> Result<(), HeadError> {
        if &self.share_id() != share {
            return Err(HeadError::WrongKey);
        }
        self.verify()
    }

    pub fn encode(&self) -> Vec<u8> {
        OwnedValue::dict([
            ("k", OwnedValue::bytes(self.public_key.to_vec())),
            ("seq", OwnedValue::Int(self.seq as i64)),
            ("sig", OwnedValue::bytes(self.signature.to_vec())),
            (
                "v",
                bencode::decode(&self.value.encode())
                    .expect("our own encoding")
                    .to_owned_value(),
            ),
        ])
        .encode()
    }

    /// Decodes (without verifying; call [`Head::verify`]).
    pub fn decode(b: &[u8]) -> Result<Head, HeadError> {
        let bad = |m: &str| HeadError::Malformed(m.to_string());
        let v = bencode::decode(b).map_err(|e| HeadError::Malformed(e.to_string()))?;
        let d = v.as_dict().ok_or_else(|| bad("not a dictionary"))?;
        let fixed = |key: &[u8], n: usize| -> Result<&[u8], HeadError> {
            d.get(key)
                .and_then(|x| x.as_bytes())
                .filter(|x| x.len() == n)
                .ok_or_else(|| {
                    HeadError::Malformed(format!(
                        "'{}' missing or not {n} bytes",
                        String::from_utf8_lossy(key)
                    ))
                })
        };
        let k = fixed(b"k", 32)?;
        let sig = fixed(b"sig", 64)?;
        let seq = d
            .get(b"seq")
            .and_then(|x| x.as_int())
            .filter(|s| *s >= 0)
            .ok_or_else(|| bad("'seq' missing or negative"))?;
        let vd = d.get(b"v").ok_or_else(|| bad("no 'v'"))?;
        let vdict = vd.as_dict().ok_or_else(|| bad("'v' is not a dictionary"))?;
        if vdict.raw.len() > MAX_V_LEN {
            return Err(bad("'v' longer than 1000 bytes"));
        }
        let root = vdict
            .get(b"root")
            .and_then(|x| x.as_bytes())
            .filter(|x| x.len() == 32)
            .ok_or_else(|| bad("'v.root' missing or not 32 bytes"))?;
        let size = vdict
            .get(b"size")
            .and_then(|x| x.as_int())
            .filter(|s| *s >= 0)
            .ok_or_else(|| bad("'v.size' missing or negative"))?;
        let t = vdict
            .get(b"t")
            .and_then(|x| x.as_int())
            .ok_or_else(|| bad("'v.t' missing"))?;
        let head = Head {
            public_key: k.try_into().unwrap(),
            seq: seq as u64,
            value: HeadValue {
                root: root.try_into().unwrap(),
                size: size as u64,
                time: t,
                ih: match vdict.get(b"ih") {
                    None => None,
                    Some(x) => Some(
                        x.as_bytes()
                            .and_then(|b| <[u8; 20]>::try_from(b).ok())
                            .ok_or_else(|| bad("'v.ih' is not 20 bytes"))?,
                    ),
                },
            },
            signature: sig.try_into().unwrap(),
        };
        // The value must be exactly what we would sign (no extra keys that the signature skips).
        if head.value.encode() != vdict.raw {
            return Err(bad("'v' has unexpected fields"));
        }
        Ok(head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> SigningKey {
        SigningKey::from_bytes(&[b; 32])
    }

    #[test]
    fn sign_verify_roundtrip() {
        let k = key(1);
        let h = Head::sign(
            &k,
            5,
            HeadValue {
                root: [9; 32],
                size: 123,
                time: 1_700_000_000,
                ih: None,
            },
        );
        h.verify().unwrap();
        let d = Head::decode(&h.encode()).unwrap();
        assert_eq!(d, h);
        d.verify_for(&share_id(&k.verifying_key().to_bytes()))
            .unwrap();
        assert_eq!(
            d.verify_for(&share_id(&key(2).verifying_key().to_bytes())),
            Err(HeadError::WrongKey)
        );
        let mut forged = h.clone();
        forged.seq = 6;
        assert_eq!(forged.verify(), Err(HeadError::BadSignature));
        let mut forged = h.clone();
        forged.value.size = 1;
        assert_eq!(forged.verify(), Err(HeadError::BadSignature));
        // BEP 46: a head naming a torrent; `ih` is signed like the rest.
        let mut v = h.value.clone();
        v.ih = Some([7; 20]);
        let t = Head::sign(&k, 6, v);
        assert!(t.value.encode().starts_with(b"d2:ih20:"));
        let d = Head::decode(&t.encode()).unwrap();
        assert_eq!(d, t);
        d.verify().unwrap();
        let mut forged = t;
        forged.value.ih = Some([8; 20]);
        assert_eq!(forged.verify(), Err(HeadError::BadSignature));
    }

    #[test]
    fn bep44_signing_string_shape() {
        assert_eq!(signing_string(1, b"d1:xi1ee"), b"3:seqi1e1:vd1:xi1ee");
    }

    #[test]
    fn share_id_forms() {
        let pk = key(3).verifying_key().to_bytes();
        let id = share_id(&pk);
        let hex = share_id_hex(&id);
        assert_eq!(parse_share_id(&hex), Some(id));
        let m = format!("magnet:?xs=urn:btpk:{}", ccbt_core::encoding::to_hex(&pk));
        assert_eq!(parse_share_id(&m), Some(id));
        assert_eq!(parse_share_id("nope"), None);
    }
}
