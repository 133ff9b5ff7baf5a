//! BEP 42 node ids: the first 21 bits of our id follow from our external IP (CRC32C of the masked
//! address with a random `r`, which is also the id's last byte), so nobody can choose ids near a
//! target without controlling many addresses. Local addresses are exempt.

use crate::Id;
use std::net::{IpAddr, Ipv4Addr};

/// CRC32C (Castagnoli), bitwise: it runs once per id, so no table is needed.
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// The masked address (IPv4: 4 bytes; IPv6: the first 8, BEP 42's IPv6 mask) with `r` in the
/// top bits, hashed.
fn prefix(ip: IpAddr, r: u8) -> u32 {
    let mut b = match ip {
        IpAddr::V4(v4) => {
            let mut b = v4.octets().to_vec();
            for (x, m) in b.iter_mut().zip([0x03, 0x0f, 0x3f, 0xff]) {
                *x &= m;
            }
            b
        }
        IpAddr::V6(v6) => {
            let mut b = v6.octets()[..8].to_vec();
            for (x, m) in b
                .iter_mut()
                .zip([0x01, 0x03, 0x07, 0x0f, 0x1f, 0x3f, 0x7f, 0xff])
            {
                *x &= m;
            }
            b
        }
    };
    b[0] |= (r & 7) << 5;
    crc32c(&b)
}

/// A node id valid for `ip`: `random` fills the free bits (its last byte picks `r`).
pub fn id_for(ip: IpAddr, random: &Id) -> Id {
    let mut id = *random;
    let crc = prefix(ip, random[19]);
    id[0] = (crc >> 24) as u8;
    id[1] = (crc >> 16) as u8;
    id[2] = ((crc >> 8) as u8 & 0xf8) | (random[2] & 7);
    id
}

/// Addresses BEP 42 exempts: private, link-local and loopback (and unspecified); for IPv6,
/// loopback, unspecified, unique-local (fc00::/7) and link-local (fe80::/10).
pub fn exempt(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => exempt_v4(ip),
        IpAddr::V6(ip) => {
            let s = ip.segments()[0];
            ip.is_loopback() || ip.is_unspecified() || s & 0xfe00 == 0xfc00 || s & 0xffc0 == 0xfe80
        }
    }
}

fn exempt_v4(ip: Ipv4Addr) -> bool {
    ip.is_private() || ip.is_link_local() || ip.is_loopback() || ip.is_unspecified()
}

/// Whether `id` is a valid id for `ip` (always true for exempt addresses).
pub fn conforms(ip: IpAddr, id: &Id) -> bool {
    if exempt(ip) {
        return true;
    }
    let crc = prefix(ip, id[19]);
    id[0] == (crc >> 24) as u8
        && id[1] == (crc >> 16) as u8
        && id[2] & 0xf8 == (crc >> 8) as u8 & 0xf8
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Id {
        let v: Vec<u8> = (0..40)
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect();
        v.try_into().unwrap()
    }

    #[test]
    fn crc32c_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    /// The test vectors of BEP 42.
    #[test]
    fn bep42_vectors() {
        for (ip, id) in [
            (
                [124, 31, 75, 21],
                "5fbfbff10c5d6a4ec8a88e4c6ab4c28b95eee401",
            ),
            (
                [21, 75, 31, 124],
                "5a3ce9c14e7a08645677bbd1cfe7d8f956d53256",
            ),
            (
                [65, 23, 51, 170],
                "a5d43220bc8f112a3d426c84764f8c2a1150e616",
            ),
            (
                [84, 124, 73, 14],
                "1b0321dd1bb1fe518101ceef99462b947a01ff41",
            ),
            (
                [43, 213, 53, 83],
                "e56f6cbf5b7c4be0237986d5243b87aa6d51305a",
            ),
        ] {
            let ip = IpAddr::V4(Ipv4Addr::from(ip));
            let id = hex(id);
            assert!(conforms(ip, &id), "{ip}");
            assert_eq!(id_for(ip, &id), id, "{ip}");
            let mut other = id;
            other[0] ^= 0x80;
            assert!(!conforms(ip, &other));
        }
        assert!(conforms(Ipv4Addr::new(127, 0, 0, 1).into(), &[0; 20]));
        assert!(conforms(Ipv4Addr::new(192, 168, 1, 1).into(), &[0; 20]));
        // IPv6: an id made for an address conforms to it, not to another; local ones are exempt.
        let ip: IpAddr = "2001:db8:1234:5678::1".parse().unwrap();
        let id = id_for(ip, &[0x5a; 20]);
        assert!(conforms(ip, &id));
        assert!(!conforms("2001:db9:1234:5678::1".parse().unwrap(), &id));
        for local in ["::1", "fd00::1", "fe80::1"] {
            assert!(conforms(local.parse().unwrap(), &[0; 20]), "{local}");
        }
    }
}
