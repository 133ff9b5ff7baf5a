//! BEP 10 extension protocol: the extended handshake (pure encode/decode) and the registry other
//! crates plug extensions into (the share layer registers `ccbt_xet`).
//!
//! Local message ids are assigned 1, 2, ... in registration order and advertised in our handshake's
//! `m` dictionary; messages we send use the id the *peer* advertised for that name.

use crate::bencode::{self, OwnedValue, Value};
use bytes::Bytes;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtHandshake {
    /// Extension name → the sender's message id (0 = disabled).
    pub m: BTreeMap<String, u8>,
    pub client: Option<String>,
    pub listen_port: Option<u16>,
    pub reqq: Option<u32>,
    pub metadata_size: Option<u64>,
}

impl ExtHandshake {
    pub fn encode(&self) -> Vec<u8> {
        let mut d = vec![(
            "m",
            OwnedValue::Dict(
                self.m
                    .iter()
                    .map(|(k, v)| (k.as_bytes().to_vec(), OwnedValue::Int(*v as i64)))
                    .collect(),
            ),
        )];
        if let Some(c) = &self.client {
            d.push(("v", OwnedValue::bytes(c.as_bytes())));
        }
        if let Some(p) = self.listen_port {
            d.push(("p", OwnedValue::Int(p as i64)));
        }
        if let Some(q) = self.reqq {
            d.push(("reqq", OwnedValue::Int(q as i64)));
        }
        if let Some(s) = self.metadata_size {
            d.push(("metadata_size", OwnedValue::Int(s as i64)));
        }
        OwnedValue::dict(d).encode()
    }

    /// Lenient about unknown keys (BEP 10 says to ignore them), strict about types it reads.
    pub fn decode(b: &[u8]) -> Option<ExtHandshake> {
        let v = bencode::decode(b).ok()?;
        let d = v.as_dict()?;
        let mut h = ExtHandshake::default();
        if let Some(m) = d.get(b"m").and_then(Value::as_dict) {
            for (k, v) in &m.entries {
                if let (Ok(name), Some(id)) = (std::str::from_utf8(k), v.as_int()) {
                    if (0..=255).contains(&id) {
                        h.m.insert(name.to_string(), id as u8);
                    }
                }
            }
        }
        h.client = d.get(b"v").and_then(Value::as_str).map(str::to_string);
        h.listen_port = d
            .get(b"p")
            .and_then(Value::as_int)
            .and_then(|p| u16::try_from(p).ok());
        h.reqq = d
            .get(b"reqq")
            .and_then(Value::as_int)
            .and_then(|p| u32::try_from(p).ok());
        h.metadata_size = d
            .get(b"metadata_size")
            .and_then(Value::as_int)
            .and_then(|p| u64::try_from(p).ok());
        Some(h)
    }
}

/// What an extension may ask of a connection at any time.
#[derive(Debug)]
pub enum ExtCommand {
    /// Send `payload` under the extension `name` (dropped if the peer does not support it).
    Send(&'static str, Bytes),
    /// Drop and ban the peer.
    Ban(String),
}

/// A handle to push messages to one peer connection (cheap to clone).
#[derive(Debug, Clone)]
pub struct ExtSender(pub(crate) tokio::sync::mpsc::UnboundedSender<ExtCommand>);

impl ExtSender {
    /// False once the connection is gone.
    pub fn send(&self, name: &'static str, payload: Bytes) -> bool {
        self.0.send(ExtCommand::Send(name, payload)).is_ok()
    }
    pub fn ban(&self, why: impl Into<String>) {
        let _ = self.0.send(ExtCommand::Ban(why.into()));
    }
}

/// What an extension knows about the peer a message came from.
#[derive(Debug, Clone)]
pub struct PeerCtx {
    pub addr: SocketAddr,
    pub peer_id: [u8; 20],
    pub info_hash: [u8; 20],
    /// A session-unique key for the connection.
    pub key: u64,
    pub sender: ExtSender,
}

/// An extension's verdict on a message.
#[derive(Debug, Default)]
pub struct ExtReply {
    /// Payloads to send back under this extension's name.
    pub send: Vec<Bytes>,
    /// Drop and ban the peer (it sent bad data or a forged record).
    pub ban: Option<String>,
}

pub trait ExtensionHandler: Send + Sync {
    fn name(&self) -> &'static str;
    /// The peer supports this extension (its handshake named it): first messages to send.
    fn on_connect(&self, _peer: &PeerCtx) -> ExtReply {
        ExtReply::default()
    }
    fn on_message(&self, peer: &PeerCtx, payload: Bytes) -> ExtReply;
    fn on_disconnect(&self, _peer: &PeerCtx) {}
}

/// Registered extensions, in local-id order.
#[derive(Clone, Default)]
pub struct Registry {
    handlers: Vec<Arc<dyn ExtensionHandler>>,
}

impl Registry {
    pub fn register(&mut self, h: Arc<dyn ExtensionHandler>) {
        self.handlers.push(h);
    }

    /// Our handshake's `m` dictionary.
    pub fn advertised(&self) -> BTreeMap<String, u8> {
        self.handlers
            .iter()
            .enumerate()
            .map(|(i, h)| (h.name().to_string(), i as u8 + 1))
            .collect()
    }

    /// The handler for a local message id.
    pub fn by_local_id(&self, id: u8) -> Option<&Arc<dyn ExtensionHandler>> {
        (id as usize)
            .checked_sub(1)
            .and_then(|i| self.handlers.get(i))
    }

    pub fn handlers(&self) -> &[Arc<dyn ExtensionHandler>] {
        &self.handlers
    }

    pub fn is_empty(&self) -> bool {
        self.handlers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Echo;
    impl ExtensionHandler for Echo {
        fn name(&self) -> &'static str {
            "echo"
        }
        fn on_message(&self, _p: &PeerCtx, payload: Bytes) -> ExtReply {
            ExtReply {
                send: vec![payload],
                ban: None,
            }
        }
    }

    #[test]
    fn handshake_roundtrip_and_registry() {
        let mut r = Registry::default();
        r.register(Arc::new(Echo));
        let h = ExtHandshake {
            m: r.advertised(),
            client: Some("ccbt 0.1".into()),
            listen_port: Some(6881),
            reqq: Some(500),
            metadata_size: None,
        };
        let e = h.encode();
        assert_eq!(e, b"d1:md4:echoi1ee1:pi6881e4:reqqi500e1:v8:ccbt 0.1e");
        assert_eq!(ExtHandshake::decode(&e), Some(h));
        assert!(
            r.by_local_id(1).is_some() && r.by_local_id(0).is_none() && r.by_local_id(2).is_none()
        );
        // libtorrent-style handshake with unknown keys and a huge id is tolerated.
        let lt = b"d1:md3:badi999e11:ut_metadatai2e6:ut_pexi1ee1:pi0e6:yourip4:\x7f\0\0\x01e";
        let d = ExtHandshake::decode(lt).unwrap();
        assert_eq!(d.m.get("ut_metadata"), Some(&2));
        assert!(!d.m.contains_key("bad"));
        assert_eq!(ExtHandshake::decode(b"garbage"), None);
    }
}
