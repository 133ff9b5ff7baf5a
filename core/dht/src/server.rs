//! Answering other nodes (BEP 5): ping, find_node, get_peers and announce_peer, with write tokens
//! from rotating secrets and a bounded, expiring peer store. Pure: the caller passes each packet's
//! source and the time, and sends what comes back.
//!
//! Bounds: every reply holds at most K nodes or `MAX_VALUES` peers (a reply is never much larger
//! than the query that asked for it is worth); the store keeps at most `MAX_PEERS_PER_HASH` peers
//! per info-hash and `MAX_HASHES` info-hashes; queries per source IP are rate-limited by the
//! caller's settings.

use crate::items::ItemStore;
use crate::krpc::{Body, ItemReply, Message, NodeInfo, Query, Response};
use crate::routing::{RoutingTable, K};
use crate::Id;
use sha1::{Digest, Sha1};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Tokens stay valid for one to two rotations (BEP 5 suggests ten minutes in all).
pub const TOKEN_ROTATION: Duration = Duration::from_secs(5 * 60);
/// An announced peer is forgotten after this long without a new announce.
pub const PEER_TTL: Duration = Duration::from_secs(30 * 60);
pub const MAX_PEERS_PER_HASH: usize = 200;
pub const MAX_HASHES: usize = 10_000;
/// Peers in one get_peers reply (50 compact peers is about 400 bytes).
pub const MAX_VALUES: usize = 50;

pub struct Server {
    pub items: ItemStore,
    secrets: [[u8; 16]; 2],
    rotated: Instant,
    peers: HashMap<Id, Vec<(SocketAddr, Instant)>>,
}

impl Server {
    /// `secret` seeds the token secrets (random bytes from the caller).
    pub fn new(secret: [u8; 16], now: Instant) -> Server {
        Server {
            items: ItemStore::default(),
            secrets: [secret, secret],
            rotated: now,
            peers: HashMap::new(),
        }
    }

    fn token_for(secret: &[u8; 16], ip: &std::net::IpAddr) -> Vec<u8> {
        let mut h = Sha1::new();
        h.update(secret);
        match ip {
            std::net::IpAddr::V4(v4) => h.update(v4.octets()),
            std::net::IpAddr::V6(v6) => h.update(v6.octets()),
        }
        h.finalize()[..8].to_vec()
    }

    /// Rotates the token secret when due; `fresh` is new random bytes.
    pub fn maybe_rotate(&mut self, fresh: [u8; 16], now: Instant) {
        if now.duration_since(self.rotated) >= TOKEN_ROTATION {
            self.secrets = [fresh, self.secrets[0]];
            self.rotated = now;
        }
    }

    fn token_ok(&self, token: &[u8], ip: &std::net::IpAddr) -> bool {
        self.secrets.iter().any(|s| Self::token_for(s, ip) == token)
    }

    /// Peers announced for `ih`, newest first, expired ones dropped.
    pub fn peers_for(&mut self, ih: &Id, now: Instant) -> Vec<SocketAddr> {
        let Some(v) = self.peers.get_mut(ih) else {
            return Vec::new();
        };
        v.retain(|(_, t)| now.duration_since(*t) < PEER_TTL);
        let out = v.iter().rev().take(MAX_VALUES).map(|(a, _)| *a).collect();
        if v.is_empty() {
            self.peers.remove(ih);
        }
        out
    }

    /// Info-hashes with stored peers (for `ccbt dht status`).
    pub fn stored_hashes(&self) -> usize {
        self.peers.len()
    }

    fn store(&mut self, ih: Id, peer: SocketAddr, now: Instant) {
        if !self.peers.contains_key(&ih) && self.peers.len() >= MAX_HASHES {
            // Full: make room by dropping expired entries; refuse if none expired.
            self.peers
                .retain(|_, v| v.iter().any(|(_, t)| now.duration_since(*t) < PEER_TTL));
            if self.peers.len() >= MAX_HASHES {
                return;
            }
        }
        let v = self.peers.entry(ih).or_default();
        v.retain(|(a, _)| *a != peer);
        if v.len() >= MAX_PEERS_PER_HASH {
            v.remove(0);
        }
        v.push((peer, now));
    }

