//! KRPC (BEP 5): bencoded dictionaries over UDP. `t` is the transaction id, `y` the kind (`q`
//! query, `r` response, `e` error), `q` the method, `a` the arguments, `r` the return values, `e`
//! `[code, message]`. Every field read is type-checked and bounded: a hostile datagram gives a
//! [`KrpcError`], never a panic or an allocation larger than the datagram.

use crate::Id;
use ccbt_core::bencode::{self, OwnedValue as V, Value};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// The largest datagram we decode (a DHT packet fits one UDP payload on any path).
pub const MAX_PACKET: usize = 1500;
/// Compact node info (BEP 5): id, IPv4 address, port.
pub const NODE_LEN: usize = 26;
/// Compact IPv6 node info (BEP 32, `nodes6`): id, IPv6 address, port.
pub const NODE6_LEN: usize = 38;
/// Longest token or transaction id we accept.
pub const MAX_TOKEN: usize = 64;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KrpcError {
    #[error("KRPC packet of {0} bytes exceeds {MAX_PACKET}")]
    TooLarge(usize),
    #[error("KRPC packet is not bencode: {0}")]
    Bencode(String),
    #[error("malformed KRPC packet: {0}")]
    Malformed(&'static str),
}

/// A node: its id and address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NodeInfo {
    pub id: Id,
    /// IPv4 nodes travel in `nodes`, IPv6 nodes in `nodes6` (BEP 32).
    pub addr: SocketAddr,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    Ping,
    FindNode {
        target: Id,
    },
    GetPeers {
        info_hash: Id,
    },
    AnnouncePeer {
        info_hash: Id,
        port: u16,
        /// BEP 5: use the packet's source port instead of `port`.
        implied_port: bool,
        token: Vec<u8>,
    },
    /// BEP 44 get: an item by target (with `seq`, only if newer than it).
    Get {
        target: Id,
        seq: Option<i64>,
    },
    /// BEP 44 put of an immutable (`mutable` = None) or mutable item.
    Put {
        token: Vec<u8>,
        /// The bencoded value.
        v: Vec<u8>,
        mutable: Option<MutablePut>,
    },
    /// A method this codec does not know (answered with error 204).
    Unknown(Vec<u8>),
}

/// The signed part of a mutable BEP 44 put (or get reply).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MutablePut {
    pub k: [u8; 32],
    pub salt: Vec<u8>,
    pub seq: i64,
    pub sig: [u8; 64],
    /// Compare-and-swap: the put applies only if the stored seq equals this.
    pub cas: Option<i64>,
}

/// The largest bencoded value of a BEP 44 item.
pub const MAX_ITEM: usize = 1000;
/// The longest salt of a mutable item.
pub const MAX_SALT: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Response {
    pub nodes: Vec<NodeInfo>,
    pub token: Option<Vec<u8>>,
    pub values: Vec<SocketAddr>,
    /// BEP 44 get: the item's bencoded value, and for a mutable item its key, seq and signature.
    pub item: Option<ItemReply>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemReply {
    pub v: Vec<u8>,
    pub k: Option<[u8; 32]>,
    pub seq: Option<i64>,
    pub sig: Option<[u8; 64]>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    Query(Query),
    Response(Response),
    Error { code: i64, message: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub tid: Vec<u8>,
    /// The sender's node id (absent only in errors).
    pub id: Option<Id>,
    /// BEP 43: the sender is read-only (do not add it to routing tables).
    pub read_only: bool,
    /// BEP 42: our address as the sender saw it, if it said.
    pub your_ip: Option<SocketAddr>,
    pub body: Body,
}

fn id20(v: Option<&Value>) -> Option<Id> {
    v?.as_bytes()?.try_into().ok()
}

/// A compact address: 6 bytes (IPv4) or 18 bytes (IPv6, BEP 32), port last.
fn compact_addr(b: &[u8]) -> Option<SocketAddr> {
    match b.len() {
        6 => Some(SocketAddr::V4(SocketAddrV4::new(
            Ipv4Addr::new(b[0], b[1], b[2], b[3]),
            u16::from_be_bytes([b[4], b[5]]),
        ))),
        18 => {
            let ip: [u8; 16] = b[..16].try_into().ok()?;
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(ip),
                u16::from_be_bytes([b[16], b[17]]),
                0,
                0,
            )))
        }
        _ => None,
    }
}

