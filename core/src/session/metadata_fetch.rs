//! Fetching a magnet's info dictionary from peers (BEP 9) before the torrent can start.
//!
//! Peers come from the magnet's `x.pe`, `--peer` and the trackers (announced again every few
//! seconds). Each connection assembles its own copy from one peer and checks it against the
//! info-hash, so a lying peer cannot poison what honest peers send; the first verified copy wins.

use super::tracker_client;
use super::transport::{self, PeerStream};
use crate::extension::ExtHandshake;
use crate::merkle::{self, Hash32};
use crate::metadata::{Assembler, MetaMsg, MetadataError, NAME};
use crate::tracker::{Announce, Event};
use crate::wire::{Decoder, Handshake, HashReq, Message};
use bytes::{Bytes, BytesMut};
use std::collections::BTreeMap;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::mpsc;

/// Our local id for `ut_metadata` on fetch-only connections.
const LOCAL_ID: u8 = 1;
/// Connections tried at once.
const MAX_DIAL: usize = 16;

#[derive(Debug, Clone)]
pub struct FetchConfig {
    pub v1: Option<[u8; 20]>,
    pub v2: Option<[u8; 32]>,
    pub peers: Vec<SocketAddr>,
    pub trackers: Vec<String>,
    pub peer_id: [u8; 20],
    /// Announced to trackers (our session's listen port).
    pub listen_port: u16,
    pub timeout: Duration,
    /// The DHT, asked for peers every few seconds until done.
    pub discovery: Option<super::discovery::DiscoveryHandle>,
    pub encryption: crate::mse::Policy,
    /// Transports, as `[network]` sets them; uTP dials from a UDP socket of the fetch's own.
    pub enable_tcp: bool,
    pub enable_utp: bool,
    pub prefer_utp: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("the magnet names no info-hash")]
    NoHash,
    #[error("none of the {tried} given peers sent the torrent's metadata (last: {why})")]
    Failed { tried: usize, why: String },
    #[error("no peer sent the torrent's metadata within {secs}s ({tried} peers tried{why}); give a peer with --peer or a tracker in the magnet")]
    Timeout {
        secs: u64,
        tried: usize,
        why: String,
    },
}

impl FetchConfig {
    /// The swarm's 20-byte info-hash (v1, or the truncated v2 hash).
    pub fn swarm_hash(&self) -> Option<[u8; 20]> {
        self.v1
            .or_else(|| self.v2.map(|h| h[..20].try_into().unwrap()))
    }
}

/// What a magnet resolves to: the verified info dictionary, and for a v2-only torrent the piece
/// layers (BEP 52 hash requests; hybrids are verified through their v1 hashes).
#[derive(Debug, Clone)]
pub struct Fetched {
    pub info: Vec<u8>,
    pub piece_layers: BTreeMap<Hash32, Vec<Hash32>>,
}

