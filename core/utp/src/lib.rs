//! uTP (BEP 29), sans-IO: the packet codec ([`packet`]) and one connection as a state machine
//! ([`conn::Conn`]) with time passed in. Feed it datagrams and the time, take the datagrams it
//! wants sent and the time it wants to be woken; the socket task in ccbt-core does the I/O.

pub mod conn;
pub mod packet;

pub use conn::{Conn, State};
pub use packet::{Packet, PacketError, Type};

/// Sequence numbers wrap at 16 bits: `a` comes before `b`.
pub fn seq_lt(a: u16, b: u16) -> bool {
    a != b && b.wrapping_sub(a) < 0x8000
}
