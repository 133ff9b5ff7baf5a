//! Message Stream Encryption / Protocol Encryption (MSE/PE), the obfuscation every major client
//! speaks: a Diffie-Hellman exchange (768-bit prime, generator 2), the info-hash as a shared
//! secret (SKEY) so an observer cannot tell which torrent, then RC4 (first 1 KiB of keystream
//! discarded) or plaintext for the rest of the stream. Pure: key agreement, key derivation and
//! the handshake's fixed parts; the session's transport drives it over a socket.
//!
//! The exchange, A dialling B:
//! 1. A→B `Ya`, PadA; 2. B→A `Yb`, PadB;
//! 3. A→B `HASH("req1", S)`, `HASH("req2", SKEY) ^ HASH("req3", S)`,
//!    RC4(VC, crypto_provide, len(PadC), PadC, len(IA)), RC4(IA);
//! 4. B→A RC4(VC, crypto_select, len(PadD), PadD), then the payload in the selected method.

use num_bigint::BigUint;
use rc4::{consts::U20, KeyInit, Rc4, StreamCipher};
use sha1::{Digest, Sha1};

/// The prime all MSE implementations share (it is not RFC 2409's group 1, though close).
const P_HEX: &str = "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A63A36210000000000090563";
/// Bytes in a public key (and in S).
pub const KEY_LEN: usize = 96;
/// Random padding after a public key, at most.
pub const MAX_PAD: usize = 512;
/// The verification constant: 8 zero bytes, encrypted.
pub const VC: [u8; 8] = [0; 8];
pub const CRYPTO_PLAIN: u32 = 0x01;
pub const CRYPTO_RC4: u32 = 0x02;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MseError {
    #[error("peer sent an invalid encryption key")]
    BadKey,
    #[error("peer's encrypted handshake did not verify")]
    BadVc,
    #[error("peer's encrypted handshake names no torrent we serve")]
    UnknownTorrent,
    #[error("no encryption method in common (peer offers {0:#x})")]
    NoCommonMethod(u32),
    #[error("peer's encrypted handshake padding is too long")]
    BadPad,
}

/// Our side of the key exchange.
pub struct Dh {
    private: BigUint,
    pub public: [u8; KEY_LEN],
}

fn prime() -> BigUint {
    BigUint::parse_bytes(P_HEX.as_bytes(), 16).expect("a valid constant")
}

fn to_key(n: &BigUint) -> [u8; KEY_LEN] {
    let b = n.to_bytes_be();
    let mut out = [0u8; KEY_LEN];
    out[KEY_LEN - b.len()..].copy_from_slice(&b);
    out
}

impl Dh {
    /// A key pair from 160 random bits (the spec's minimum).
    pub fn new(secret: [u8; 20]) -> Dh {
        let private = BigUint::from_bytes_be(&secret);
        let public = to_key(&BigUint::from(2u32).modpow(&private, &prime()));
        Dh { private, public }
    }

    /// The shared secret S from the peer's public key. Keys of 0, 1 and P-1 (or above) would
    /// give a predictable S: refused.
    pub fn shared(&self, theirs: &[u8; KEY_LEN]) -> Result<[u8; KEY_LEN], MseError> {
        let p = prime();
        let y = BigUint::from_bytes_be(theirs);
        if y <= BigUint::from(1u32) || y >= &p - 1u32 {
            return Err(MseError::BadKey);
        }
        Ok(to_key(&y.modpow(&self.private, &p)))
    }
}

