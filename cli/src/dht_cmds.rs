//! `ccbt dht`: the DHT for users and for diagnosis. Each command runs its own short-lived DHT node
//! (bootstrapped like any other: `[discovery] dht_bootstrap` or `--dht-bootstrap`), except
//! `status`, which asks the node running on this data dir first.

use crate::node::{client_request, head_from_item};
use crate::Ctx;
use anyhow::{bail, Context, Result};
use ccbt_core::encoding::{from_hex, printable, to_hex};
use ccbt_dht::node::{Done, FoundItem, ItemKind, Outcome, Request};
use ccbt_dht::Dht;
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Args, Clone)]
pub struct DhtNet {
    /// UDP address for this command's DHT node (default: any free port)
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:0")]
    pub listen: SocketAddr,
    /// Seconds to wait for the routing table to fill before giving up
    #[arg(long, default_value_t = 15)]
    pub wait: u64,
}

#[derive(Subcommand)]
pub enum DhtCmd {
    /// Nodes, buckets, items stored, queries in and out
    Status(DhtNet),
    /// Peers the DHT knows for an info-hash (40 hex) or share id
    Peers {
        info_hash: String,
        #[command(flatten)]
        net: DhtNet,
    },
    /// A BEP 44 item, verified: a share id or 40-hex target, or a 64-hex public key
    Get {
        target: String,
        /// Salt of a mutable item (with a 64-hex public key)
        #[arg(long)]
        salt: Option<String>,
        /// The salt in hex (a share id: a writer's head of that share)
        #[arg(long, conflicts_with = "salt")]
        salt_hex: Option<String>,
        #[command(flatten)]
        net: DhtNet,
    },
    /// Store an immutable value (a string; --bencoded takes it as bencode) and print its target
    Put {
        value: String,
        #[arg(long)]
        bencoded: bool,
        #[command(flatten)]
        net: DhtNet,
    },
    /// Ping a DHT node
    Ping {
        addr: String,
        #[command(flatten)]
        net: DhtNet,
    },
}

fn start(ctx: &Ctx, net: &DhtNet) -> Result<Dht> {
    if !ctx.dht_enabled() {
        bail!("the DHT is off (--no-dht, CCBT_ENABLE_DHT=false or [discovery] enable_dht = false); give --dht-bootstrap HOST:PORT to use it");
    }
    ctx.dht(net.listen)
        .context("the DHT could not start (see the warning above)")
}

/// Waits for the routing table; an empty one is an error that says where we tried.
fn ready(ctx: &Ctx, d: &Dht, net: &DhtNet) -> Result<()> {
    let rt = crate::runtime()?;
    let n = rt.block_on(d.wait_for_nodes(Duration::from_secs(net.wait)));
    if n == 0 {
        let boot = ctx.bootstrap_list().join(", ");
        bail!(
            "no DHT node answered within {}s (bootstrap: {boot}); check --dht-bootstrap",
            net.wait
        );
    }
    Ok(())
}

fn parse_hash(s: &str) -> Result<[u8; 20]> {
    from_hex(s)
        .and_then(|b| b.try_into().ok())
        .with_context(|| format!("{s:?} is not 40 hex digits"))
}

/// A bencoded value for a terminal: a text string as text (escaped); anything else (binary,
/// dictionaries, lists) as its bencoding in hex.
fn show_value(v: &[u8]) -> String {
    if let Ok(ccbt_core::bencode::Value::Bytes(b)) = ccbt_core::bencode::decode(v) {
        if let Ok(t) = std::str::from_utf8(b) {
            return printable(t).into_owned();
        }
    }
    format!("(bencoded, {} bytes) {}", v.len(), to_hex(v))
}