fn addr_bytes(a: &SocketAddr) -> Vec<u8> {
    let mut o = match a.ip() {
        std::net::IpAddr::V4(ip) => ip.octets().to_vec(),
        std::net::IpAddr::V6(ip) => ip.octets().to_vec(),
    };
    o.extend_from_slice(&a.port().to_be_bytes());
    o
}

/// The longest error message kept from a peer, in bytes.
const MAX_ERROR_TEXT: usize = 256;

/// At most `max` bytes of text from a peer, as UTF-8 (invalid bytes replaced, cut at a character
/// boundary), so decoding what we encoded gives the same text back.
fn short_text(b: &[u8], max: usize) -> String {
    let mut s = String::from_utf8_lossy(&b[..b.len().min(max)]).into_owned();
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s
}

/// Compact node infos (a multiple of 26 bytes).
pub fn decode_nodes(b: &[u8]) -> Result<Vec<NodeInfo>, KrpcError> {
    decode_compact(b, NODE_LEN, "'nodes' is not a multiple of 26 bytes")
}

/// Compact IPv6 node infos (`nodes6`, a multiple of 38 bytes).
pub fn decode_nodes6(b: &[u8]) -> Result<Vec<NodeInfo>, KrpcError> {
    decode_compact(b, NODE6_LEN, "'nodes6' is not a multiple of 38 bytes")
}

fn decode_compact(b: &[u8], len: usize, err: &'static str) -> Result<Vec<NodeInfo>, KrpcError> {
    if !b.len().is_multiple_of(len) {
        return Err(KrpcError::Malformed(err));
    }
    Ok(b.chunks_exact(len)
        .filter_map(|c| {
            Some(NodeInfo {
                id: c[..20].try_into().ok()?,
                addr: compact_addr(&c[20..])?,
            })
        })
        .collect())
}

/// The nodes of one family in compact form (`v6`: the IPv6 ones, for `nodes6`).
pub fn encode_nodes_of(nodes: &[NodeInfo], v6: bool) -> Vec<u8> {
    let mut o = Vec::new();
    for n in nodes.iter().filter(|n| n.addr.is_ipv6() == v6) {
        o.extend_from_slice(&n.id);
        o.extend_from_slice(&addr_bytes(&n.addr));
    }
    o
}

/// IPv4 nodes in compact form (what `nodes` carries).
pub fn encode_nodes(nodes: &[NodeInfo]) -> Vec<u8> {
    encode_nodes_of(nodes, false)
}