/// SHA-1 of the concatenated parts (the spec's HASH).
pub fn hash(parts: &[&[u8]]) -> [u8; 20] {
    let mut h = Sha1::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// What A sends first after the keys: HASH("req1", S).
pub fn req1(s: &[u8; KEY_LEN]) -> [u8; 20] {
    hash(&[b"req1", s])
}

/// HASH("req2", SKEY) ^ HASH("req3", S): names the torrent without showing its hash.
pub fn req23(s: &[u8; KEY_LEN], skey: &[u8; 20]) -> [u8; 20] {
    let (a, b) = (hash(&[b"req2", skey]), hash(&[b"req3", s]));
    std::array::from_fn(|i| a[i] ^ b[i])
}

/// B's side: from the received `req23`, the HASH("req2", SKEY) to look SKEY up by.
pub fn req2_of(s: &[u8; KEY_LEN], req23: &[u8; 20]) -> [u8; 20] {
    let b = hash(&[b"req3", s]);
    std::array::from_fn(|i| req23[i] ^ b[i])
}

/// HASH("req2", SKEY) for an info-hash we serve (B keeps these to look up).
pub fn req2(skey: &[u8; 20]) -> [u8; 20] {
    hash(&[b"req2", skey])
}

/// One direction's RC4 keystream, with the first 1024 bytes discarded.
pub struct Cipher(Rc4<U20>);

impl Cipher {
    fn new(key: [u8; 20]) -> Cipher {
        let mut c = Rc4::<U20>::new(&key.into());
        let mut discard = [0u8; 1024];
        c.apply_keystream(&mut discard);
        Cipher(c)
    }

    /// Encrypts or decrypts in place (RC4 is its own inverse).
    pub fn apply(&mut self, data: &mut [u8]) {
        self.0.apply_keystream(data);
    }
}

impl std::fmt::Debug for Cipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cipher")
    }
}

/// The two ciphers of a connection: (what we send, what we receive). A encrypts with keyA and
/// B with keyB.
pub fn ciphers(s: &[u8; KEY_LEN], skey: &[u8; 20], initiator: bool) -> (Cipher, Cipher) {
    let a = Cipher::new(hash(&[b"keyA", s, skey]));
    let b = Cipher::new(hash(&[b"keyB", s, skey]));
    if initiator {
        (a, b)
    } else {
        (b, a)
    }
}

/// Encryption policy (`[network] encryption`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// Plaintext only: encrypted handshakes are refused.
    Disable,
    /// Dial with an encrypted handshake (offering RC4 and plaintext after it), accept both.
    #[default]
    Prefer,
    /// RC4 only, both ways: plaintext peers are refused.
    Require,
}

impl Policy {
    pub fn parse(s: &str) -> Option<Policy> {
        match s {
            "disable" | "disabled" => Some(Policy::Disable),
            "prefer" | "enabled" => Some(Policy::Prefer),
            "require" | "required" | "forced" => Some(Policy::Require),
            _ => None,
        }
    }

    /// What we offer when dialling.
    pub fn provide(self) -> u32 {
        match self {
            Policy::Require => CRYPTO_RC4,
            _ => CRYPTO_RC4 | CRYPTO_PLAIN,
        }
    }

    /// What we pick from a dialler's offer. `Require` takes RC4 only. `Prefer` takes plaintext
    /// when offered, as libtorrent does by default: the handshake is still obfuscated (a
    /// throttling middlebox cannot match it), and the payload costs no RC4; a peer that offers
    /// RC4 alone gets RC4.
    pub fn select(self, provided: u32) -> Result<u32, MseError> {
        let rc4 = provided & CRYPTO_RC4 != 0;
        let plain = provided & CRYPTO_PLAIN != 0;
        match self {
            Policy::Require if rc4 => Ok(CRYPTO_RC4),
            Policy::Prefer | Policy::Disable if plain => Ok(CRYPTO_PLAIN),
            Policy::Prefer | Policy::Disable if rc4 => Ok(CRYPTO_RC4),
            _ => Err(MseError::NoCommonMethod(provided)),
        }
    }
}

