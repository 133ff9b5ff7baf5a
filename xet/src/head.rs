//! Share keys, share ids and signed heads (docs/formats.md).
//!
//! A head is a BEP 44 mutable item: `k` (ed25519 public key), `seq`, `v` = {root, size, t} and `sig`
//! over the BEP 44 signing string (empty salt). Share id = SHA-1(public key).
//!
//! Several writers (docs/formats.md): the owner's head lists authorized writer keys in `v.w`;
//! a writer's head is its own BEP 44 item with `salt` = the share id, and `v.b` names the
//! versions of the other writers it had merged.

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
    #[error("head is signed by a key the share's owner has not authorized as a writer")]
    NotAuthorized,
}

/// Writers one share may have (the owner's head lists them within BEP 44's 1000 bytes).
pub const MAX_WRITERS: usize = 16;

/// The first 8 bytes of a writer key: how stamps and version vectors name writers.
pub type Key8 = [u8; 8];

pub fn key8(k: &[u8; 32]) -> Key8 {
    k[..8].try_into().unwrap()
}

pub fn share_id(public_key: &[u8; 32]) -> ShareId {
    Sha1::digest(public_key).into()
}

/// `v.b`: a list of `[key8, seq]`.
pub fn encode_base(base: &[(Key8, u64)]) -> OwnedValue {
    OwnedValue::List(
        base.iter()
            .map(|(k, s)| {
                OwnedValue::List(vec![
                    OwnedValue::bytes(k.to_vec()),
                    OwnedValue::Int(*s as i64),
                ])
            })
            .collect(),
    )
}

pub fn decode_base(v: &bencode::Value) -> Option<Vec<(Key8, u64)>> {
    v.as_list()?
        .iter()
        .map(|p| {
            let l = p.as_list().filter(|l| l.len() == 2)?;
            let k = l[0].as_bytes().and_then(|b| <Key8>::try_from(b).ok())?;
            let s = l[1].as_int().filter(|s| *s >= 0)?;
            Some((k, s as u64))
        })
        .collect()
}

/// The BEP 44 target of a mutable item: SHA-1(key ++ salt) (the share id when the salt is empty).
pub fn feed_id(public_key: &[u8; 32], salt: &[u8]) -> ShareId {
    let mut h = Sha1::new();
    h.update(public_key);
    h.update(salt);
    h.finalize().into()
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
    /// `w` (owner's heads): the writer keys the owner authorizes.
    pub writers: Vec<[u8; 32]>,
    /// `b` (multi-writer shares): the newest version of each other writer merged into this one.
    pub base: Vec<(Key8, u64)>,
}