fn item_json(target: &[u8; 20], it: &FoundItem) -> Value {
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

pub fn dht(ctx: &Ctx, cmd: DhtCmd) -> Result<()> {
    let rt = crate::runtime()?;
    match cmd {
        DhtCmd::Status(net) => {
            let v = match client_request(&ctx.data_dir, json!({"cmd": "dht_status"}))? {
                Some(v) => v,
                None => {
                    let d = start(ctx, &net)?;
                    let _ = rt.block_on(d.wait_for_nodes(Duration::from_secs(net.wait)));
                    // Let the bootstrap lookup finish filling the table.
                    rt.block_on(async { tokio::time::sleep(Duration::from_millis(500)).await });
                    status_json(&rt.block_on(d.status())?)
                }
            };
            if ctx.json {
                outln!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                outln!(
                    "node {} on {}: {} nodes in {} buckets, {} items and {} info-hashes stored",
                    v["id"].as_str().unwrap_or(""),
                    v["listen"].as_str().unwrap_or(""),
                    v["nodes"],
                    v["buckets"].as_array().map_or(0, |b| b.len()),
                    v["items"],
                    v["peer_hashes"]
                );
                if let Some(l6) = v["listen6"].as_str() {
                    outln!("IPv6 node (BEP 32) on {l6}: {} nodes", v["nodes6"]);
                }
                outln!(
                    "queries in {}, out {}; replies {}, errors {}, timeouts {}; bytes in {}, out {}; malformed {}, rate-limited {}",
                    v["queries_in"], v["queries_out"], v["replies_in"], v["errors_in"], v["timeouts"],
                    v["bytes_in"], v["bytes_out"], v["malformed"], v["rate_limited"]
                );
            }
        }
        DhtCmd::Peers { info_hash, net } => {
            let ih = parse_hash(&info_hash)?;
            let v = run_request(ctx, &net, json!({"op": "peers", "ih": to_hex(&ih)}))?;
            let peers: Vec<&str> = v["peers"]
                .as_array()
                .map(|a| a.iter().filter_map(|p| p.as_str()).collect())
                .unwrap_or_default();
            if ctx.json {
                outln!("{v}");
            } else {
                if peers.is_empty() && !ctx.quiet {
                    eprintln!("no peers found for {}", to_hex(&ih));
                }
                for p in peers {
                    outln!("{p}");
                }
            }
        }
        DhtCmd::Get {
            target,
            salt,
            salt_hex,
            net,
        } => {
            let salt = match salt_hex {
                Some(h) => from_hex(&h).context("--salt-hex takes hex digits")?,
                None => salt.unwrap_or_default().into_bytes(),
            };
            let req = match target.len() {
                64 => {
                    let k: [u8; 32] = from_hex(&target)
                        .and_then(|b| b.try_into().ok())
                        .context("a public key is 64 hex digits")?;
                    json!({"op": "get", "key": to_hex(&k), "salt": to_hex(&salt)})
                }
                _ if !salt.is_empty() => bail!("--salt needs the 64-hex public key, not a target"),
                _ => json!({"op": "get", "target": to_hex(&parse_hash(&target)?)}),
            };
            let j = run_request(ctx, &net, req)?;
            if j["found"] == json!(false) {
                bail!(
                    "no node holds a valid item for {}",
                    j["target"].as_str().unwrap_or("")
                );
            }
            if ctx.json {
                outln!("{j}");
            } else {
                let seen = &j["nodes"];
                let t = j["target"].as_str().unwrap_or("");
                match j["seq"].as_i64() {
                    Some(seq) => outln!(
                        "mutable item {t} seq {seq} (key {}, {seen} nodes)",
                        j["public_key"].as_str().unwrap_or("")
                    ),
                    None => outln!("immutable item {t} ({seen} nodes)"),
                }
                outln!("value: {}", j["value"].as_str().unwrap_or(""));
                if let Some(h) = j.get("head") {
                    outln!(
                        "share head: version {}, root {}, {} bytes, time {}",
                        h["version"],
                        h["root"].as_str().unwrap_or(""),
                        h["size"],
                        h["time"]
                    );
                }
            }
        }
        DhtCmd::Put {
            value,
            bencoded,
            net,
        } => {
            let v = if bencoded {
                ccbt_core::bencode::decode(value.as_bytes()).context("the value is not bencode")?;
                value.into_bytes()
            } else {
                let mut b = format!("{}:", value.len()).into_bytes();
                b.extend_from_slice(value.as_bytes());
                b
            };
            if v.len() > ccbt_dht::krpc::MAX_ITEM {
                bail!(
                    "the value is {} bytes bencoded; BEP 44 allows 1000",
                    v.len()
                );
            }
            let d = start(ctx, &net)?;
            ready(ctx, &d, &net)?;
            let (t, stored, err) = rt.block_on(d.put(ccbt_dht::node::PutItem::Immutable(v)))?;
            if stored == 0 {
                bail!(
                    "no DHT node stored the item{}",
                    err.map(|(c, m)| format!(" (last error {c}: {})", printable(&m)))
                        .unwrap_or_default()
                );
            }
            if ctx.json {
                outln!("{}", json!({"target": to_hex(&t), "stored": stored}));
            } else {
                outln!("{}", to_hex(&t));
                if !ctx.quiet {
                    eprintln!("stored on {stored} nodes");
                }
            }
        }
        DhtCmd::Ping { addr, net } => {
            let a: SocketAddr = rt
                .block_on(tokio::net::lookup_host(&addr))
                .with_context(|| format!("cannot resolve {addr}"))?
                .next()
                .with_context(|| format!("{addr} has no address"))?;
            let d = start(ctx, &net)?;
            let t0 = std::time::Instant::now();
            match rt.block_on(d.ping(a))? {
                Some(id) => {
                    let ms = t0.elapsed().as_secs_f64() * 1000.0;
                    if ctx.json {
                        outln!(
                            "{}",
                            json!({"addr": a.to_string(), "id": to_hex(&id), "ms": ms})
                        );
                    } else {
                        outln!("{a}: node {} answered in {ms:.1} ms", to_hex(&id));
                    }
                }
                None => bail!("{a} did not answer a DHT ping within 4s"),
            }
        }
    }
    Ok(())
}

/// A lookup described as JSON (`{"op": "peers", "ih"}` or `{"op": "get", "target" | "key",
/// "salt"}`), as a DHT request.
pub fn parse_request(v: &Value) -> Result<Request> {
    let hex20 = |k: &str| -> Result<[u8; 20]> {
        from_hex(v[k].as_str().unwrap_or(""))
            .and_then(|b| b.try_into().ok())
            .with_context(|| format!("'{k}' is not 40 hex digits"))
    };
    match v["op"].as_str().unwrap_or("") {
        "peers" => Ok(Request::GetPeers {
            info_hash: hex20("ih")?,
            announce: None,
        }),
        "get" => match v["key"].as_str() {
            Some(k) => {
                let k: [u8; 32] = from_hex(k)
                    .and_then(|b| b.try_into().ok())
                    .context("'key' is not 64 hex digits")?;
                let salt = from_hex(v["salt"].as_str().unwrap_or("")).unwrap_or_default();
                Ok(Request::Get {
                    target: ccbt_dht::items::mutable_target(&k, &salt),
                    kind: ItemKind::Mutable {
                        k: Some(k),
                        salt,
                        min_seq: None,
                    },
                })
            }
            None => Ok(Request::Get {
                target: hex20("target")?,
                kind: ItemKind::Any,
            }),
        },
        other => bail!("unknown DHT request {other:?}"),
    }
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

/// Runs a lookup on the node running on this data dir (its routing table is warm), or on a
/// node of its own.
fn run_request(ctx: &Ctx, net: &DhtNet, req: Value) -> Result<Value> {
    if let Some(v) = client_request(&ctx.data_dir, json!({"cmd": "dht_request", "req": req}))? {
        return Ok(v);
    }
    let r = parse_request(&req)?;
    let d = start(ctx, net)?;
    ready(ctx, &d, net)?;
    let done = crate::runtime()?.block_on(d.request(r.clone()))?;
    Ok(done_json(&r, &done))
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
