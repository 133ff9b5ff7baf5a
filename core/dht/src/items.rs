//! BEP 44 items: immutable values (target = SHA-1 of the bencoded value) and mutable ones (target
//! = SHA-1 of the public key and salt, signed with ed25519 over the salt, `seq` and value). Our
//! own store of other nodes' items is bounded in count and bytes, and items expire.

use crate::krpc::{MutablePut, MAX_ITEM, MAX_SALT};
use crate::Id;
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use sha1::{Digest, Sha1};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// An item not put again for this long is dropped (BEP 44: about two hours).
pub const ITEM_TTL: Duration = Duration::from_secs(2 * 60 * 60);
pub const MAX_ITEMS: usize = 1000;
pub const MAX_ITEM_BYTES: usize = 1 << 20;

/// Why a put was refused, as BEP 44 error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutError {
    /// 205: the value is over 1000 bytes.
    TooBig = 205,
    /// 206: the signature does not verify.
    BadSignature = 206,
    /// 207: the salt is over 64 bytes.
    SaltTooBig = 207,
    /// 301: compare-and-swap mismatch.
    CasMismatch = 301,
    /// 302: `seq` is lower than the stored one.
    SeqTooLow = 302,
}

impl PutError {
    pub fn message(self) -> &'static str {
        match self {
            PutError::TooBig => "message (v field) too big",
            PutError::BadSignature => "invalid signature",
            PutError::SaltTooBig => "salt (salt field) too big",
            PutError::CasMismatch => "the CAS hash mismatched, re-read value and try again",
            PutError::SeqTooLow => "sequence number less than current",
        }
    }
}

pub fn immutable_target(v: &[u8]) -> Id {
    Sha1::digest(v).into()
}

pub fn mutable_target(k: &[u8; 32], salt: &[u8]) -> Id {
    let mut h = Sha1::new();
    h.update(k);
    h.update(salt);
    h.finalize().into()
}

/// The bytes a mutable item's signature covers (BEP 44).
pub fn signing_bytes(salt: &[u8], seq: i64, v: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(v.len() + salt.len() + 32);
    if !salt.is_empty() {
        b.extend_from_slice(format!("4:salt{}:", salt.len()).as_bytes());
        b.extend_from_slice(salt);
    }
    b.extend_from_slice(format!("3:seqi{seq}e1:v").as_bytes());
    b.extend_from_slice(v);
    b
}

/// Checks a mutable item's signature.
pub fn verify(m: &MutablePut, v: &[u8]) -> bool {
    let Ok(vk) = VerifyingKey::from_bytes(&m.k) else {
        return false;
    };
    vk.verify(
        &signing_bytes(&m.salt, m.seq, v),
        &Signature::from_bytes(&m.sig),
    )
    .is_ok()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub v: Vec<u8>,
    /// Mutable items: key, salt, seq, signature.
    pub mutable: Option<MutablePut>,
    stored: Instant,
}

#[derive(Default)]
pub struct ItemStore {
    items: HashMap<Id, Item>,
    bytes: usize,
}

impl ItemStore {
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn get(&mut self, target: &Id, now: Instant) -> Option<&Item> {
        if self
            .items
            .get(target)
            .is_some_and(|i| now.duration_since(i.stored) >= ITEM_TTL)
        {
            let gone = self.items.remove(target).expect("present");
            self.bytes -= gone.v.len();
        }
        self.items.get(target)
    }

    /// Validates and stores a put; returns the target it was stored under.
    pub fn put(
        &mut self,
        v: Vec<u8>,
        mutable: Option<MutablePut>,
        now: Instant,
    ) -> Result<Id, PutError> {
        if v.len() > MAX_ITEM {
            return Err(PutError::TooBig);
        }
        let target = match &mutable {
            None => immutable_target(&v),
            Some(m) => {
                if m.salt.len() > MAX_SALT {
                    return Err(PutError::SaltTooBig);
                }
                if !verify(m, &v) {
                    return Err(PutError::BadSignature);
                }
                let t = mutable_target(&m.k, &m.salt);
                if let Some(old) = self.get(&t, now).and_then(|i| i.mutable.as_ref()) {
                    if m.cas.is_some_and(|c| c != old.seq) {
                        return Err(PutError::CasMismatch);
                    }
                    if m.seq < old.seq {
                        return Err(PutError::SeqTooLow);
                    }
                }
                t
            }
        };
        if let Some(old) = self.items.remove(&target) {
            self.bytes -= old.v.len();
        }
        // Full: drop expired items, then the oldest, until this one fits.
        self.items
            .retain(|_, i| now.duration_since(i.stored) < ITEM_TTL);
        self.bytes = self.items.values().map(|i| i.v.len()).sum();
        while self.items.len() >= MAX_ITEMS || self.bytes + v.len() > MAX_ITEM_BYTES {
            let oldest = *self
                .items
                .iter()
                .min_by_key(|(_, i)| i.stored)
                .map(|(k, _)| k)
                .expect("non-empty when full");
            let gone = self.items.remove(&oldest).expect("present");
            self.bytes -= gone.v.len();
        }
        self.bytes += v.len();
        self.items.insert(
            target,
            Item {
                v,
                mutable,
                stored: now,
            },
        );
        Ok(target)
    }
}

#[cfg(test)]
impl Item {
    /// A mutable item with a signature that does not verify (what a hostile node would store).
    pub fn forged_for_test(v: Vec<u8>, k: [u8; 32], seq: i64) -> Item {
        Item {
            v,
            mutable: Some(MutablePut {
                k,
                salt: Vec::new(),
                seq,
                sig: [7; 64],
                cas: None,
            }),
            stored: Instant::now(),
        }
    }
}

