//! Magnet links (BEP 9, BEP 52 `btmh`, BEP 46 `xs=urn:btpk:`): parse and format.

use crate::encoding::{from_base32, from_hex, hex_array, percent_decode, percent_encode, to_hex};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MagnetError {
    #[error("not a magnet link (must start with 'magnet:?')")]
    NotMagnet,
    #[error("magnet link has a bad '{0}' parameter: {1}")]
    BadParam(String, String),
    #[error("magnet link names no content: it needs xt=urn:btih:, xt=urn:btmh: or xs=urn:btpk:")]
    NoTarget,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Magnet {
    pub v1: Option<[u8; 20]>,
    pub v2: Option<[u8; 32]>,
    /// BEP 46: an ed25519 public key naming a mutable item (a share, or a torrent that updates).
    pub public_key: Option<[u8; 32]>,
    /// BEP 46 `s=`: the mutable item's salt (hex in the link).
    pub salt: Vec<u8>,
    pub name: Option<String>,
    pub trackers: Vec<String>,
    /// `x.pe`: peers to dial directly (`host:port`).
    pub peers: Vec<String>,
    pub web_seeds: Vec<String>,
}

/// SHA-256 multihash prefix (function 0x12, length 0x20) used by `urn:btmh:`.
const MH_SHA256: &str = "1220";

impl Magnet {
    pub fn parse(s: &str) -> Result<Magnet, MagnetError> {
        let q = s.strip_prefix("magnet:?").ok_or(MagnetError::NotMagnet)?;
        let mut m = Magnet::default();
        for pair in q.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let bad = |why: &str| MagnetError::BadParam(k.to_string(), why.to_string());
            let v = percent_decode(v).ok_or_else(|| bad("bad percent-encoding"))?;
            let v = String::from_utf8(v).map_err(|_| bad("not UTF-8"))?;
            // Parameters may carry a numeric suffix (xt.1, tr.2).
            let key = k.split('.').next().unwrap_or(k);
            let key = if k.starts_with("x.pe") { "x.pe" } else { key };
            match key {
                "xt" => {
                    if let Some(h) = v.strip_prefix("urn:btih:") {
                        let bytes = match h.len() {
                            40 => from_hex(h),
                            32 => from_base32(h),
                            _ => None,
                        }
                        .ok_or_else(|| bad("btih must be 40 hex or 32 base32 characters"))?;
                        m.v1 = Some(bytes.try_into().expect("length checked"));
                    } else if let Some(h) = v.strip_prefix("urn:btmh:") {
                        let h = h
                            .strip_prefix(MH_SHA256)
                            .ok_or_else(|| bad("btmh must be a SHA-256 multihash (1220...)"))?;
                        m.v2 = Some(
                            hex_array(h)
                                .ok_or_else(|| bad("btmh digest must be 64 hex characters"))?,
                        );
                    }
                    // Other URNs (sha1, ed2k...) are ignored: a magnet may carry several.
                }
                "xs" => {
                    if let Some(h) = v.strip_prefix("urn:btpk:") {
                        m.public_key = Some(
                            hex_array(h).ok_or_else(|| bad("btpk must be 64 hex characters"))?,
                        );
                    }
                }
                "s" => {
                    m.salt = crate::encoding::from_hex(&v)
                        .filter(|s| s.len() <= 64)
                        .ok_or_else(|| bad("s (salt) must be hex, at most 64 bytes"))?;
                }
                "dn" => m.name = Some(v),
                "tr" => m.trackers.push(v),
                "x.pe" => m.peers.push(v),
                "ws" => m.web_seeds.push(v),
                _ => {}
            }
        }
        if m.v1.is_none() && m.v2.is_none() && m.public_key.is_none() {
            return Err(MagnetError::NoTarget);
        }
        Ok(m)
    }

    pub fn format(&self) -> String {
        let mut parts = Vec::new();
        if let Some(h) = self.v1 {
            parts.push(format!("xt=urn:btih:{}", to_hex(&h)));
        }
        if let Some(h) = self.v2 {
            parts.push(format!("xt=urn:btmh:{MH_SHA256}{}", to_hex(&h)));
        }
        if let Some(k) = self.public_key {
            parts.push(format!("xs=urn:btpk:{}", to_hex(&k)));
            if !self.salt.is_empty() {
                parts.push(format!("s={}", to_hex(&self.salt)));
            }
        }
        if let Some(n) = &self.name {
            parts.push(format!("dn={}", percent_encode(n.as_bytes())));
        }
        for t in &self.trackers {
            parts.push(format!("tr={}", percent_encode(t.as_bytes())));
        }
        for p in &self.peers {
            parts.push(format!("x.pe={}", percent_encode(p.as_bytes())));
        }
        for w in &self.web_seeds {
            parts.push(format!("ws={}", percent_encode(w.as_bytes())));
        }
        format!("magnet:?{}", parts.join("&"))
    }
}

impl std::fmt::Display for Magnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.format())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoding::to_base32;

    #[test]
    fn parse_full() {
        let v1 = [0xabu8; 20];
        let v2 = [0x11u8; 32];
        let s = format!(
            "magnet:?xt=urn:btih:{}&xt=urn:btmh:1220{}&dn=My+File%21&tr=http%3A%2F%2F127.0.0.1%3A6969%2Fannounce&tr=udp://t:1&x.pe=127.0.0.1:6881&ws=http://w/",
            to_hex(&v1),
            to_hex(&v2)
        );
        let m = Magnet::parse(&s).unwrap();
        assert_eq!(m.v1, Some(v1));
        assert_eq!(m.v2, Some(v2));
        assert_eq!(m.name.as_deref(), Some("My File!"));
        assert_eq!(
            m.trackers,
            vec!["http://127.0.0.1:6969/announce", "udp://t:1"]
        );
        assert_eq!(m.peers, vec!["127.0.0.1:6881"]);
        assert_eq!(m.web_seeds, vec!["http://w/"]);
        assert_eq!(Magnet::parse(&m.format()).unwrap(), m);
    }

    #[test]
    fn base32_btih_and_btpk() {
        let v1: [u8; 20] = core::array::from_fn(|i| i as u8 * 7);
        let m = Magnet::parse(&format!("magnet:?xt=urn:btih:{}", to_base32(&v1))).unwrap();
        assert_eq!(m.v1, Some(v1));
        let k = [0x42u8; 32];
        let m = Magnet::parse(&format!("magnet:?xs=urn:btpk:{}", to_hex(&k))).unwrap();
        assert_eq!(m.public_key, Some(k));
        assert!(m.format().contains("xs=urn:btpk:"));
    }

    #[test]
    fn errors() {
        assert_eq!(
            Magnet::parse("http://x").unwrap_err(),
            MagnetError::NotMagnet
        );
        assert_eq!(
            Magnet::parse("magnet:?dn=x").unwrap_err(),
            MagnetError::NoTarget
        );
        assert!(Magnet::parse("magnet:?xt=urn:btih:abc").is_err());
        assert!(Magnet::parse("magnet:?xt=urn:btmh:1114abcd").is_err());
        assert!(Magnet::parse("magnet:?xs=urn:btpk:zz").is_err());
    }
}
