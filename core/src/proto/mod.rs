//! Pure protocol state machines and codecs, tested with byte vectors: the peer wire (with BEP 52
//! hash requests), BEP 10 extensions, BEP 9 metadata exchange, tracker formats, the piece picker,
//! the choker and rate limits. Time is passed in; nothing here touches a socket.

pub mod choker;
pub mod extension;
pub mod metadata;
pub mod mse;
pub mod natpmp;
pub mod pcp;
pub mod pex;
pub mod picker;
pub mod ratelimit;
pub mod tracker;
pub mod wire;