#[cfg(test)]
impl ItemStore {
    /// Stores without any check (a hostile node's store).
    pub fn insert_for_test(&mut self, target: Id, mut item: Item, now: Instant) {
        item.stored = now;
        self.bytes += item.v.len();
        self.items.insert(target, item);
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn bep46_targets() {
        let k: [u8; 32] = (0..32)
            .map(|i| {
                u8::from_str_radix(
                    &"8543d3e6115f0f98c944077a4493dcd543e49c739fd998550a1f614ab36ed63e"
                        [2 * i..2 * i + 2],
                    16,
                )
                .unwrap()
            })
            .collect::<Vec<u8>>()
            .try_into()
            .unwrap();
        let hex = |t: Id| t.iter().map(|b| format!("{b:02x}")).collect::<String>();
        assert_eq!(
            hex(mutable_target(&k, b"")),
            "cc3f9d90b572172053626f9980ce261a850d050b"
        );
        assert_eq!(
            hex(mutable_target(&k, b"n")),
            "59ee7c2cb9b4f7eb1986ee2d18fd2fdb8a56554f"
        );
    }

    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

    fn hex<const N: usize>(s: &str) -> [u8; N] {
        let v: Vec<u8> = (0..N)
            .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        v.try_into().unwrap()
    }

    /// BEP 44's test vectors: two mutable items (without and with salt) and an immutable one.
    #[test]
    fn bep44_vectors() {
        let k = hex::<32>("77ff84905a91936367c01360803104f92432fcd904a43511876df5cdf3e7e548");
        let v = b"12:Hello World!".to_vec();
        assert_eq!(
            signing_bytes(b"", 1, &v),
            b"3:seqi1e1:v12:Hello World!".to_vec()
        );
        let m1 = MutablePut {
            k,
            salt: Vec::new(),
            seq: 1,
            sig: hex::<64>("305ac8aeb6c9c151fa120f120ea2cfb923564e11552d06a5d856091e5e853cff1260d3f39e4999684aa92eb73ffd136e6f4f3ecbfda0ce53a1608ecd7ae21f01"),
            cas: None,
        };
        assert!(verify(&m1, &v));
        assert!(!verify(&m1, b"12:Hello World?"));
        assert_eq!(
            mutable_target(&k, b""),
            hex::<20>("4a533d47ec9c7d95b1ad75f576cffc641853b750")
        );
        assert_eq!(
            signing_bytes(b"foobar", 1, &v),
            b"4:salt6:foobar3:seqi1e1:v12:Hello World!".to_vec()
        );
        let m2 = MutablePut {
            k,
            salt: b"foobar".to_vec(),
            seq: 1,
            sig: hex::<64>("6834284b6b24c3204eb2fea824d82f88883a3d95e8b4a21b8c0ded553d17d17ddf9a8a7104b1258f30bed3787e6cb896fca78c58f8e03b5f18f14951a87d9a08"),
            cas: None,
        };
        assert!(verify(&m2, &v));
        assert_eq!(
            mutable_target(&k, b"foobar"),
            hex::<20>("411eba73b6f087ca51a3795d9c8c938d365e32c1")
        );
        assert_eq!(
            immutable_target(&v),
            hex::<20>("e5f96f6f38320f0f33959cb4d3d656452117aadb")
        );
        let mut s = ItemStore::default();
        assert_eq!(
            s.put(v.clone(), Some(m2), Instant::now()),
            Ok(hex::<20>("411eba73b6f087ca51a3795d9c8c938d365e32c1"))
        );
    }

    #[test]
    fn puts_follow_bep44_rules_and_the_store_is_bounded() {
        let now = Instant::now();
        let sk = SigningKey::from_bytes(&[5; 32]);
        let signed = |seq: i64, v: &[u8], cas: Option<i64>| MutablePut {
            k: sk.verifying_key().to_bytes(),
            salt: Vec::new(),
            seq,
            sig: sk.sign(&signing_bytes(b"", seq, v)).to_bytes(),
            cas,
        };
        let mut s = ItemStore::default();
        let t = s
            .put(b"1:a".to_vec(), Some(signed(2, b"1:a", None)), now)
            .unwrap();
        assert_eq!(s.get(&t, now).unwrap().v, b"1:a");
        assert_eq!(
            s.put(b"1:b".to_vec(), Some(signed(1, b"1:b", None)), now),
            Err(PutError::SeqTooLow)
        );
        assert_eq!(
            s.put(b"1:b".to_vec(), Some(signed(3, b"1:b", Some(1))), now),
            Err(PutError::CasMismatch)
        );
        let mut forged = signed(9, b"1:c", None);
        forged.seq = 10;
        assert_eq!(
            s.put(b"1:c".to_vec(), Some(forged), now),
            Err(PutError::BadSignature)
        );
        assert!(s
            .put(b"1:b".to_vec(), Some(signed(3, b"1:b", Some(2))), now)
            .is_ok());
        assert_eq!(
            s.put(vec![b'x'; MAX_ITEM + 1], None, now),
            Err(PutError::TooBig)
        );
        for i in 0..(MAX_ITEMS + 20) {
            let v = format!("i{i}e").into_bytes();
            s.put(v, None, now + Duration::from_millis(i as u64))
                .unwrap();
        }
        assert_eq!(s.len(), MAX_ITEMS);
        assert!(s.get(&t, now + ITEM_TTL * 2).is_none());
    }
}