impl HeadValue {
    /// A single-writer version's value.
    pub fn new(root: [u8; 32], size: u64, time: i64) -> HeadValue {
        HeadValue {
            root,
            size,
            time,
            ih: None,
            writers: Vec::new(),
            base: Vec::new(),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut d = Vec::new();
        if !self.base.is_empty() {
            let b = self
                .base
                .iter()
                .map(|(k, s)| {
                    OwnedValue::List(vec![
                        OwnedValue::bytes(k.to_vec()),
                        OwnedValue::Int(*s as i64),
                    ])
                })
                .collect();
            d.push(("b", OwnedValue::List(b)));
        }
        if let Some(ih) = self.ih {
            d.push(("ih", OwnedValue::bytes(ih.to_vec())));
        }
        d.push(("root", OwnedValue::bytes(self.root.to_vec())));
        d.push(("size", OwnedValue::Int(self.size as i64)));
        d.push(("t", OwnedValue::Int(self.time)));
        if !self.writers.is_empty() {
            let w = self
                .writers
                .iter()
                .map(|k| OwnedValue::bytes(k.to_vec()))
                .collect();
            d.push(("w", OwnedValue::List(w)));
        }
        OwnedValue::dict(d).encode()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub public_key: [u8; 32],
    /// Empty for the owner's heads; a writer's heads carry the share id (BEP 44 salt).
    pub salt: Vec<u8>,
    pub seq: u64,
    pub value: HeadValue,
    pub signature: [u8; 64],
}

/// BEP 44 signing string: `[4:salt<n>:<salt>]3:seqi<seq>e1:v<bencoded v>`.
fn signing_string(salt: &[u8], seq: u64, v: &[u8]) -> Vec<u8> {
    let mut s = Vec::new();
    if !salt.is_empty() {
        s.extend_from_slice(format!("4:salt{}:", salt.len()).as_bytes());
        s.extend_from_slice(salt);
    }
    s.extend_from_slice(format!("3:seqi{seq}e1:v").as_bytes());
    s.extend_from_slice(v);
    s
}

impl Head {
    pub fn sign(key: &SigningKey, seq: u64, value: HeadValue) -> Head {
        Head::sign_salted(key, Vec::new(), seq, value)
    }

    /// A writer's head for `share` (salt = the share id).
    pub fn sign_writer(key: &SigningKey, share: &ShareId, seq: u64, value: HeadValue) -> Head {
        Head::sign_salted(key, share.to_vec(), seq, value)
    }

    fn sign_salted(key: &SigningKey, salt: Vec<u8>, seq: u64, value: HeadValue) -> Head {
        let v = value.encode();
        let sig = key.sign(&signing_string(&salt, seq, &v));
        Head {
            public_key: key.verifying_key().to_bytes(),
            salt,
            seq,
            value,
            signature: sig.to_bytes(),
        }
    }

    /// The share an owner's head belongs to (a writer's head: its salt, checked separately).
    pub fn share_id(&self) -> ShareId {
        match self.writer_of() {
            Some(s) => s,
            None => share_id(&self.public_key),
        }
    }

    /// For a writer's head, the share it writes to.
    pub fn writer_of(&self) -> Option<ShareId> {
        self.salt.as_slice().try_into().ok()
    }

    /// Where this head's versions are kept: the share id for the owner's; for a writer's, its
    /// BEP 44 target (SHA-1 of key and salt), a "feed" of its own.
    pub fn feed_id(&self) -> ShareId {
        feed_id(&self.public_key, &self.salt)
    }

    pub fn verify(&self) -> Result<(), HeadError> {
        let vk = VerifyingKey::from_bytes(&self.public_key)
            .map_err(|_| HeadError::Malformed("public key is not a valid ed25519 point".into()))?;
        let sig = Signature::from_bytes(&self.signature);
        vk.verify(
            &signing_string(&self.salt, self.seq, &self.value.encode()),
            &sig,
        )
        .map_err(|_| HeadError::BadSignature)
    }

    /// Verifies the signature and that this is the owner's head of `share`.
    pub fn verify_for(&self, share: &ShareId) -> Result<(), HeadError> {
        if !self.salt.is_empty() || &share_id(&self.public_key) != share {
            return Err(HeadError::WrongKey);
        }
        self.verify()
    }

    /// Verifies a writer's head of `share` against the writers the owner's newest head lists.
    pub fn verify_writer(&self, share: &ShareId, owner: &Head) -> Result<(), HeadError> {
        if self.writer_of() != Some(*share) {
            return Err(HeadError::WrongKey);
        }
        if !owner.value.writers.contains(&self.public_key) {
            return Err(HeadError::NotAuthorized);
        }
        self.verify()
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut d = vec![
            ("k", OwnedValue::bytes(self.public_key.to_vec())),
            ("seq", OwnedValue::Int(self.seq as i64)),
            ("sig", OwnedValue::bytes(self.signature.to_vec())),
            (
                "v",
                bencode::decode(&self.value.encode())
                    .expect("our own encoding")
                    .to_owned_value(),
            ),
        ];
        if !self.salt.is_empty() {
            d.push(("salt", OwnedValue::bytes(self.salt.clone())));
        }
        OwnedValue::dict(d).encode()
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
        let salt = match d.get(b"salt") {
            None => Vec::new(),
            Some(x) => x
                .as_bytes()
                .filter(|s| s.len() == 20)
                .ok_or_else(|| bad("'salt' is not a 20-byte share id"))?
                .to_vec(),
        };
        let writers = match vdict.get(b"w") {
            None => Vec::new(),
            Some(x) => x
                .as_list()
                .ok_or_else(|| bad("'v.w' is not a list"))?
                .iter()
                .map(|k| k.as_bytes().and_then(|b| <[u8; 32]>::try_from(b).ok()))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| bad("'v.w' holds a key that is not 32 bytes"))?,
        };
        let base = match vdict.get(b"b") {
            None => Vec::new(),
            Some(x) => decode_base(x).ok_or_else(|| bad("'v.b' is not a list of [key8, seq]"))?,
        };
        let head = Head {
            public_key: k.try_into().unwrap(),
            salt,
            seq: seq as u64,
            value: HeadValue {
                writers,
                base,
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
        let h = Head::sign(&k, 5, HeadValue::new([9; 32], 123, 1_700_000_000));
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
    fn writer_heads_are_salted_and_authorized_by_the_owner() {
        let owner = key(1);
        let share = share_id(&owner.verifying_key().to_bytes());
        let (w, stranger) = (key(2), key(3));
        let mut v = HeadValue::new([1; 32], 1, 2);
        v.writers = vec![w.verifying_key().to_bytes()];
        v.base = vec![([5; 8], 7)];
        let oh = Head::sign(&owner, 2, v);
        assert_eq!(Head::decode(&oh.encode()).unwrap(), oh);
        let mut wv = HeadValue::new([2; 32], 3, 4);
        wv.base = vec![(key8(&oh.public_key), 2)];
        let wh = Head::sign_writer(&w, &share, 1, wv.clone());
        let d = Head::decode(&wh.encode()).unwrap();
        assert_eq!(d, wh);
        d.verify_writer(&share, &oh).unwrap();
        assert_eq!(d.share_id(), share);
        assert_eq!(d.feed_id(), feed_id(&w.verifying_key().to_bytes(), &share));
        // A writer's head is never the owner's.
        assert_eq!(d.verify_for(&share), Err(HeadError::WrongKey));
        // A key the owner did not list makes nothing any node accepts.
        let sh = Head::sign_writer(&stranger, &share, 1, wv.clone());
        assert_eq!(sh.verify_writer(&share, &oh), Err(HeadError::NotAuthorized));
        // The salt is signed: moving a writer's head to another share breaks it.
        let mut moved = wh.clone();
        moved.salt = vec![9; 20];
        assert_eq!(moved.verify(), Err(HeadError::BadSignature));
        // An owner's head is not a writer's.
        assert_eq!(oh.verify_writer(&share, &oh), Err(HeadError::WrongKey));
    }

    #[test]
    fn bep44_signing_string_shape() {
        assert_eq!(signing_string(b"", 1, b"d1:xi1ee"), b"3:seqi1e1:vd1:xi1ee");
        assert_eq!(
            signing_string(b"foobar", 1, b"12:Hello World!"),
            b"4:salt6:foobar3:seqi1e1:v12:Hello World!"
        );
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
