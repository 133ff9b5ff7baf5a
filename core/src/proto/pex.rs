//! BEP 11 peer exchange (`ut_pex`): a bencoded dictionary of peers connected since the last
//! message (`added`, with one flag byte each in `added.f`) and peers gone (`dropped`), IPv4 in 6
//! compact bytes and IPv6 (`added6`, `dropped6`) in 18. Decoding is bounded: at most
//! [`MAX_ACCEPT`] peers are taken from a message, whatever it holds.

use crate::bencode::{self, OwnedValue as V};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

pub const NAME: &str = "ut_pex";
/// Peers we list in one message (BEP 11 asks for at most 50 added and 50 dropped).
pub const MAX_SEND: usize = 50;
/// Peers we take from one message.
pub const MAX_ACCEPT: usize = 100;

/// `added.f` bits.
pub const FLAG_ENCRYPTION: u8 = 0x01;
pub const FLAG_SEED: u8 = 0x02;
pub const FLAG_UTP: u8 = 0x04;
pub const FLAG_HOLEPUNCH: u8 = 0x08;
/// The peer accepted an outgoing connection from the sender: it is reachable.
pub const FLAG_REACHABLE: u8 = 0x10;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PexMsg {
    pub added: Vec<(SocketAddr, u8)>,
    pub dropped: Vec<SocketAddr>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PexError {
    #[error("ut_pex message is not a bencoded dictionary")]
    NotADict,
    #[error("ut_pex '{0}' is not a multiple of {1} bytes")]
    BadLength(&'static str, usize),
}

fn compact(a: &SocketAddr) -> Vec<u8> {
    let mut o = match a.ip() {
        IpAddr::V4(ip) => ip.octets().to_vec(),
        IpAddr::V6(ip) => ip.octets().to_vec(),
    };
    o.extend_from_slice(&a.port().to_be_bytes());
    o
}

fn parse(b: &[u8], v6: bool) -> Option<SocketAddr> {
    let (ip, port) = if v6 {
        let o: [u8; 16] = b.get(..16)?.try_into().ok()?;
        (IpAddr::V6(Ipv6Addr::from(o)), b.get(16..18)?)
    } else {
        let o: [u8; 4] = b.get(..4)?.try_into().ok()?;
        (IpAddr::V4(Ipv4Addr::from(o)), b.get(4..6)?)
    };
    let port = u16::from_be_bytes([port[0], port[1]]);
    (port != 0).then_some(SocketAddr::new(ip, port))
}

impl PexMsg {
    pub fn encode(&self) -> Vec<u8> {
        let mut d = Vec::new();
        for v6 in [false, true] {
            let fam = |a: &SocketAddr| a.is_ipv6() == v6;
            let added: Vec<&(SocketAddr, u8)> = self.added.iter().filter(|(a, _)| fam(a)).collect();
            let dropped: Vec<&SocketAddr> = self.dropped.iter().filter(|a| fam(a)).collect();
            let sfx = if v6 { "6" } else { "" };
            d.push((
                format!("added{sfx}"),
                V::bytes(
                    added
                        .iter()
                        .flat_map(|(a, _)| compact(a))
                        .collect::<Vec<u8>>(),
                ),
            ));
            d.push((
                format!("added{sfx}.f"),
                V::bytes(added.iter().map(|(_, f)| *f).collect::<Vec<u8>>()),
            ));
            d.push((
                format!("dropped{sfx}"),
                V::bytes(dropped.iter().flat_map(|a| compact(a)).collect::<Vec<u8>>()),
            ));
        }
        V::dict(d).encode()
    }

    pub fn decode(b: &[u8]) -> Result<PexMsg, PexError> {
        let v = bencode::decode(b).map_err(|_| PexError::NotADict)?;
        let d = v.as_dict().ok_or(PexError::NotADict)?;
        let mut m = PexMsg::default();
        for (key, fkey, dkey, v6) in [
            ("added", "added.f", "dropped", false),
            ("added6", "added6.f", "dropped6", true),
        ] {
            let n = if v6 { 18 } else { 6 };
            let get = |k: &str| {
                d.get(k.as_bytes())
                    .and_then(|x| x.as_bytes())
                    .unwrap_or(&[])
            };
            let (added, flags, dropped) = (get(key), get(fkey), get(dkey));
            if added.len() % n != 0 {
                return Err(PexError::BadLength(key, n));
            }
            if dropped.len() % n != 0 {
                return Err(PexError::BadLength(dkey, n));
            }
            for (i, c) in added.chunks_exact(n).enumerate() {
                if m.added.len() >= MAX_ACCEPT {
                    break;
                }
                if let Some(a) = parse(c, v6) {
                    m.added.push((a, flags.get(i).copied().unwrap_or(0)));
                }
            }
            for c in dropped.chunks_exact(n) {
                if m.dropped.len() >= MAX_ACCEPT {
                    break;
                }
                if let Some(a) = parse(c, v6) {
                    m.dropped.push(a);
                }
            }
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_byte_vector() {
        let m = PexMsg {
            added: vec![
                ("1.2.3.4:6881".parse().unwrap(), FLAG_SEED | FLAG_REACHABLE),
                ("[::1]:80".parse().unwrap(), 0),
            ],
            dropped: vec!["5.6.7.8:1".parse().unwrap()],
        };
        let b = m.encode();
        assert_eq!(PexMsg::decode(&b).unwrap(), m);
        // What libtorrent sends for one IPv4 peer.
        let lt = b"d5:added6:\x01\x02\x03\x04\x1a\xe17:added.f1:\x127:dropped0:e";
        let d = PexMsg::decode(lt).unwrap();
        assert_eq!(d.added, vec![("1.2.3.4:6881".parse().unwrap(), 0x12)]);
        assert!(d.dropped.is_empty());
    }

    #[test]
    fn hostile_messages_are_bounded_or_refused() {
        assert_eq!(PexMsg::decode(b"le"), Err(PexError::NotADict));
        assert_eq!(
            PexMsg::decode(b"d5:added5:12345e"),
            Err(PexError::BadLength("added", 6))
        );
        // 10,000 peers in one message: only MAX_ACCEPT are taken.
        let mut many = b"d5:added60000:".to_vec();
        for i in 0..10_000u32 {
            many.extend_from_slice(&i.to_be_bytes());
            many.extend_from_slice(&[0x1a, 0xe1]);
        }
        many.push(b'e');
        assert_eq!(PexMsg::decode(&many).unwrap().added.len(), MAX_ACCEPT);
        // Port 0 is no peer.
        let zero = PexMsg::decode(b"d5:added6:\x01\x02\x03\x04\x00\x00e").unwrap();
        assert!(zero.added.is_empty());
    }
}