/// A's step 3 after req1 and req23: RC4(VC, crypto_provide, len(PadC) = 0, len(IA) = 0).
pub fn initiator_header(provide: u32, tx: &mut Cipher) -> Vec<u8> {
    let mut v = Vec::with_capacity(16);
    v.extend_from_slice(&VC);
    v.extend_from_slice(&provide.to_be_bytes());
    v.extend_from_slice(&0u16.to_be_bytes());
    v.extend_from_slice(&0u16.to_be_bytes());
    tx.apply(&mut v);
    v
}

/// B's step 4: RC4(VC, crypto_select, len(PadD) = 0).
pub fn responder_header(select: u32, tx: &mut Cipher) -> Vec<u8> {
    let mut v = Vec::with_capacity(14);
    v.extend_from_slice(&VC);
    v.extend_from_slice(&select.to_be_bytes());
    v.extend_from_slice(&0u16.to_be_bytes());
    tx.apply(&mut v);
    v
}

/// Where `needle` starts in `hay`, if it does.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sides_agree_on_the_secret_and_the_streams() {
        let a = Dh::new([1; 20]);
        let b = Dh::new([2; 20]);
        let sa = a.shared(&b.public).unwrap();
        let sb = b.shared(&a.public).unwrap();
        assert_eq!(sa, sb);
        let skey = [7u8; 20];
        let (mut a_tx, mut a_rx) = ciphers(&sa, &skey, true);
        let (mut b_tx, mut b_rx) = ciphers(&sb, &skey, false);
        let mut m = b"hello from A".to_vec();
        a_tx.apply(&mut m);
        assert_ne!(&m, b"hello from A");
        b_rx.apply(&mut m);
        assert_eq!(&m, b"hello from A");
        let mut m = b"and from B".to_vec();
        b_tx.apply(&mut m);
        a_rx.apply(&mut m);
        assert_eq!(&m, b"and from B");
        // B finds the torrent from what A sends.
        assert_eq!(req2_of(&sb, &req23(&sa, &skey)), req2(&skey));
    }

    #[test]
    fn known_vectors() {
        // 2^1 mod P = 2: a private key of 1 gives the public key 2.
        let mut one = [0u8; 20];
        one[19] = 1;
        let d = Dh::new(one);
        let mut two = [0u8; KEY_LEN];
        two[KEY_LEN - 1] = 2;
        assert_eq!(d.public, two);
        // The first 1024 bytes of keystream are dropped.
        let mut c = Cipher::new([9; 20]);
        let mut raw = Rc4::<U20>::new(&[9u8; 20].into());
        let mut skip = vec![0u8; 1024 + 16];
        raw.apply_keystream(&mut skip);
        let mut z = [0u8; 16];
        c.apply(&mut z);
        assert_eq!(&z[..], &skip[1024..]);
        // HASH is SHA-1 over the concatenation.
        let s = [5u8; KEY_LEN];
        assert_eq!(req1(&s), hash(&[&[b"req1".as_slice(), &s].concat()]));
    }

    #[test]
    fn degenerate_keys_are_refused() {
        let d = Dh::new([3; 20]);
        for bad in [0u8, 1] {
            let mut k = [0u8; KEY_LEN];
            k[KEY_LEN - 1] = bad;
            assert_eq!(d.shared(&k), Err(MseError::BadKey));
        }
        assert_eq!(d.shared(&[0xff; KEY_LEN]), Err(MseError::BadKey));
    }

    #[test]
    fn policies_select() {
        assert_eq!(Policy::Prefer.select(3), Ok(CRYPTO_PLAIN));
        assert_eq!(Policy::Prefer.select(2), Ok(CRYPTO_RC4));
        assert_eq!(Policy::Require.select(3), Ok(CRYPTO_RC4));
        assert_eq!(Policy::Prefer.select(1), Ok(CRYPTO_PLAIN));
        assert_eq!(Policy::Require.select(1), Err(MseError::NoCommonMethod(1)));
        assert_eq!(Policy::Require.provide(), CRYPTO_RC4);
        assert_eq!(Policy::parse("require"), Some(Policy::Require));
    }
}