    /// Answers a query from `from`; `None` for anything that is not a query.
    pub fn answer(
        &mut self,
        table: &RoutingTable,
        from: SocketAddr,
        msg: &Message,
        now: Instant,
    ) -> Option<Message> {
        let Body::Query(q) = &msg.body else {
            return None;
        };
        let reply = |body| Message {
            tid: msg.tid.clone(),
            id: Some(table.own_id()),
            read_only: false,
            your_ip: Some(from),
            body,
        };
        let nodes = |target: &Id| -> Vec<NodeInfo> { table.closest(target, K, now) };
        Some(match q {
            Query::Ping => reply(Body::Response(Response::default())),
            Query::FindNode { target } => reply(Body::Response(Response {
                nodes: nodes(target),
                ..Default::default()
            })),
            Query::GetPeers { info_hash } => {
                let values = self.peers_for(info_hash, now);
                let token = Some(Self::token_for(&self.secrets[0], &from.ip()));
                reply(Body::Response(if values.is_empty() {
                    Response {
                        nodes: nodes(info_hash),
                        token,
                        values,
                        item: None,
                    }
                } else {
                    Response {
                        token,
                        values,
                        ..Default::default()
                    }
                }))
            }
            Query::AnnouncePeer {
                info_hash,
                port,
                implied_port,
                token,
            } => {
                if !self.token_ok(token, &from.ip()) {
                    return Some(reply(Body::Error {
                        code: 203,
                        message: "bad token".into(),
                    }));
                }
                let port = if *implied_port { from.port() } else { *port };
                if port == 0 {
                    return Some(reply(Body::Error {
                        code: 203,
                        message: "port 0".into(),
                    }));
                }
                self.store(*info_hash, SocketAddr::new(from.ip(), port), now);
                reply(Body::Response(Response::default()))
            }
            Query::Get { target, seq } => {
                let token = Some(Self::token_for(&self.secrets[0], &from.ip()));
                let item = self.items.get(target, now).map(|i| ItemReply {
                    // A reader that already has this seq gets no value back (BEP 44).
                    v: match (&i.mutable, seq) {
                        (Some(m), Some(q)) if m.seq <= *q => Vec::new(),
                        _ => i.v.clone(),
                    },
                    k: i.mutable.as_ref().map(|m| m.k),
                    seq: i.mutable.as_ref().map(|m| m.seq),
                    sig: i.mutable.as_ref().map(|m| m.sig),
                });
                let item = item.filter(|i| !i.v.is_empty() || i.seq.is_some());
                reply(Body::Response(Response {
                    nodes: nodes(target),
                    token,
                    values: Vec::new(),
                    item,
                }))
            }
            Query::Put { token, v, mutable } => {
                if !self.token_ok(token, &from.ip()) {
                    return Some(reply(Body::Error {
                        code: 203,
                        message: "bad token".into(),
                    }));
                }
                match self.items.put(v.clone(), mutable.clone(), now) {
                    Ok(_) => reply(Body::Response(Response::default())),
                    Err(e) => reply(Body::Error {
                        code: e as i64,
                        message: e.message().into(),
                    }),
                }
            }
            Query::Unknown(_) => reply(Body::Error {
                code: 204,
                message: "method unknown".into(),
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn q(body: Query) -> Message {
        Message {
            tid: b"t1".to_vec(),
            id: Some([1; 20]),
            read_only: false,
            your_ip: None,
            body: Body::Query(body),
        }
    }

    #[test]
    fn get_peers_gives_a_token_that_announce_must_return() {
        let now = Instant::now();
        let mut table = RoutingTable::new([9; 20]);
        table.max_per_ip = 0;
        let mut s = Server::new([7; 16], now);
        let from = crate::sa4(Ipv4Addr::new(127, 0, 0, 5), 4000);
        let ih = [3; 20];
        let r = s
            .answer(&table, from, &q(Query::GetPeers { info_hash: ih }), now)
            .unwrap();
        let Body::Response(resp) = r.body else {
            panic!()
        };
        let token = resp.token.unwrap();
        assert!(resp.values.is_empty());
        // A wrong token is refused; the right one stores the peer (implied port: the source's).
        let bad = q(Query::AnnouncePeer {
            info_hash: ih,
            port: 6881,
            implied_port: false,
            token: b"nope".to_vec(),
        });
        assert!(matches!(
            s.answer(&table, from, &bad, now).unwrap().body,
            Body::Error { code: 203, .. }
        ));
        let good = q(Query::AnnouncePeer {
            info_hash: ih,
            port: 6881,
            implied_port: true,
            token: token.clone(),
        });
        assert!(matches!(
            s.answer(&table, from, &good, now).unwrap().body,
            Body::Response(_)
        ));
        assert_eq!(s.peers_for(&ih, now), vec![from]);
        // From another address the token is not valid.
        let other = crate::sa4(Ipv4Addr::new(127, 0, 0, 6), 4000);
        assert!(matches!(
            s.answer(&table, other, &good, now).unwrap().body,
            Body::Error { code: 203, .. }
        ));
        // Tokens survive one rotation, not two; peers expire.
        s.maybe_rotate([8; 16], now + TOKEN_ROTATION);
        assert!(s.token_ok(&token, &from.ip()));
        s.maybe_rotate([6; 16], now + 2 * TOKEN_ROTATION);
        assert!(!s.token_ok(&token, &from.ip()));
        assert!(s.peers_for(&ih, now + PEER_TTL).is_empty());
        assert_eq!(s.stored_hashes(), 0);
    }

    #[test]
    fn the_store_is_bounded() {
        let now = Instant::now();
        let mut s = Server::new([1; 16], now);
        for i in 0..(MAX_PEERS_PER_HASH as u32 + 50) {
            let a = crate::sa4(Ipv4Addr::from(0x0a00_0000 + i), 1000);
            s.store([5; 20], a, now);
        }
        assert_eq!(s.peers[&[5; 20]].len(), MAX_PEERS_PER_HASH);
        assert_eq!(s.peers_for(&[5; 20], now).len(), MAX_VALUES);
        for i in 0..(MAX_HASHES as u32 + 10) {
            let mut ih = [0u8; 20];
            ih[..4].copy_from_slice(&i.to_be_bytes());
            s.store(ih, crate::sa4(Ipv4Addr::LOCALHOST, 1), now);
        }
        assert_eq!(s.stored_hashes(), MAX_HASHES);
        let table = RoutingTable::new([2; 20]);
        let unknown = q(Query::Unknown(b"vote".to_vec()));
        let from = crate::sa4(Ipv4Addr::LOCALHOST, 9);
        assert!(matches!(
            s.answer(&table, from, &unknown, now).unwrap().body,
            Body::Error { code: 204, .. }
        ));
    }

    #[test]
    fn items_are_put_with_a_token_and_got_back() {
        use crate::items::{immutable_target, signing_bytes};
        use ed25519_dalek::{Signer, SigningKey};
        let now = Instant::now();
        let table = RoutingTable::new([2; 20]);
        let mut s = Server::new([4; 16], now);
        let from = crate::sa4(Ipv4Addr::new(127, 0, 0, 7), 5000);
        let v = b"12:Hello World!".to_vec();
        let target = immutable_target(&v);
        let got = s
            .answer(&table, from, &q(Query::Get { target, seq: None }), now)
            .unwrap();
        let Body::Response(r) = got.body else {
            panic!()
        };
        assert!(r.item.is_none());
        let token = r.token.unwrap();
        let put = q(Query::Put {
            token: token.clone(),
            v: v.clone(),
            mutable: None,
        });
        assert!(matches!(
            s.answer(&table, from, &put, now).unwrap().body,
            Body::Response(_)
        ));
        let got = s
            .answer(&table, from, &q(Query::Get { target, seq: None }), now)
            .unwrap();
        let Body::Response(r) = got.body else {
            panic!()
        };
        assert_eq!(r.item.unwrap().v, v);
        // A mutable put with a bad signature: error 206.
        let sk = SigningKey::from_bytes(&[1; 32]);
        let sig = sk.sign(&signing_bytes(b"", 1, b"1:x")).to_bytes();
        let bad = q(Query::Put {
            token,
            v: b"1:y".to_vec(),
            mutable: Some(crate::krpc::MutablePut {
                k: sk.verifying_key().to_bytes(),
                salt: Vec::new(),
                seq: 1,
                sig,
                cas: None,
            }),
        });
        assert!(matches!(
            s.answer(&table, from, &bad, now).unwrap().body,
            Body::Error { code: 206, .. }
        ));
    }
}
