//! The DHT as JSON: lookups asked of a running node ([`Lookup`]) and their results, the
//! node's status, and BEP 44 items (with a share head decoded when the item is one).

use crate::error::{Context, Result};
use crate::node::head_from_item;
use ccbt_core::encoding::{from_hex, printable, to_hex};
use ccbt_dht::node::{Done, FoundItem, ItemKind, Outcome, Request};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// A lookup as it travels over the local socket: `{"op": "peers", "ih": HEX40}`,
/// `{"op": "get", "target": HEX40}` or `{"op": "get", "key": HEX64, "salt": HEX}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Lookup {
    Peers {
        ih: String,
    },
    Get {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        target: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key: Option<String>,
        #[serde(default)]
        salt: String,
    },
}

impl Lookup {
    pub fn peers(ih: &[u8; 20]) -> Lookup {
        Lookup::Peers { ih: to_hex(ih) }
    }
    pub fn get(target: &[u8; 20]) -> Lookup {
        Lookup::Get {
            target: Some(to_hex(target)),
            key: None,
            salt: String::new(),
        }
    }
    pub fn get_mutable(key: &[u8; 32], salt: &[u8]) -> Lookup {
        Lookup::Get {
            target: None,
            key: Some(to_hex(key)),
            salt: to_hex(salt),
        }
    }

    /// The DHT request it describes (checked: a malformed one is an error, not a panic).
    pub fn request(&self) -> Result<Request> {
        let hex20 = |k: &str, v: &str| -> Result<[u8; 20]> {
            from_hex(v)
                .and_then(|b| b.try_into().ok())
                .with_context(|| format!("'{k}' is not 40 hex digits"))
        };
        match self {
            Lookup::Peers { ih } => Ok(Request::GetPeers {
                info_hash: hex20("ih", ih)?,
                announce: None,
            }),
            Lookup::Get {
                key: Some(k), salt, ..
            } => {
                let k: [u8; 32] = from_hex(k)
                    .and_then(|b| b.try_into().ok())
                    .context("'key' is not 64 hex digits")?;
                let salt = from_hex(salt).unwrap_or_default();
                Ok(Request::Get {
                    target: ccbt_dht::items::mutable_target(&k, &salt),
                    kind: ItemKind::Mutable {
                        k: Some(k),
                        salt,
                        min_seq: None,
                    },
                })
            }
            Lookup::Get { target, .. } => Ok(Request::Get {
                target: hex20("target", target.as_deref().unwrap_or(""))?,
                kind: ItemKind::Any,
            }),
        }
    }
}

/// A bencoded value for a terminal: a text string as text (escaped); anything else (binary,
/// dictionaries, lists) as its bencoding in hex.
pub fn show_value(v: &[u8]) -> String {
    if let Ok(ccbt_core::bencode::Value::Bytes(b)) = ccbt_core::bencode::decode(v) {
        if let Ok(t) = std::str::from_utf8(b) {
            return printable(t).into_owned();
        }
    }
    format!("(bencoded, {} bytes) {}", v.len(), to_hex(v))
}

pub fn item_json(target: &[u8; 20], it: &FoundItem) -> Value {
    let mut j = json!({
        "target": to_hex(target),
        "value": show_value(&it.v),
        "value_hex": to_hex(&it.v),
        "nodes": it.seen,
        "mutable": it.mutable.is_some(),
    });
    if let Some(m) = &it.mutable {
        j["public_key"] = json!(to_hex(&m.k));
        j["seq"] = json!(m.seq);
        j["salt"] = match std::str::from_utf8(&m.salt) {
            Ok(t) => json!(printable(t).into_owned()),
            // Binary (a writer's head: the share id): hex.
            Err(_) => json!(to_hex(&m.salt)),
        };
        j["signature"] = json!(to_hex(&m.sig));
        if let Some(h) = head_from_item(it) {
            j["head"] = json!({
                "share": ccbt_xet::head::share_id_hex(&h.share_id()),
                "version": h.seq, "root": to_hex(&h.value.root), "size": h.value.size, "time": h.value.time,
            });
        }
    }
    j
}

/// A finished lookup as JSON, with what it cost (milliseconds, queries sent).
pub fn done_json(req: &Request, d: &Done) -> Value {
    let mut j = match (&d.outcome, req) {
        (Outcome::Peers { peers, .. }, Request::GetPeers { info_hash, .. }) => json!({
            "info_hash": to_hex(info_hash),
            "peers": peers.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
        }),
        (Outcome::Item(Some(it)), Request::Get { target, .. }) => item_json(target, it),
        (_, Request::Get { target, .. }) => json!({"target": to_hex(target), "found": false}),
        _ => json!({}),
    };
    j["ms"] = json!(d.elapsed.as_secs_f64() * 1000.0);
    // When the first peers (or the first verified item) came: what a download waits for.
    if let Some(f) = d.first {
        j["first_ms"] = json!(f.as_secs_f64() * 1000.0);
    }
    j["queries"] = json!(d.queries);
    j
}

pub fn status_json(s: &ccbt_dht::service::Status) -> Value {
    let st = &s.stats;
    json!({
        "id": to_hex(&s.id), "listen": s.local.to_string(), "nodes": s.nodes,
        "listen6": s.local6.map(|a| a.to_string()), "nodes6": s.nodes6,
        "buckets": s.buckets.iter().map(|(i, n, r)| json!({"bucket": i, "nodes": n, "replacements": r})).collect::<Vec<_>>(),
        "items": s.items, "peer_hashes": s.peer_hashes, "operations": s.ops_running,
        "external_ip": s.external_ip.map(|i| i.to_string()),
        "bootstrap": s.bootstrap.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        "queries_in": st.queries_in, "queries_out": st.queries_out, "replies_in": st.replies_in,
        "errors_in": st.errors_in, "timeouts": st.timeouts, "packets_in": st.packets_in,
        "packets_out": st.packets_out, "bytes_in": st.bytes_in, "bytes_out": st.bytes_out,
        "malformed": st.malformed, "rate_limited": st.rate_limited, "unsolicited": st.unsolicited,
        "bad_items": st.bad_items, "other_packets": s.other_packets,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_check_their_hex() {
        assert!(matches!(
            Lookup::peers(&[7; 20]).request(),
            Ok(Request::GetPeers { .. })
        ));
        assert!(matches!(
            Lookup::get_mutable(&[1; 32], b"s").request(),
            Ok(Request::Get { .. })
        ));
        let bad = Lookup::Peers { ih: "zz".into() };
        assert_eq!(
            bad.request().err().unwrap().to_string(),
            "'ih' is not 40 hex digits"
        );
        let bad = Lookup::Get {
            target: None,
            key: Some("00".into()),
            salt: String::new(),
        };
        assert_eq!(
            bad.request().err().unwrap().to_string(),
            "'key' is not 64 hex digits"
        );
    }
}
