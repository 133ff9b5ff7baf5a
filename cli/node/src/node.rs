//! A running node: the BitTorrent session with the `ccbt_xet` extension, the store, every share's
//! swarm, the share heads on the DHT, P2P CAS swarms, and a local socket ([`crate::socket`])
//! through which other commands on the same data dir reach it instead of failing on the RocksDB
//! lock.

use crate::env::Env;
use crate::error::{Context, Result};
use ccbt_core::extension::Registry;
use ccbt_core::session::{Session, TorrentHandle};
use ccbt_dht::krpc::MutablePut;
use ccbt_dht::node::{FoundItem, ItemKind, PutItem};
use ccbt_dht::Dht;
use ccbt_xet::head::{share_id_hex, Head, ShareId};
use ccbt_xet::net::ShareNet;
use ccbt_xet::shares::Shares;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

pub struct Node {
    pub session: Session,
    /// The DHT (unless off): share heads as BEP 44 items, swarm peers by share id.
    pub dht: Option<Dht>,
    head_poll: std::time::Duration,
    pub xet: Arc<ShareNet>,
    pub shares: Arc<Shares>,
    swarms: Mutex<HashMap<ShareId, TorrentHandle>>,
    /// P2P CAS swarms (files by the first 20 bytes of their root), held or fetched.
    cas_swarms: Mutex<HashMap<[u8; 20], TorrentHandle>>,
    /// Torrents of versions published with `--torrent` while the node runs.
    pub torrents: Mutex<Vec<TorrentHandle>>,
    data_dir: PathBuf,
    /// Background fetches of pinned files (`ccbt pin`), per share.
    pub pin_progress: Mutex<HashMap<ShareId, crate::pin::PinProgress>>,
    trackers: Vec<String>,
    peers: Vec<SocketAddr>,
}

impl Node {
    pub async fn start(
        ctx: &Env,
        listen: SocketAddr,
        trackers: Vec<String>,
        peers: Vec<SocketAddr>,
    ) -> Result<Arc<Node>> {
        let shares = Arc::new(
            Shares::open(&ctx.data_dir)
                .with_context(|| format!("cannot open the data dir {}", ctx.data_dir.display()))?,
        );
        let xet = ShareNet::new(shares.clone());
        let mut reg = Registry::default();
        reg.register(xet.extension());
        let session = Session::start(ctx.session_config(listen), reg).await?;
        let dht = ctx.dht(session.listen_addr());
        if let Some(d) = ctx.discovery(session.listen_addr()) {
            session.set_discovery(d);
        }
        let node = Arc::new(Node {
            session,
            dht,
            head_poll: std::time::Duration::from_secs(
                ctx.config.discovery.dht_head_poll_secs.max(1),
            ),
            xet,
            shares,
            swarms: Mutex::new(HashMap::new()),
            cas_swarms: Mutex::new(HashMap::new()),
            torrents: Mutex::new(Vec::new()),
            data_dir: ctx.data_dir.clone(),
            pin_progress: Mutex::new(HashMap::new()),
            trackers,
            peers,
        });
        crate::socket::serve(&node, &ctx.data_dir)?;
        tokio::spawn(crate::pin::pinner(node.clone()));
        if node.dht.is_some() {
            // P2P CAS needs the DHT: holders of a file are found by its root there.
            let weak = Arc::downgrade(&node);
            let rt = tokio::runtime::Handle::current();
            node.xet.set_cas_joiner(Arc::new(move |id| {
                if let Some(n) = weak.upgrade() {
                    let _in = rt.enter();
                    n.join_cas(id);
                }
            }));
            tokio::spawn(node.clone().announce_files());
        }
        Ok(node)
    }

    fn join_cas(&self, id: [u8; 20]) {
        let mut g = self.cas_swarms.lock().unwrap();
        if let std::collections::hash_map::Entry::Vacant(e) = g.entry(id) {
            match self
                .session
                .add_cas_swarm(id, std::time::Duration::from_secs(120))
            {
                Ok(h) => {
                    e.insert(h);
                }
                Err(e) => tracing::debug!("CAS swarm {}: {e}", ccbt_core::encoding::to_hex(&id)),
            }
        }
    }

