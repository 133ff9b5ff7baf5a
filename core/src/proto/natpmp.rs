//! NAT-PMP (RFC 6886), the port mapping protocol home routers speak (miniupnpd, most Apple and
//! many other gateways; PCP routers answer it too): pure request builders and reply parsers.

use std::net::Ipv4Addr;

/// The gateway's NAT-PMP port.
pub const PORT: u16 = 5351;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Udp = 1,
    Tcp = 2,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NatPmpError {
    #[error("malformed NAT-PMP reply")]
    Malformed,
    #[error("the gateway refused: {0}")]
    Refused(&'static str),
}

/// "What is my external address?"
pub fn external_address_request() -> [u8; 2] {
    [0, 0]
}

/// Map `internal` to `external` (a suggestion; 0 lets the gateway choose) for `lifetime` seconds;
/// a lifetime of 0 removes the mapping.
pub fn map_request(proto: Proto, internal: u16, external: u16, lifetime: u32) -> [u8; 12] {
    let mut b = [0u8; 12];
    b[1] = proto as u8;
    b[4..6].copy_from_slice(&internal.to_be_bytes());
    b[6..8].copy_from_slice(&external.to_be_bytes());
    b[8..12].copy_from_slice(&lifetime.to_be_bytes());
    b
}

fn check(b: &[u8], op: u8, len: usize) -> Result<(), NatPmpError> {
    if b.len() < len || b[0] != 0 || b[1] != 128 + op {
        return Err(NatPmpError::Malformed);
    }
    match u16::from_be_bytes([b[2], b[3]]) {
        0 => Ok(()),
        1 => Err(NatPmpError::Refused("unsupported version")),
        2 => Err(NatPmpError::Refused(
            "not authorized (mapping is switched off on it)",
        )),
        3 => Err(NatPmpError::Refused(
            "network failure (it has no external address)",
        )),
        4 => Err(NatPmpError::Refused("out of resources")),
        _ => Err(NatPmpError::Refused("unsupported opcode")),
    }
}

pub fn parse_external_address(b: &[u8]) -> Result<Ipv4Addr, NatPmpError> {
    check(b, 0, 12)?;
    Ok(Ipv4Addr::new(b[8], b[9], b[10], b[11]))
}

/// A mapping reply: (internal port, external port, lifetime granted).
pub fn parse_map(b: &[u8], proto: Proto) -> Result<(u16, u16, u32), NatPmpError> {
    check(b, proto as u8, 16)?;
    Ok((
        u16::from_be_bytes([b[8], b[9]]),
        u16::from_be_bytes([b[10], b[11]]),
        u32::from_be_bytes(b[12..16].try_into().unwrap()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_from_miniupnpd() {
        // Replies captured from miniupnpd 2.3.1 (a mapping of TCP 7000 for 60 s, then removed).
        let ext = [0x00, 0x80, 0, 0, 0, 0, 0, 1, 11, 9, 0, 1];
        assert_eq!(parse_external_address(&ext), Ok(Ipv4Addr::new(11, 9, 0, 1)));
        let map = [
            0x00, 0x82, 0, 0, 0, 0, 0, 1, 0x1b, 0x58, 0x1b, 0x58, 0, 0, 0, 0x3c,
        ];
        assert_eq!(parse_map(&map, Proto::Tcp), Ok((7000, 7000, 60)));
        assert_eq!(
            map_request(Proto::Tcp, 7000, 7000, 60),
            [0, 2, 0, 0, 0x1b, 0x58, 0x1b, 0x58, 0, 0, 0, 60]
        );
        // No external address: result 3.
        let fail = [0x00, 0x80, 0, 3, 0, 0, 0, 1, 0, 0, 0, 0];
        assert!(matches!(
            parse_external_address(&fail),
            Err(NatPmpError::Refused(_))
        ));
        assert_eq!(parse_map(&map, Proto::Udp), Err(NatPmpError::Malformed));
        assert_eq!(
            parse_map(&map[..10], Proto::Tcp),
            Err(NatPmpError::Malformed)
        );
    }
}