/// Fetches and verifies the torrent's metadata.
pub async fn fetch_metadata(cfg: FetchConfig) -> Result<Fetched, FetchError> {
    let ih = cfg.swarm_hash().ok_or(FetchError::NoHash)?;
    let (peer_tx, mut peer_rx) = mpsc::unbounded_channel::<SocketAddr>();
    for p in &cfg.peers {
        let _ = peer_tx.send(*p);
    }
    // Trackers: announce now and every 5 s until done (the task ends with this function).
    let announcer = {
        let cfg = cfg.clone();
        let tx = peer_tx.clone();
        tokio::spawn(async move {
            loop {
                for url in &cfg.trackers {
                    let a = Announce {
                        info_hash: ih,
                        peer_id: cfg.peer_id,
                        port: cfg.listen_port,
                        uploaded: 0,
                        downloaded: 0,
                        left: 1,
                        event: Event::Started,
                        numwant: 50,
                        key: rand::random(),
                        external: None,
                    };
                    match tracker_client::announce(url, &a).await {
                        Ok(r) => r.peers.into_iter().for_each(|p| {
                            let _ = tx.send(p);
                        }),
                        Err(e) => tracing::warn!("tracker {url}: {e}"),
                    }
                }
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        })
    };
    let dht = cfg.discovery.clone().map(|d| {
        let tx = peer_tx.clone();
        tokio::spawn(async move {
            // Peers found before a lookup ends are dialed at once.
            let (early, mut early_rx) = mpsc::unbounded_channel::<Vec<SocketAddr>>();
            let fwd = tx.clone();
            tokio::spawn(async move {
                while let Some(v) = early_rx.recv().await {
                    v.into_iter().for_each(|p| {
                        let _ = fwd.send(p);
                    });
                }
            });
            loop {
                for p in d.0.find_peers(ih, None, Some(early.clone())).await {
                    let _ = tx.send(p);
                }
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        })
    });
    drop(peer_tx);
    let sources_open = !cfg.trackers.is_empty() || cfg.discovery.is_some();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Result<Fetched, String>>();
    let mut seen = HashSet::new();
    let mut queue = std::collections::VecDeque::new();
    let mut running = 0usize;
    let mut last_err = String::new();
    let deadline = tokio::time::sleep(cfg.timeout);
    tokio::pin!(deadline);
    let dialer = std::sync::Arc::new(dialer(&cfg));
    let result = loop {
        while running < MAX_DIAL {
            let Some(addr) = queue.pop_front() else { break };
            running += 1;
            let (tx, cfg, dialer) = (done_tx.clone(), cfg.clone(), dialer.clone());
            tokio::spawn(async move {
                let r = tokio::time::timeout(
                    Duration::from_secs(30),
                    from_peer(addr, &cfg, &dialer, ih),
                )
                .await
                .unwrap_or_else(|_| Err("timed out".into()))
                .map_err(|e| format!("{addr}: {e}"));
                let _ = tx.send(r);
            });
        }
        if running == 0 && queue.is_empty() && !sources_open && peer_rx.is_empty() {
            // Only the given peers, and every one of them failed: say so now.
            break Err(FetchError::Failed {
                tried: seen.len(),
                why: last_err,
            });
        }
        tokio::select! {
            p = peer_rx.recv(), if sources_open || !peer_rx.is_empty() => {
                if let Some(p) = p {
                    // Trackers list us too: never dial our own listen port on this host.
                    let own = p.port() == cfg.listen_port && (p.ip().is_loopback() || p.ip().is_unspecified());
                    if !own && seen.insert(p) {
                        queue.push_back(p);
                    }
                }
            }
            Some(r) = done_rx.recv() => {
                running -= 1;
                match r {
                    Ok(info) => break Ok(info),
                    Err(e) => {
                        // Said, not only logged: a swarm of peers that cannot serve metadata
                        // (no BEP 10) otherwise looks like a silent wait.
                        if sources_open {
                            tracing::warn!("no metadata from {e}; still looking for other peers");
                        } else {
                            tracing::warn!("no metadata from {e}");
                        }
                        last_err = e;
                    }
                }
            }
            _ = &mut deadline => {
                break Err(FetchError::Timeout {
                    secs: cfg.timeout.as_secs(),
                    tried: seen.len(),
                    why: if last_err.is_empty() { String::new() } else { format!("; last: {last_err}") },
                });
            }
        }
    };
    announcer.abort();
    if let Some(d) = dht {
        d.abort();
    }
    result
}

/// The fetch's transports. A fetch runs before (or beside) a session, so uTP gets a UDP socket
/// of its own on an ephemeral port (gone when the fetch ends); incoming uTP is not taken there.
fn dialer(cfg: &FetchConfig) -> transport::Dialer {
    let utp = if cfg.enable_utp {
        let any = SocketAddr::from(([0, 0, 0, 0], 0));
        match super::udp::UdpMux::bind_unshared(any) {
            Ok(mux) => Some(super::utp::UtpSocket::start(mux, mpsc::channel(1).0)),
            Err(e) => {
                tracing::warn!("metadata over uTP is off: {e}");
                None
            }
        }
    } else {
        None
    };
    transport::Dialer {
        tcp: cfg.enable_tcp,
        utp,
        prefer_utp: cfg.prefer_utp,
        bind_ip: None,
    }
}

/// One peer: handshake, extension handshake, every metadata piece, then (v2-only) the piece layers.
async fn from_peer(
    addr: SocketAddr,
    cfg: &FetchConfig,
    dialer: &transport::Dialer,
    ih: [u8; 20],
) -> Result<Fetched, String> {
    let io = |e: std::io::Error| e.to_string();
    // Encrypted only when required: a metadata fetch is one short exchange.
    let mse = (cfg.encryption == crate::mse::Policy::Require).then_some((cfg.encryption, ih));
    let mut s = transport::connect(addr, Duration::from_secs(5), mse, dialer).await?;
    let mut ours_hs = Handshake::new(ih, cfg.peer_id);
    // Only metadata is wanted here: no Fast extension, which would oblige us to send a have
    // message first.
    ours_hs.reserved[7] &= !0x04;
    if cfg.v1.is_none() {
        ours_hs.reserved[7] |= 0x10; // BEP 52: we speak v2
    }
    let theirs = transport::handshake(&mut s, &ours_hs, None).await?;
    if !theirs.supports_extensions() {
        return Err("does not support extensions (BEP 10), so cannot send metadata".into());
    }
    let ours = ExtHandshake {
        m: [(NAME.to_string(), LOCAL_ID)].into(),
        client: Some(format!("ccbt {}", env!("CARGO_PKG_VERSION"))),
        listen_port: Some(cfg.listen_port),
        ..Default::default()
    };
    send(&mut s, 0, Bytes::from(ours.encode())).await?;
    let mut dec = Decoder::default();
    let mut asm: Option<(Assembler, u8)> = None;
    loop {
        while let Some(m) = dec.next_message().map_err(|e| e.to_string())? {
            let Message::Extended { id, payload } = m else {
                continue; // bitfield, have, ...: not needed for metadata
            };
            if id == 0 {
                let h = ExtHandshake::decode(&payload).ok_or("malformed extension handshake")?;
                if asm.is_some() {
                    continue;
                }
                let pid =
                    *h.m.get(NAME)
                        .filter(|&&i| i != 0)
                        .ok_or("does not offer ut_metadata")?;
                let size = h
                    .metadata_size
                    .ok_or("offers ut_metadata without metadata_size")?;
                let a = Assembler::new(cfg.v1, cfg.v2, size).map_err(|e| e.to_string())?;
                // Metadata is small (≤16 MiB, usually tens of KiB): ask for every piece at once.
                for piece in a.missing().collect::<Vec<_>>() {
                    send(&mut s, pid, MetaMsg::Request { piece }.encode()).await?;
                }
                asm = Some((a, pid));
            } else if id == LOCAL_ID {
                let Some((a, _)) = asm.as_mut() else {
                    return Err("sent metadata before its extension handshake".into());
                };
                match MetaMsg::decode(payload).map_err(|e| e.to_string())? {
                    Some(MetaMsg::Data {
                        piece,
                        total_size,
                        data,
                    }) => a
                        .on_data(piece, total_size, data)
                        .map_err(|e| e.to_string())?,
                    Some(MetaMsg::Reject { piece }) => {
                        return Err(format!("rejected metadata piece {piece}"))
                    }
                    // A request to us: we have nothing yet (BEP 9: reject).
                    Some(MetaMsg::Request { piece }) => {
                        let pid = asm.as_ref().map(|a| a.1).unwrap_or(0);
                        send(&mut s, pid, MetaMsg::Reject { piece }.encode()).await?;
                    }
                    None => {}
                }
                if asm.as_ref().is_some_and(|(a, _)| a.is_complete()) {
                    let (a, _) = asm.take().unwrap();
                    let info = a.finish().map_err(|e| match e {
                        MetadataError::HashMismatch => {
                            "sent metadata that does not match the info-hash (peer ignored)".into()
                        }
                        e => e.to_string(),
                    })?;
                    let piece_layers = if cfg.v1.is_none() {
                        piece_layers(&mut s, &mut dec, &info).await?
                    } else {
                        BTreeMap::new()
                    };
                    return Ok(Fetched { info, piece_layers });
                }
            }
        }
        let buf = dec.buffer();
        buf.reserve(64 * 1024);
        if s.read_buf(buf).await.map_err(io)? == 0 {
            return Err("closed the connection".into());
        }
    }
}

/// BEP 52: asks the peer for the piece layer of every file longer than a piece (in blocks of at
/// most 512 hashes, without proofs) and checks each assembled layer against its `pieces root`.
async fn piece_layers(
    s: &mut PeerStream,
    dec: &mut Decoder,
    info: &[u8],
) -> Result<BTreeMap<Hash32, Vec<Hash32>>, String> {
    let meta = crate::Metainfo::from_info_bytes(info).map_err(|e| e.to_string())?;
    let pl = meta.piece_length;
    let mut want: BTreeMap<Hash32, usize> = BTreeMap::new();
    for f in meta.files.iter().filter(|f| !f.pad && f.length > pl) {
        if let Some(root) = f.pieces_root {
            want.insert(root, f.length.div_ceil(pl) as usize);
        }
    }
    let mut got: BTreeMap<(Hash32, u32), Bytes> = BTreeMap::new();
    let mut asked = 0usize;
    let mut out = BytesMut::new();
    for (root, &n) in &want {
        let width = n.next_power_of_two() as u32;
        let count = width.min(merkle::MAX_HASHES);
        for index in (0..width).step_by(count as usize) {
            if index as usize >= n {
                break;
            }
            Message::HashRequest(HashReq {
                pieces_root: *root,
                base_layer: merkle::piece_layer(pl),
                index,
                length: count,
                proof_layers: 0,
            })
            .encode(&mut out);
            asked += 1;
        }
    }
    s.write_all(&out).await.map_err(|e| e.to_string())?;
    while got.len() < asked {
        while let Some(m) = dec.next_message().map_err(|e| e.to_string())? {
            match m {
                // The last block may come truncated at the end of the layer; the assembled
                // layer is checked as a whole below.
                Message::Hashes { req, hashes } => {
                    got.insert((req.pieces_root, req.index), hashes);
                }
                Message::HashReject(r) => {
                    return Err(format!(
                        "rejected the request for piece hashes {}+{}",
                        r.index, r.length
                    ))
                }
                _ => {}
            }
        }
        if got.len() >= asked {
            break;
        }
        let buf = dec.buffer();
        buf.reserve(64 * 1024);
        if s.read_buf(buf).await.map_err(|e| e.to_string())? == 0 {
            return Err("closed the connection while sending piece hashes".into());
        }
    }
    let mut layers = BTreeMap::new();
    for (root, n) in want {
        let mut layer: Vec<Hash32> = Vec::with_capacity(n);
        for ((r, _), hashes) in got.range((root, 0)..=(root, u32::MAX)) {
            debug_assert_eq!(*r, root);
            layer.extend(
                hashes
                    .chunks_exact(32)
                    .map(|c| Hash32::try_from(c).unwrap()),
            );
        }
        layer.truncate(n);
        if layer.len() != n || merkle::root_from_piece_layer(&layer, pl) != root {
            return Err(
                "sent piece hashes that do not match the file's pieces root (peer ignored)".into(),
            );
        }
        layers.insert(root, layer);
    }
    Ok(layers)
}

async fn send(s: &mut PeerStream, id: u8, payload: Bytes) -> Result<(), String> {
    let mut out = BytesMut::new();
    Message::Extended { id, payload }.encode(&mut out);
    s.write_all(&out).await.map_err(|e| e.to_string())
}
