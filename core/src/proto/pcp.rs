//! PCP (RFC 6887), NAT-PMP's successor on the same gateway port (5351): pure MAP request
//! builder and reply parser. A PCP server that does not speak version 2 answers with
//! UNSUPP_VERSION (or a NAT-PMP-shaped reply), which tells the caller to fall back to NAT-PMP.

use crate::natpmp::Proto;
use std::net::{Ipv4Addr, Ipv6Addr};

pub const VERSION: u8 = 2;
const OP_MAP: u8 = 1;
/// Header (24) + MAP opcode (36).
pub const MAP_LEN: usize = 60;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PcpError {
    #[error("malformed PCP reply")]
    Malformed,
    #[error("the gateway does not speak PCP version 2")]
    UnsupportedVersion,
    #[error("the PCP reply does not answer our request")]
    NotOurs,
    #[error("the gateway refused: {0}")]
    Refused(&'static str),
}

fn proto_number(p: Proto) -> u8 {
    match p {
        Proto::Tcp => 6,
        Proto::Udp => 17,
    }
}

/// A MAP request from `client` (our address as the gateway sees it) for `internal` port,
/// suggesting the same external port; `lifetime` 0 deletes the mapping made with `nonce`.
pub fn map_request(
    nonce: [u8; 12],
    proto: Proto,
    client: Ipv4Addr,
    internal: u16,
    lifetime: u32,
) -> [u8; MAP_LEN] {
    let mut b = [0u8; MAP_LEN];
    b[0] = VERSION;
    b[1] = OP_MAP;
    b[4..8].copy_from_slice(&lifetime.to_be_bytes());
    b[8..24].copy_from_slice(&client.to_ipv6_mapped().octets());
    b[24..36].copy_from_slice(&nonce);
    b[36] = proto_number(proto);
    b[40..42].copy_from_slice(&internal.to_be_bytes());
    b[42..44].copy_from_slice(&internal.to_be_bytes());
    // Suggested external address: the IPv4-mapped "any" (::ffff:0.0.0.0).
    b[44..60].copy_from_slice(&Ipv4Addr::UNSPECIFIED.to_ipv6_mapped().octets());
    b
}

/// A granted mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping {
    pub external_ip: Ipv4Addr,
    pub external_port: u16,
    pub lifetime: u32,
}

/// Parses the reply to [`map_request`] with the same `nonce`, `proto` and `internal` port.
pub fn parse_map(
    b: &[u8],
    nonce: [u8; 12],
    proto: Proto,
    internal: u16,
) -> Result<Mapping, PcpError> {
    if b.len() >= 2 && b[0] == 0 {
        // A NAT-PMP-only gateway answering a version it does not know.
        return Err(PcpError::UnsupportedVersion);
    }
    if b.len() < 4 || b[1] != 0x80 | OP_MAP {
        return Err(PcpError::Malformed);
    }
    if b[3] == 1 {
        return Err(PcpError::UnsupportedVersion);
    }
    if b[0] != VERSION || b.len() < MAP_LEN {
        return Err(PcpError::Malformed);
    }
    let result = match b[3] {
        0 => Ok(()),
        2 => Err("not authorized (mapping is switched off on it)"),
        3 => Err("malformed request"),
        4 => Err("unsupported opcode"),
        5 | 6 => Err("unsupported option"),
        7 => Err("network failure (it has no external address)"),
        8 => Err("out of resources"),
        9 => Err("unsupported protocol"),
        10 => Err("user quota exceeded"),
        11 => Err("cannot provide the external port"),
        12 => Err("address mismatch (our address is not the one it sees)"),
        _ => Err("unknown result code"),
    };
    if b[24..36] != nonce || b[36] != proto_number(proto) || b[40..42] != internal.to_be_bytes() {
        return Err(PcpError::NotOurs);
    }
    result.map_err(PcpError::Refused)?;
    let ip = Ipv6Addr::from(<[u8; 16]>::try_from(&b[44..60]).unwrap());
    Ok(Mapping {
        external_ip: ip.to_ipv4_mapped().ok_or(PcpError::Malformed)?,
        external_port: u16::from_be_bytes([b[42], b[43]]),
        lifetime: u32::from_be_bytes(b[4..8].try_into().unwrap()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_layout_and_reply_round() {
        let nonce = *b"0123456789ab";
        let req = map_request(nonce, Proto::Udp, Ipv4Addr::new(10, 9, 0, 2), 7000, 60);
        assert_eq!(&req[..4], &[2, 1, 0, 0]);
        assert_eq!(&req[4..8], &60u32.to_be_bytes());
        assert_eq!(
            &req[8..24],
            &Ipv4Addr::new(10, 9, 0, 2).to_ipv6_mapped().octets()
        );
        assert_eq!(&req[24..36], b"0123456789ab");
        assert_eq!(req[36], 17);
        assert_eq!(&req[40..44], &[0x1b, 0x58, 0x1b, 0x58]);
        assert_eq!(&req[44..56], &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]);

        // The server's answer: R bit, result, granted lifetime, epoch, the opcode echoed with
        // the assigned external address and port.
        let mut rep = req;
        rep[1] = 0x81;
        rep[3] = 0;
        rep[4..8].copy_from_slice(&30u32.to_be_bytes());
        rep[8..24].fill(0);
        rep[42..44].copy_from_slice(&7001u16.to_be_bytes());
        rep[44..60].copy_from_slice(&Ipv4Addr::new(11, 9, 0, 1).to_ipv6_mapped().octets());
        assert_eq!(
            parse_map(&rep, nonce, Proto::Udp, 7000),
            Ok(Mapping {
                external_ip: Ipv4Addr::new(11, 9, 0, 1),
                external_port: 7001,
                lifetime: 30
            })
        );
        // Not ours: other nonce, other protocol.
        assert_eq!(
            parse_map(&rep, *b"xxxxxxxxxxxx", Proto::Udp, 7000),
            Err(PcpError::NotOurs)
        );
        assert_eq!(
            parse_map(&rep, nonce, Proto::Tcp, 7000),
            Err(PcpError::NotOurs)
        );
        // Refused, truncated, a NAT-PMP gateway's answer.
        let mut no = rep;
        no[3] = 2;
        assert!(matches!(
            parse_map(&no, nonce, Proto::Udp, 7000),
            Err(PcpError::Refused(_))
        ));
        assert_eq!(
            parse_map(&rep[..50], nonce, Proto::Udp, 7000),
            Err(PcpError::Malformed)
        );
        assert_eq!(
            parse_map(&[0, 0x81, 0, 1], nonce, Proto::Udp, 7000),
            Err(PcpError::UnsupportedVersion)
        );
        let mut v1 = rep;
        v1[3] = 1;
        assert_eq!(
            parse_map(&v1, nonce, Proto::Udp, 7000),
            Err(PcpError::UnsupportedVersion)
        );
    }
}