    /// P2P CAS: every 10 minutes, the large files of the newest versions held whole are served
    /// in swarms of their own, announced on the DHT (bounded: [`ccbt_xet::net::CAS_MAX_FILES`]).
    async fn announce_files(self: Arc<Self>) {
        use ccbt_xet::net::{CAS_MAX_FILES, CAS_MIN_SIZE};
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        loop {
            let n = self.clone();
            let _ = tokio::task::spawn_blocking(move || {
                let mut files: Vec<(u64, [u8; 32])> = Vec::new();
                for (id, _) in n.shares.list().unwrap_or_default() {
                    let Ok(head) = n.shares.head(&id, None) else {
                        continue;
                    };
                    for e in n.shares.listing(&head).unwrap_or_default() {
                        if e.size >= CAS_MIN_SIZE && e.root != [0; 32] {
                            files.push((e.size, e.root));
                        }
                    }
                }
                files.sort_by(|a, b| b.cmp(a));
                files.dedup_by_key(|f| f.1);
                let held = n.xet.held_files();
                let mut count = held.len();
                for (_, root) in files {
                    if count >= CAS_MAX_FILES {
                        break;
                    }
                    if !held.contains(&root)
                        && n.shares.file_is_whole(root)
                        && n.xet.hold_file(root)
                    {
                        count += 1;
                        tracing::debug!(
                            "P2P CAS: announcing file {}",
                            ccbt_xet::hash::XetHash(root)
                        );
                    }
                }
            })
            .await;
            tokio::time::sleep(std::time::Duration::from_secs(600)).await;
        }
    }

    /// Joins a share's swarm (idempotent); with the DHT, also keeps its head there.
    pub fn join(self: &Arc<Self>, id: ShareId) -> Result<()> {
        self.join_with(id, &[])
    }

    /// Joins a share's swarm with `extra` peers to dial besides the node's own.
    pub fn join_with(self: &Arc<Self>, id: ShareId, extra: &[SocketAddr]) -> Result<()> {
        let mut g = self.swarms.lock().unwrap();
        match g.entry(id) {
            std::collections::hash_map::Entry::Vacant(e) => {
                let mut peers = self.peers.clone();
                peers.extend_from_slice(extra);
                e.insert(self.session.add_swarm(id, self.trackers.clone(), peers)?);
                if let Some(d) = &self.dht {
                    tokio::spawn(self.clone().head_on_dht(d.clone(), id));
                }
            }
            std::collections::hash_map::Entry::Occupied(e) => {
                for p in extra {
                    e.get().add_peer(*p);
                }
            }
        }
        Ok(())
    }

