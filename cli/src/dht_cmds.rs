//! `ccbt dht`: the DHT for users and for diagnosis. Each command runs its own short-lived DHT node
//! (bootstrapped like any other: `[discovery] dht_bootstrap` or `--dht-bootstrap`), except
//! `status`, which asks the node running on this data dir first.

use crate::Ctx;
use anyhow::{bail, Context, Result};
use ccbt_core::encoding::{from_hex, printable, to_hex};
use ccbt_dht::Dht;
use ccbt_node::dht::{done_json, status_json, Lookup};
use ccbt_node::socket::{call, Request as NodeRequest};
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

pub fn dht(ctx: &Ctx, cmd: DhtCmd) -> Result<()> {
    let rt = crate::runtime()?;
    match cmd {
        DhtCmd::Status(net) => {
            let v = match call::<Value>(&ctx.data_dir, &NodeRequest::DhtStatus)? {
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
            let v = run_request(ctx, &net, Lookup::peers(&ih))?;
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
                    Lookup::get_mutable(&k, &salt)
                }
                _ if !salt.is_empty() => bail!("--salt needs the 64-hex public key, not a target"),
                _ => Lookup::get(&parse_hash(&target)?),
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

/// Runs a lookup on the node running on this data dir (its routing table is warm), or on a
/// node of its own.
fn run_request(ctx: &Ctx, net: &DhtNet, req: Lookup) -> Result<Value> {
    if let Some(v) = call::<Value>(&ctx.data_dir, &NodeRequest::DhtRequest { req: req.clone() })? {
        return Ok(v);
    }
    let r = req.request()?;
    let d = start(ctx, net)?;
    ready(ctx, &d, net)?;
    let done = crate::runtime()?.block_on(d.request(r.clone()))?;
    Ok(done_json(&r, &done))
}