impl Message {
    pub fn decode(pkt: &[u8]) -> Result<Message, KrpcError> {
        if pkt.len() > MAX_PACKET {
            return Err(KrpcError::TooLarge(pkt.len()));
        }
        let v = bencode::decode(pkt).map_err(|e| KrpcError::Bencode(e.to_string()))?;
        let d = v
            .as_dict()
            .ok_or(KrpcError::Malformed("not a dictionary"))?;
        let tid = d
            .get(b"t")
            .and_then(Value::as_bytes)
            .filter(|t| t.len() <= MAX_TOKEN)
            .ok_or(KrpcError::Malformed("no transaction id"))?
            .to_vec();
        let read_only = matches!(d.get(b"ro").and_then(Value::as_int), Some(1));
        let your_ip = d
            .get(b"ip")
            .and_then(Value::as_bytes)
            .and_then(compact_addr);
        let y = d
            .get(b"y")
            .and_then(Value::as_bytes)
            .ok_or(KrpcError::Malformed("no message kind 'y'"))?;
        let (id, body) = match y {
            b"q" => {
                let a = d
                    .get(b"a")
                    .and_then(Value::as_dict)
                    .ok_or(KrpcError::Malformed("query without arguments 'a'"))?;
                let id = id20(a.get(b"id")).ok_or(KrpcError::Malformed("query without an id"))?;
                let method = d
                    .get(b"q")
                    .and_then(Value::as_bytes)
                    .ok_or(KrpcError::Malformed("query without a method 'q'"))?;
                let hash = |k: &[u8], what| id20(a.get(k)).ok_or(KrpcError::Malformed(what));
                let q = match method {
                    b"ping" => Query::Ping,
                    b"find_node" => Query::FindNode {
                        target: hash(b"target", "find_node without a 20-byte target")?,
                    },
                    b"get_peers" => Query::GetPeers {
                        info_hash: hash(b"info_hash", "get_peers without a 20-byte info_hash")?,
                    },
                    b"announce_peer" => {
                        let port = a
                            .get(b"port")
                            .and_then(Value::as_int)
                            .and_then(|p| u16::try_from(p).ok())
                            .ok_or(KrpcError::Malformed("announce_peer without a valid port"))?;
                        Query::AnnouncePeer {
                            info_hash: hash(b"info_hash", "announce_peer without an info_hash")?,
                            port,
                            implied_port: matches!(
                                a.get(b"implied_port").and_then(Value::as_int),
                                Some(1)
                            ),
                            token: a
                                .get(b"token")
                                .and_then(Value::as_bytes)
                                .filter(|t| t.len() <= MAX_TOKEN)
                                .ok_or(KrpcError::Malformed("announce_peer without a token"))?
                                .to_vec(),
                        }
                    }
                    b"get" => Query::Get {
                        target: hash(b"target", "get without a 20-byte target")?,
                        seq: a.get(b"seq").and_then(Value::as_int),
                    },
                    b"put" => {
                        let token = a
                            .get(b"token")
                            .and_then(Value::as_bytes)
                            .filter(|t| t.len() <= MAX_TOKEN)
                            .ok_or(KrpcError::Malformed("put without a token"))?
                            .to_vec();
                        let v = a
                            .get(b"v")
                            .ok_or(KrpcError::Malformed("put without a value"))?
                            .to_owned_value()
                            .encode();
                        let mutable = match a.get(b"k") {
                            None => None,
                            Some(k) => Some(MutablePut {
                                k: k.as_bytes()
                                    .and_then(|k| k.try_into().ok())
                                    .ok_or(KrpcError::Malformed("put: 'k' is not 32 bytes"))?,
                                salt: a
                                    .get(b"salt")
                                    .map(|x| x.as_bytes().map(<[u8]>::to_vec))
                                    .unwrap_or(Some(Vec::new()))
                                    .ok_or(KrpcError::Malformed("put: bad salt"))?,
                                seq: a
                                    .get(b"seq")
                                    .and_then(Value::as_int)
                                    .ok_or(KrpcError::Malformed("put: mutable item without seq"))?,
                                sig: a
                                    .get(b"sig")
                                    .and_then(Value::as_bytes)
                                    .and_then(|x| x.try_into().ok())
                                    .ok_or(KrpcError::Malformed("put: 'sig' is not 64 bytes"))?,
                                cas: a.get(b"cas").and_then(Value::as_int),
                            }),
                        };
                        Query::Put { token, v, mutable }
                    }
                    other => Query::Unknown(other.iter().take(32).copied().collect()),
                };
                (Some(id), Body::Query(q))
            }
            b"r" => {
                let r = d
                    .get(b"r")
                    .and_then(Value::as_dict)
                    .ok_or(KrpcError::Malformed("response without return values 'r'"))?;
                let id =
                    id20(r.get(b"id")).ok_or(KrpcError::Malformed("response without an id"))?;
                let mut nodes = match r.get(b"nodes") {
                    None => Vec::new(),
                    Some(n) => decode_nodes(
                        n.as_bytes()
                            .ok_or(KrpcError::Malformed("'nodes' is not a string"))?,
                    )?,
                };
                if let Some(n) = r.get(b"nodes6") {
                    nodes.extend(decode_nodes6(
                        n.as_bytes()
                            .ok_or(KrpcError::Malformed("'nodes6' is not a string"))?,
                    )?);
                }
                let values = match r.get(b"values") {
                    None => Vec::new(),
                    Some(v) => v
                        .as_list()
                        .ok_or(KrpcError::Malformed("'values' is not a list"))?
                        .iter()
                        .filter_map(|x| x.as_bytes().and_then(compact_addr))
                        .collect(),
                };
                let token = match r.get(b"token") {
                    None => None,
                    Some(t) => Some(
                        t.as_bytes()
                            .filter(|t| t.len() <= MAX_TOKEN)
                            .ok_or(KrpcError::Malformed("bad token"))?
                            .to_vec(),
                    ),
                };
                let item = r.get(b"v").map(|v| ItemReply {
                    v: v.to_owned_value().encode(),
                    k: r.get(b"k")
                        .and_then(Value::as_bytes)
                        .and_then(|k| k.try_into().ok()),
                    seq: r.get(b"seq").and_then(Value::as_int),
                    sig: r
                        .get(b"sig")
                        .and_then(Value::as_bytes)
                        .and_then(|x| x.try_into().ok()),
                });
                (
                    Some(id),
                    Body::Response(Response {
                        nodes,
                        token,
                        values,
                        item,
                    }),
                )
            }
            b"e" => {
                let e = d
                    .get(b"e")
                    .and_then(Value::as_list)
                    .ok_or(KrpcError::Malformed("error without 'e' list"))?;
                let code = e
                    .first()
                    .and_then(Value::as_int)
                    .ok_or(KrpcError::Malformed("error without a code"))?;
                let message = e
                    .get(1)
                    .and_then(Value::as_bytes)
                    .map(|m| short_text(m, MAX_ERROR_TEXT))
                    .unwrap_or_default();
                (None, Body::Error { code, message })
            }
            _ => return Err(KrpcError::Malformed("unknown message kind 'y'")),
        };
        Ok(Message {
            tid,
            id,
            read_only,
            your_ip,
            body,
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut top: Vec<(&str, V)> = vec![("t", V::bytes(self.tid.clone()))];
        if self.read_only {
            top.push(("ro", V::Int(1)));
        }
        if let Some(ip) = &self.your_ip {
            top.push(("ip", V::bytes(addr_bytes(ip))));
        }
        let id = || V::bytes(self.id.unwrap_or([0; 20]).to_vec());
        match &self.body {
            Body::Query(q) => {
                let mut a = vec![("id", id())];
                let method = match q {
                    Query::Ping => "ping",
                    Query::FindNode { target } => {
                        a.push(("target", V::bytes(target.to_vec())));
                        "find_node"
                    }
                    Query::GetPeers { info_hash } => {
                        a.push(("info_hash", V::bytes(info_hash.to_vec())));
                        "get_peers"
                    }
                    Query::AnnouncePeer {
                        info_hash,
                        port,
                        implied_port,
                        token,
                    } => {
                        a.push(("info_hash", V::bytes(info_hash.to_vec())));
                        a.push(("port", V::Int(*port as i64)));
                        a.push(("implied_port", V::Int(*implied_port as i64)));
                        a.push(("token", V::bytes(token.clone())));
                        "announce_peer"
                    }
                    Query::Get { target, seq } => {
                        a.push(("target", V::bytes(target.to_vec())));
                        if let Some(q) = seq {
                            a.push(("seq", V::Int(*q)));
                        }
                        "get"
                    }
                    Query::Put { token, v, mutable } => {
                        a.push(("token", V::bytes(token.clone())));
                        a.push(("v", raw_value(v)));
                        if let Some(m) = mutable {
                            a.push(("k", V::bytes(m.k.to_vec())));
                            if !m.salt.is_empty() {
                                a.push(("salt", V::bytes(m.salt.clone())));
                            }
                            a.push(("seq", V::Int(m.seq)));
                            a.push(("sig", V::bytes(m.sig.to_vec())));
                            if let Some(c) = m.cas {
                                a.push(("cas", V::Int(c)));
                            }
                        }
                        "put"
                    }
                    Query::Unknown(m) => {
                        top.push(("q", V::bytes(m.clone())));
                        top.push(("a", V::dict(a)));
                        top.push(("y", V::bytes("q")));
                        return V::dict(top).encode();
                    }
                };
                top.push(("q", V::bytes(method)));
                top.push(("a", V::dict(a)));
                top.push(("y", V::bytes("q")));
            }
            Body::Response(r) => {
                let mut d = vec![("id", id())];
                let (n4, n6) = (
                    encode_nodes_of(&r.nodes, false),
                    encode_nodes_of(&r.nodes, true),
                );
                if !n4.is_empty() {
                    d.push(("nodes", V::bytes(n4)));
                }
                if !n6.is_empty() {
                    d.push(("nodes6", V::bytes(n6)));
                }
                if let Some(t) = &r.token {
                    d.push(("token", V::bytes(t.clone())));
                }
                if !r.values.is_empty() {
                    d.push((
                        "values",
                        V::List(r.values.iter().map(|a| V::bytes(addr_bytes(a))).collect()),
                    ));
                }
                if let Some(it) = &r.item {
                    d.push(("v", raw_value(&it.v)));
                    if let Some(k) = it.k {
                        d.push(("k", V::bytes(k.to_vec())));
                    }
                    if let Some(q) = it.seq {
                        d.push(("seq", V::Int(q)));
                    }
                    if let Some(sig) = it.sig {
                        d.push(("sig", V::bytes(sig.to_vec())));
                    }
                }
                top.push(("r", V::dict(d)));
                top.push(("y", V::bytes("r")));
            }
            Body::Error { code, message } => {
                top.push((
                    "e",
                    V::List(vec![V::Int(*code), V::bytes(message.as_bytes())]),
                ));
                top.push(("y", V::bytes("e")));
            }
        }
        V::dict(top).encode()
    }
}

/// A bencoded value held as bytes, back into a tree for encoding (it was decoded strictly, so
/// this cannot fail for values this codec produced; anything else encodes as an empty string).
fn raw_value(v: &[u8]) -> V {
    bencode::decode(v)
        .map(|x| x.to_owned_value())
        .unwrap_or_else(|_| V::bytes(Vec::new()))
}

/// An address with an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, as a dual-stack socket
/// reports IPv4 senders) turned back into plain IPv4.
pub fn canonical(a: SocketAddr) -> SocketAddr {
    match a {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(ip) => SocketAddr::V4(SocketAddrV4::new(ip, v6.port())),
            None => a,
        },
        a => a,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// BEP 32: IPv6 nodes travel in `nodes6` (38 bytes each), IPv6 peers as 18-byte values, our
    /// IPv6 address as an 18-byte `ip`; a mixed reply splits by family and decodes back.
    #[test]
    fn bep32_nodes6_values6_and_ip() {
        let v6: SocketAddr = "[2001:db8::7]:6881".parse().unwrap();
        let v4: SocketAddr = "10.0.0.1:6882".parse().unwrap();
        let m = Message {
            tid: b"aa".to_vec(),
            id: Some([1; 20]),
            read_only: false,
            your_ip: Some(v6),
            body: Body::Response(Response {
                nodes: vec![
                    NodeInfo {
                        id: [2; 20],
                        addr: v4,
                    },
                    NodeInfo {
                        id: [3; 20],
                        addr: v6,
                    },
                ],
                token: Some(b"tok".to_vec()),
                values: vec![v6, v4],
                item: None,
            }),
        };
        let b = m.encode();
        let find = |needle: &[u8]| b.windows(needle.len()).any(|w| w == needle);
        assert!(
            find(b"5:nodes26:") && find(b"6:nodes638:"),
            "{}",
            String::from_utf8_lossy(&b)
        );
        assert!(find(b"2:ip18:"));
        let back = Message::decode(&b).unwrap();
        assert_eq!(back, m);
        // A nodes6 string of the wrong length is refused whole.
        let bad = b"d1:rd2:id20:aaaaaaaaaaaaaaaaaaaa6:nodes63:xyze1:t2:aa1:y1:re";
        assert!(Message::decode(bad).is_err());
        // An IPv4-mapped sender is plain IPv4 to the node.
        let mapped: SocketAddr = "[::ffff:10.0.0.9]:5".parse().unwrap();
        assert_eq!(
            canonical(mapped),
            "10.0.0.9:5".parse::<SocketAddr>().unwrap()
        );
    }

    #[test]
    fn bep5_example_vectors() {
        // The examples of BEP 5, byte for byte.
        let ping = b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe";
        let m = Message::decode(ping).unwrap();
        assert_eq!(m.tid, b"aa");
        assert_eq!(m.id, Some(*b"abcdefghij0123456789"));
        assert_eq!(m.body, Body::Query(Query::Ping));
        assert_eq!(m.encode(), ping);

        let pong = b"d1:rd2:id20:mnopqrstuvwxyz123456e1:t2:aa1:y1:re";
        let m = Message::decode(pong).unwrap();
        assert_eq!(m.body, Body::Response(Response::default()));
        assert_eq!(m.encode(), pong);

        let find = b"d1:ad2:id20:abcdefghij01234567896:target20:mnopqrstuvwxyz123456e1:q9:find_node1:t2:aa1:y1:qe";
        let m = Message::decode(find).unwrap();
        assert_eq!(
            m.body,
            Body::Query(Query::FindNode {
                target: *b"mnopqrstuvwxyz123456"
            })
        );
        assert_eq!(m.encode(), find);

        let ann = b"d1:ad2:id20:abcdefghij012345678912:implied_porti1e9:info_hash20:mnopqrstuvwxyz1234564:porti6881e5:token8:aoeusnthe1:q13:announce_peer1:t2:aa1:y1:qe";
        let m = Message::decode(ann).unwrap();
        assert_eq!(
            m.body,
            Body::Query(Query::AnnouncePeer {
                info_hash: *b"mnopqrstuvwxyz123456",
                port: 6881,
                implied_port: true,
                token: b"aoeusnth".to_vec(),
            })
        );
        assert_eq!(m.encode(), ann);

        let peers = b"d1:rd2:id20:abcdefghij01234567895:token8:aoeusnth6:valuesl6:axje.u6:idhtnmee1:t2:aa1:y1:re";
        let m = Message::decode(peers).unwrap();
        let Body::Response(r) = &m.body else { panic!() };
        assert_eq!(r.token.as_deref(), Some(&b"aoeusnth"[..]));
        assert_eq!(r.values.len(), 2);
        assert_eq!(r.values[0], compact_addr(b"axje.u").unwrap());
        assert_eq!(m.encode(), peers);

        let err = b"d1:eli201e23:A Generic Error Ocurrede1:t2:aa1:y1:ee";
        let m = Message::decode(err).unwrap();
        assert_eq!(
            m.body,
            Body::Error {
                code: 201,
                message: "A Generic Error Ocurred".into()
            }
        );
        assert_eq!(m.encode(), err);
    }

    #[test]
    fn error_text_survives_a_round_trip() {
        // Found by the fuzzer: invalid UTF-8 near the cut grew when replaced, so the text we
        // encoded was cut again (differently) when decoded.
        let mut pkt = b"d1:eli20e300:A Generic Error Ocurr".to_vec();
        pkt.extend(std::iter::repeat_n(0xffu8, 300 - 21));
        pkt.extend_from_slice(b"e1:t2:aa1:y1:ee");
        let m = Message::decode(&pkt).unwrap();
        let Body::Error { message, .. } = &m.body else {
            panic!()
        };
        assert!(message.len() <= MAX_ERROR_TEXT);
        assert_eq!(Message::decode(&m.encode()).unwrap(), m);
    }

    #[test]
    fn nodes_round_trip_and_hostile_packets_fail_cleanly() {
        let n = NodeInfo {
            id: [7; 20],
            addr: crate::sa4(Ipv4Addr::new(127, 0, 0, 3), 6881),
        };
        let m = Message {
            tid: vec![1, 2],
            id: Some([9; 20]),
            read_only: false,
            your_ip: Some(crate::sa4(Ipv4Addr::new(10, 0, 0, 1), 1)),
            body: Body::Response(Response {
                nodes: vec![n, n],
                token: Some(vec![5; 8]),
                values: vec![],
                item: Some(ItemReply {
                    v: b"12:Hello World!".to_vec(),
                    k: Some([3; 32]),
                    seq: Some(4),
                    sig: Some([6; 64]),
                }),
            }),
        };
        assert_eq!(Message::decode(&m.encode()).unwrap(), m);
        for bad in [
            &b"garbage"[..],
            b"d1:t2:aa1:y1:qe",                        // no arguments
            b"d1:ad2:id3:abce1:q4:ping1:t2:aa1:y1:qe", // short id
            b"d1:rd2:id20:abcdefghij01234567895:nodes3:abce1:t2:aa1:y1:re", // bad nodes
            b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:y1:qe", // no tid
            b"d1:t2:aa1:y1:ze",                        // unknown kind
        ] {
            assert!(
                Message::decode(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(
            Message::decode(&vec![b'x'; MAX_PACKET + 1]).unwrap_err(),
            KrpcError::TooLarge(MAX_PACKET + 1)
        );
        // An unknown method is a query we answer with an error, not a failure to decode.
        let m =
            Message::decode(b"d1:ad2:id20:abcdefghij0123456789e1:q6:vote_x1:t2:aa1:y1:qe").unwrap();
        assert_eq!(m.body, Body::Query(Query::Unknown(b"vote_x".to_vec())));
    }
}