    /// A share's head on the DHT (BEP 44, target = share id): every node that holds a head puts
    /// the newest it knows, at once when it changes and every 30 minutes (items expire after
    /// about two hours); a node with no head, or with no connected peer to push the next one,
    /// gets it from the DHT (every `[discovery] dht_head_poll_secs`). Pushes over connections
    /// stay the fast path.
    async fn head_on_dht(self: Arc<Self>, dht: Dht, id: ShareId) {
        use std::time::{Duration, Instant};
        let mut heads = self.xet.subscribe();
        let mut feeds = self.xet.subscribe_feeds();
        let mut put: Option<(u64, Instant)> = None;
        let mut writer_puts: HashMap<[u8; 32], (u64, Instant)> = HashMap::new();
        loop {
            let newest = self
                .xet
                .newest_head(&id)
                .or_else(|| self.shares.head(&id, None).ok());
            if let Some(h) = &newest {
                let due = put.is_none_or(|(seq, at)| {
                    h.seq > seq || at.elapsed() >= Duration::from_secs(30 * 60)
                });
                if due {
                    match dht.put(head_item(h)).await {
                        Ok((_, stored, err)) => tracing::debug!(
                            "share {} version {} put on {stored} DHT nodes{}",
                            share_id_hex(&id),
                            h.seq,
                            err.map(|(c, m)| format!(" (error {c}: {m})"))
                                .unwrap_or_default()
                        ),
                        Err(_) => return,
                    }
                    put = Some((h.seq, Instant::now()));
                }
            }
            if newest.is_none() || self.xet.peer_count(&id) == 0 {
                let kind = ItemKind::Mutable {
                    k: None,
                    salt: Vec::new(),
                    min_seq: newest.as_ref().map(|h| h.seq as i64),
                };
                let t0 = Instant::now();
                let got = dht.get(id, kind).await;
                tracing::debug!(
                    "DHT get of share {}: {:?} in {:?}",
                    share_id_hex(&id),
                    got.as_ref().map(|g| g.is_some()),
                    t0.elapsed()
                );
                match got {
                    Ok(Some(it)) => {
                        if let Some(h) = head_from_item(&it).filter(|h| h.verify_for(&id).is_ok()) {
                            if self.xet.offer_head(h.clone(), None) {
                                tracing::info!(
                                    "share {}: version {} from the DHT",
                                    share_id_hex(&id),
                                    h.seq
                                );
                            }
                        }
                    }
                    Ok(None) => {}
                    Err(_) => return,
                }
            }
            // Several writers: their heads are items of their own (salt = share id), put and
            // got like the owner's.
            if let Some(h) = &newest {
                for w in self.xet.writer_heads(&id) {
                    let due = writer_puts.get(&w.public_key).is_none_or(|(seq, at)| {
                        w.seq > *seq || at.elapsed() >= Duration::from_secs(30 * 60)
                    });
                    if due {
                        if dht.put(head_item(&w)).await.is_err() {
                            return;
                        }
                        writer_puts.insert(w.public_key, (w.seq, Instant::now()));
                    }
                }
                if self.xet.peer_count(&id) == 0 {
                    for k in &h.value.writers {
                        let have = self
                            .xet
                            .writer_heads(&id)
                            .iter()
                            .find(|w| &w.public_key == k)
                            .map(|w| w.seq as i64);
                        let kind = ItemKind::Mutable {
                            k: Some(*k),
                            salt: id.to_vec(),
                            min_seq: have,
                        };
                        let target = ccbt_xet::head::feed_id(k, &id);
                        if let Ok(Some(it)) = dht.get(target, kind).await {
                            if let Some(w) = head_from_item(&it) {
                                if let Ok(true) = self.xet.offer_feed(w.clone(), None) {
                                    tracing::info!(
                                        "share {}: writer {} version {} from the DHT",
                                        share_id_hex(&id),
                                        ccbt_core::encoding::to_hex(&k[..4]),
                                        w.seq
                                    );
                                }
                            }
                        }
                    }
                }
            }
            let wait = if newest.is_none() {
                Duration::from_secs(2)
            } else {
                self.head_poll
            };
            let end = tokio::time::Instant::now() + wait;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(end) => break,
                    r = heads.recv() => match r {
                        Ok((s, _)) if s == id => break,
                        Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                        Err(_) => tokio::time::sleep_until(end).await,
                    },
                    r = feeds.recv() => match r {
                        Ok(s) if s == id => break,
                        Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                        Err(_) => tokio::time::sleep_until(end).await,
                    },
                }
            }
        }
    }

    /// Every torrent checkpointed in the data dir, served (and finished if incomplete), with
    /// `peers` to dial; one that cannot start is logged and skipped.
    pub fn serve_checkpoints(&self, peers: &[SocketAddr]) -> Vec<TorrentHandle> {
        let mut torrents = Vec::new();
        for c in ccbt_core::resume::Checkpoint::list(&self.data_dir)
            .into_iter()
            .flatten()
        {
            let Ok(meta) = ccbt_core::Metainfo::from_bytes(&c.torrent) else {
                continue;
            };
            let cfg = ccbt_core::session::TorrentConfig {
                out_dir: c.out_dir.clone(),
                seed: true,
                resume: true,
                data_dir: Some(self.data_dir.clone()),
                only: c.only.clone(),
                skip: c.skip.clone(),
                peers: peers.to_vec(),
                ..Default::default()
            };
            match self.session.add_torrent(meta, cfg) {
                Ok(h) => torrents.push(h),
                Err(e) => tracing::warn!(
                    "cannot serve torrent {}: {e}",
                    ccbt_core::encoding::printable(&c.name)
                ),
            }
        }
        torrents
    }

    /// Stops `torrents` (checkpoints written; bounded) and removes the node's socket.
    pub async fn stop_torrents(&self, torrents: &[TorrentHandle]) {
        for t in torrents {
            t.stop();
        }
        for t in torrents {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), t.finished()).await;
        }
        let _ = std::fs::remove_file(crate::socket::socket_path(&self.data_dir));
    }

    pub fn join_all(self: &Arc<Self>) -> Result<usize> {
        let list = self.shares.list()?;
        for (id, _) in &list {
            self.join(*id)?;
        }
        Ok(list.len())
    }

    pub fn wire_in(&self, id: &ShareId) -> u64 {
        self.swarms
            .lock()
            .unwrap()
            .get(id)
            .map(|h| h.stats().wire_in)
            .unwrap_or(0)
    }

    pub fn data_dir_path(&self) -> PathBuf {
        self.data_dir.clone()
    }

    pub fn status(&self) -> Value {
        let list = self.shares.list().unwrap_or_default();
        let swarms = self.swarms.lock().unwrap();
        // Shares with a record here, and shares followed without one yet (a mount's).
        let mut all: Vec<(ShareId, u64, bool)> =
            list.iter().map(|(id, r)| (*id, r.seq, r.owner)).collect();
        for id in swarms.keys() {
            if !all.iter().any(|(x, _, _)| x == id) {
                let seq = self.xet.newest_head(id).map_or(0, |h| h.seq);
                all.push((*id, seq, false));
            }
        }
        let v: Vec<Value> = all
            .iter()
            .map(|(id, seq, owner)| {
                let c = self.xet.counters(id);
                let st = swarms.get(id).map(|h| h.stats());
                json!({
                    "share": share_id_hex(id), "version": seq, "owner": owner,
                    "peers": self.xet.peer_count(id),
                    "residency": crate::pin::residency_json(self, id),
                    "fetched_chunks": c.fetched_chunks, "fetched_bytes": c.fetched_chunk_bytes + c.fetched_node_bytes,
                    "served_chunks": c.served_chunks, "served_bytes": c.served_bytes,
                    "dedup_chunks": c.dedup_chunks, "dedup_bytes": c.dedup_bytes,
                    "unknown_messages": c.unknown_messages, "refused_requests": c.refused_requests,
                    "wire_in": st.as_ref().map(|s| s.wire_in), "wire_out": st.as_ref().map(|s| s.wire_out),
                    "fetched_from": c.fetched_from.iter().map(|(a, b)| (a.to_string(), *b)).collect::<HashMap<_, _>>(),
                })
            })
            .collect();
        let lat = self.session.runtime_latency();
        json!({
            "listen": self.session.listen_addr().to_string(),
            "shares": v,
            "runtime_latency_ms": {
                "samples": lat.samples, "p50": lat.p50_ms, "p99": lat.p99_ms, "max": lat.max_ms,
            },
        })
    }
}

