//! `ccbt-dht`: the Mainline DHT (BEP 5, with BEP 44 items to come), sans-IO.
//!
//! - [`krpc`]: the KRPC codec: queries, responses and errors as typed values, strict about every
//!   field it reads and bounded in what it accepts, tested with byte vectors;
//! - [`routing`]: the Kademlia routing table (K = 8 buckets split around our id, node states
//!   good / questionable / bad from the times passed in).
//!
//! Nothing here touches a socket or a clock: the node task on top feeds datagrams and the time.

pub mod bep42;
pub mod items;
pub mod krpc;
pub mod lookup;
pub mod node;
pub mod routing;
pub mod server;
pub mod service;

pub use service::{Dht, DhtConfig, DhtError, PUBLIC_ROUTERS};

/// A node id or an info-hash: 160 bits.
pub type Id = [u8; 20];

/// XOR distance between two ids, compared as a big-endian number.
pub fn distance(a: &Id, b: &Id) -> Id {
    let mut d = [0u8; 20];
    for i in 0..20 {
        d[i] = a[i] ^ b[i];
    }
    d
}

/// An IPv4 socket address as the crate's address type (tests).
#[cfg(test)]
pub(crate) fn sa4(ip: std::net::Ipv4Addr, port: u16) -> std::net::SocketAddr {
    std::net::SocketAddr::V4(std::net::SocketAddrV4::new(ip, port))
}