/// A share head as a BEP 44 mutable item (empty salt): the head is already signed that way.
pub fn head_item(h: &Head) -> PutItem {
    PutItem::Mutable {
        v: h.value.encode(),
        m: MutablePut {
            k: h.public_key,
            salt: h.salt.clone(),
            seq: h.seq as i64,
            sig: h.signature,
            cas: None,
        },
    }
}

/// A verified BEP 44 item back into a share head, if its value is one (not yet checked against
/// a share: call `verify_for`).
pub fn head_from_item(it: &FoundItem) -> Option<Head> {
    let m = it.mutable.as_ref()?;
    if (!m.salt.is_empty() && m.salt.len() != 20) || m.seq < 0 {
        return None;
    }
    let mut b = b"d1:k32:".to_vec();
    b.extend_from_slice(&m.k);
    if !m.salt.is_empty() {
        // A writer's head: its salt is the share id.
        b.extend_from_slice(b"4:salt20:");
        b.extend_from_slice(&m.salt);
    }
    b.extend_from_slice(format!("3:seqi{}e3:sig64:", m.seq).as_bytes());
    b.extend_from_slice(&m.sig);
    b.extend_from_slice(b"1:v");
    b.extend_from_slice(&it.v);
    b.push(b'e');
    let h = Head::decode(&b).ok()?;
    h.verify().ok()?;
    Some(h)
}
