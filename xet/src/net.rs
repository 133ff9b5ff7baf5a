//! The `ccbt_xet` BEP 10 extension (docs/protocol.md): head gossip, requests for chunks and Merkle
//! nodes by hash, data and not-found replies, have-version notices.
//!
//! Wire form: a bencoded header dictionary, then (for `data`) the raw bytes, whose length the
//! header states, so a truncated message is detected. Every reply is re-hashed against the hash that
//! was asked for; heads are checked by signature, share and strictly increasing seq. A peer that
//! sends bad data, a forged head, an oversized reply or a malformed message is banned.

use crate::hash::{chunk_hash, XetHash};
use crate::head::{share_id_hex, Head, HeadError, ShareId};
use crate::shares::Shares;
use crate::tree;
pub use crate::wire::{Kind, Msg, MAX_REPLY};
use bytes::Bytes;
use ccbt_core::extension::{ExtReply, ExtensionHandler, PeerCtx};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, oneshot};

pub const EXT_NAME: &str = "ccbt_xet";
/// Largest reply payload accepted (a max-size chunk).
/// Requests in flight to one peer.
pub const MAX_OUTSTANDING: usize = 32;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Per-share counters (shown by `ccbt status`).
#[derive(Debug, Clone, Default)]
pub struct Counters {
    pub fetched_chunks: u64,
    pub fetched_chunk_bytes: u64,
    pub fetched_nodes: u64,
    pub fetched_node_bytes: u64,
    pub served_chunks: u64,
    pub served_bytes: u64,
    pub dedup_chunks: u64,
    pub dedup_bytes: u64,
    /// Messages of types this version does not know (ignored).
    pub unknown_messages: u64,
    /// Requests refused: the hash is not part of this share (see [`Reach`]).
    pub refused_requests: u64,
    pub fetched_from: HashMap<SocketAddr, u64>,
}

/// What a share's locally held versions reach: every listing, node and chunk hash under their
/// roots. A peer in a share's swarm is served only these, so it cannot read another share's data
/// by asking for its hashes. Walked lazily, and only for versions not walked yet.
#[derive(Default)]
struct Reach {
    /// Versions walked: (share or writer feed, seq); (id, 0) for a CAS swarm's file.
    walked: std::collections::HashSet<([u8; 20], u64)>,
    hashes: std::collections::HashSet<[u8; 32]>,
}

/// Requests from one peer being served at once; more is a peer ignoring the protocol's bound.
const MAX_SERVING: usize = 2 * MAX_OUTSTANDING;

struct PeerState {
    ctx: PeerCtx,
    outstanding: usize,
    seq: u64,
    /// Its requests being served (off the runtime).
    serving: usize,
    /// Smoothed time it takes to answer one of our requests, in ms (a new peer starts low, so
    /// it gets tried).
    srtt_ms: f64,
}

struct Inner {
    heads: HashMap<ShareId, Head>,
    /// Writers' newest heads per share, by writer key (several writers; checked against the
    /// owner's newest head when they arrive, filtered by it again when read).
    feeds: HashMap<ShareId, HashMap<[u8; 32], Head>>,
    peers: HashMap<u64, PeerState>,
    pending: HashMap<(u64, u32), oneshot::Sender<(Kind, Bytes)>>,
    next_id: u32,
    counters: HashMap<ShareId, Counters>,
}

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("no peer of share {0} could supply {1}")]
    Unavailable(String, XetHash),
    #[error(transparent)]
    Tree(#[from] tree::TreeError),
}

/// A node's share-networking state; the extension handler and the sync engine share it.
pub struct ShareNet {
    pub shares: Arc<Shares>,
    inner: Mutex<Inner>,
    heads_tx: broadcast::Sender<(ShareId, u64)>,
    feeds_tx: broadcast::Sender<ShareId>,
    peers_changed: tokio::sync::Notify,
    /// A request slot was freed (fetches waiting for a busy peer wake up).
    slot_freed: tokio::sync::Notify,
    /// Per share, what it may serve (a leaf lock: never held across store reads).
    reach: Mutex<HashMap<ShareId, Arc<Mutex<Reach>>>>,
    /// P2P CAS (a leaf lock).
    cas: Mutex<Cas>,
}

/// Files smaller than this are not worth a swarm of their own on the DHT.
pub const CAS_MIN_SIZE: u64 = 16 << 20;
/// Files one node announces at most.
pub const CAS_MAX_FILES: usize = 64;

/// P2P CAS (DESIGN.md §6): a file held whole is a swarm of its own, its info-hash the first 20
/// bytes of the file's Merkle root, announced on the DHT; a node that needs a large file joins
/// that swarm and asks its peers for the file's chunks and nodes, whatever share they hold it in.
#[derive(Default)]
struct Cas {
    /// Files we hold whole and serve: swarm id -> file root.
    held: HashMap<[u8; 20], [u8; 32]>,
    /// Every CAS swarm we are in (holding or fetching).
    joined: std::collections::HashSet<[u8; 20]>,
    /// Joins a swarm in the session (the node sets it: the session is not ours).
    joiner: Option<Arc<dyn Fn([u8; 20]) + Send + Sync>>,
}

/// A file's CAS swarm id.
pub fn cas_swarm_id(root: &[u8; 32]) -> [u8; 20] {
    root[..20].try_into().unwrap()
}

impl ShareNet {
    pub fn new(shares: Arc<Shares>) -> Arc<ShareNet> {
        let mut heads = HashMap::new();
        let mut feeds: HashMap<ShareId, HashMap<[u8; 32], Head>> = HashMap::new();
        if let Ok(list) = shares.all_records() {
            for (id, r) in list {
                if let Ok(h) = shares.head(&id, None) {
                    match r.of {
                        None => {
                            heads.insert(id, h);
                        }
                        Some(share) => {
                            feeds.entry(share).or_default().insert(h.public_key, h);
                        }
                    }
                }
            }
        }
        Arc::new(ShareNet {
            shares,
            inner: Mutex::new(Inner {
                heads,
                feeds,
                peers: HashMap::new(),
                pending: HashMap::new(),
                next_id: 1,
                counters: HashMap::new(),
            }),
            heads_tx: broadcast::channel(64).0,
            feeds_tx: broadcast::channel(64).0,
            slot_freed: tokio::sync::Notify::new(),
            reach: Mutex::new(HashMap::new()),
            peers_changed: tokio::sync::Notify::new(),
            cas: Mutex::new(Cas::default()),
        })
    }

    /// How the node joins a CAS swarm (`Session::add_cas_swarm`).
    pub fn set_cas_joiner(&self, f: Arc<dyn Fn([u8; 20]) + Send + Sync>) {
        self.cas.lock().unwrap().joiner = Some(f);
    }

    /// We hold the file `root` whole: serve it in its CAS swarm and join (announce) that swarm.
    /// False when the bound on announced files is reached.
    pub fn hold_file(&self, root: [u8; 32]) -> bool {
        let id = cas_swarm_id(&root);
        let join = {
            let mut c = self.cas.lock().unwrap();
            if !c.held.contains_key(&id) && c.held.len() >= CAS_MAX_FILES {
                return false;
            }
            c.held.insert(id, root);
            c.joined.insert(id).then(|| c.joiner.clone()).flatten()
        };
        if let Some(j) = join {
            j(id);
        }
        true
    }

    /// Files held and announced (roots).
    pub fn held_files(&self) -> Vec<[u8; 32]> {
        self.cas.lock().unwrap().held.values().copied().collect()
    }

    /// A read needs the file `root` of `size` bytes: for a large file, join its CAS swarm so
    /// holders found on the DHT can serve it too.
    pub fn want_file(&self, root: [u8; 32], size: u64) {
        if size < CAS_MIN_SIZE || root == [0; 32] {
            return;
        }
        let id = cas_swarm_id(&root);
        let join = {
            let mut c = self.cas.lock().unwrap();
            if c.joined.len() >= 4 * CAS_MAX_FILES {
                return;
            }
            c.joined.insert(id).then(|| c.joiner.clone()).flatten()
        };
        if let Some(j) = join {
            tracing::debug!(
                "joining the CAS swarm of file {}",
                crate::hash::XetHash(root)
            );
            j(id);
        }
    }

    /// The BEP 10 handler to register with the session.
    pub fn extension(self: &Arc<Self>) -> Arc<dyn ExtensionHandler> {
        Arc::new(XetExt(self.clone()))
    }

    pub fn subscribe(&self) -> broadcast::Receiver<(ShareId, u64)> {
        self.heads_tx.subscribe()
    }

    pub fn newest_head(&self, share: &ShareId) -> Option<Head> {
        self.inner.lock().unwrap().heads.get(share).cloned()
    }

    pub fn counters(&self, share: &ShareId) -> Counters {
        self.inner
            .lock()
            .unwrap()
            .counters
            .get(share)
            .cloned()
            .unwrap_or_default()
    }

    pub fn peer_count(&self, share: &ShareId) -> usize {
        self.inner
            .lock()
            .unwrap()
            .peers
            .values()
            .filter(|p| &p.ctx.info_hash == share)
            .count()
    }

    pub(crate) fn count(&self, share: &ShareId, f: impl FnOnce(&mut Counters)) {
        f(self
            .inner
            .lock()
            .unwrap()
            .counters
            .entry(*share)
            .or_default());
    }

    /// Records a verified head; true if it is newer than any known for its share. Newer heads are
    /// pushed to every connected peer of the share at once.
    pub fn offer_head(&self, head: Head, from: Option<u64>) -> bool {
        let share = head.share_id();
        let targets: Vec<PeerCtx> = {
            let mut g = self.inner.lock().unwrap();
            if g.heads.get(&share).is_some_and(|h| h.seq >= head.seq) {
                return false;
            }
            g.heads.insert(share, head.clone());
            g.share_peers(&share, from)
        };
        push_head(&targets, &head);
        let _ = self.heads_tx.send((share, head.seq));
        true
    }

    /// Records a writer's head of a share (checked: signature, and authorized by the owner's
    /// newest head); true if it is newer than any known of that writer. Newer ones are pushed
    /// to the share's other peers, like the owner's.
    pub fn offer_feed(&self, head: Head, from: Option<u64>) -> Result<bool, HeadError> {
        let share = head.writer_of().ok_or(HeadError::WrongKey)?;
        let targets: Vec<PeerCtx> = {
            let mut g = self.inner.lock().unwrap();
            let owner = g.heads.get(&share).ok_or(HeadError::NotAuthorized)?;
            head.verify_writer(&share, owner)?;
            let f = g.feeds.entry(share).or_default();
            if f.get(&head.public_key).is_some_and(|h| h.seq >= head.seq) {
                return Ok(false);
            }
            f.insert(head.public_key, head.clone());
            g.share_peers(&share, from)
        };
        push_head(&targets, &head);
        let _ = self.feeds_tx.send(share);
        Ok(true)
    }

    /// The newest head of each writer the owner's newest head authorizes (sorted by key).
    pub fn writer_heads(&self, share: &ShareId) -> Vec<Head> {
        let g = self.inner.lock().unwrap();
        let Some(owner) = g.heads.get(share) else {
            return Vec::new();
        };
        let mut v: Vec<Head> = g
            .feeds
            .get(share)
            .map(|f| {
                f.values()
                    .filter(|h| owner.value.writers.contains(&h.public_key))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        v.sort_by_key(|h| h.public_key);
        v
    }

    /// What a share's merged view is made of: the owner's newest seq and each authorized
    /// writer's; it changes exactly when the view may.
    pub fn view_key(&self, share: &ShareId) -> Vec<([u8; 32], u64)> {
        let mut v: Vec<([u8; 32], u64)> = self
            .newest_head(share)
            .map(|h| (h.public_key, h.seq))
            .into_iter()
            .collect();
        v.extend(
            self.writer_heads(share)
                .iter()
                .map(|h| (h.public_key, h.seq)),
        );
        v
    }

    /// Wakes when a writer's head arrives (for any share).
    pub fn subscribe_feeds(&self) -> broadcast::Receiver<ShareId> {
        self.feeds_tx.subscribe()
    }

    /// Whether a connected peer of the share said it holds version `seq` (or newer) whole.
    pub fn peer_holds(&self, share: &ShareId, seq: u64) -> bool {
        self.inner
            .lock()
            .unwrap()
            .peers
            .values()
            .any(|p| &p.ctx.info_hash == share && p.seq >= seq)
    }

    /// Tells peers we now hold version `seq` completely.
    pub fn have_version(&self, share: &ShareId, seq: u64) {
        let g = self.inner.lock().unwrap();
        let msg = Msg::HaveVersion { seq }.encode();
        for p in g.peers.values().filter(|p| &p.ctx.info_hash == share) {
            p.ctx.sender.send(EXT_NAME, msg.clone());
        }
    }

    /// Waits until the share has at least one connected peer (bounded).
    pub async fn wait_for_peer(&self, share: &ShareId, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Registered before the check, so a peer that connects in between is not missed.
            let n = self.peers_changed.notified();
            tokio::pin!(n);
            n.as_mut().enable();
            if self.peer_count(share) > 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, n).await.is_err() {
                return self.peer_count(share) > 0;
            }
        }
    }

    /// Fetches a chunk or node by hash from the share's peers, verifying it; tries peers in turn
    /// (least busy first, those holding `min_seq` preferred). Bad data bans the sender.
    pub async fn fetch(
        &self,
        share: &ShareId,
        hash: XetHash,
        kind: Kind,
        min_seq: u64,
    ) -> Result<(Kind, Bytes), NetError> {
        let mut tried: Vec<u64> = Vec::new();
        let mut attempts = 0;
        // Waiting for a busy peer's slot is not an attempt, but it is bounded too.
        let give_up = tokio::time::Instant::now() + 3 * REQUEST_TIMEOUT;
        while attempts < 8 {
            let cas = self.cas.lock().unwrap().joined.clone();
            let picked = {
                let mut g = self.inner.lock().unwrap();
                // Peers holding `min_seq` first (a CAS swarm's holders are not behind: they
                // hold files by root), then the soonest to answer (its queue times its smoothed
                // answer time: a slow peer is left for the fast ones even when idle), the
                // share's own peers on a tie.
                let mut cands: Vec<(bool, u64, bool, u64)> = g
                    .peers
                    .values()
                    .filter(|p| {
                        (&p.ctx.info_hash == share || cas.contains(&p.ctx.info_hash))
                            && !tried.contains(&p.ctx.key)
                            && p.outstanding < MAX_OUTSTANDING
                    })
                    .map(|p| {
                        let cas_peer = &p.ctx.info_hash != share;
                        (
                            !cas_peer && p.seq < min_seq,
                            ((p.outstanding + 1) as f64 * p.srtt_ms) as u64,
                            cas_peer,
                            p.ctx.key,
                        )
                    })
                    .collect();
                cands.sort();
                match cands.first() {
                    Some(&(_, _, _, key)) => {
                        let id = g.next_id;
                        g.next_id = g.next_id.wrapping_add(1).max(1);
                        let (tx, rx) = oneshot::channel();
                        g.pending.insert((key, id), tx);
                        let p = g.peers.get_mut(&key).expect("listed");
                        p.outstanding += 1;
                        Some((key, id, rx, p.ctx.clone()))
                    }
                    None => None,
                }
            };
            let Some((key, id, rx, ctx)) = picked else {
                // Everyone busy or tried: wait for a free slot or new peers.
                let peers =
                    self.peer_count(share) + cas.iter().map(|c| self.peer_count(c)).sum::<usize>();
                if tried.len() >= peers.max(1) {
                    tried.clear();
                }
                if peers == 0 {
                    attempts += 1;
                } else if tokio::time::Instant::now() >= give_up {
                    break;
                }
                let _ = tokio::time::timeout(Duration::from_millis(20), self.slot_freed.notified())
                    .await;
                continue;
            };
            attempts += 1;
            ctx.sender.send(
                EXT_NAME,
                Msg::Req {
                    id,
                    kind,
                    hash: hash.0,
                }
                .encode(),
            );
            let asked = std::time::Instant::now();
            let res = tokio::time::timeout(REQUEST_TIMEOUT, rx).await;
            {
                let mut g = self.inner.lock().unwrap();
                g.pending.remove(&(key, id));
                if let Some(p) = g.peers.get_mut(&key) {
                    p.outstanding = p.outstanding.saturating_sub(1);
                    // Answers and timeouts both teach how long this peer takes.
                    let ms = asked.elapsed().as_secs_f64() * 1000.0;
                    p.srtt_ms = p.srtt_ms * 0.75 + ms * 0.25;
                }
            }
            self.slot_freed.notify_one();
            tried.push(key);
            let Ok(Ok((got_kind, data))) = res else {
                tracing::trace!("{} has no {hash} (or timed out)", ctx.addr);
                continue;
            };
            let ok = match got_kind {
                Kind::Chunk => kind != Kind::Node && chunk_hash(&data) == hash,
                Kind::Node => kind != Kind::Chunk && tree::parse_node(hash, &data).is_ok(),
                Kind::Any => false,
            };
            if !ok {
                ctx.sender
                    .ban(format!("sent data that does not match {hash}"));
                continue;
            }
            self.count(share, |c| {
                *c.fetched_from.entry(ctx.addr).or_default() += data.len() as u64;
                if got_kind == Kind::Chunk {
                    c.fetched_chunks += 1;
                    c.fetched_chunk_bytes += data.len() as u64;
                } else {
                    c.fetched_nodes += 1;
                    c.fetched_node_bytes += data.len() as u64;
                }
            });
            return Ok((got_kind, data));
        }
        Err(NetError::Unavailable(share_id_hex(share), hash))
    }

    /// The signed head of an old version `seq`, asked of the share's connected peers in turn
    /// (each answer checked: signature, share, seq). Not stored: the caller uses it to read that
    /// version (the store keeps heads whose data it holds).
    pub async fn fetch_head(&self, share: &ShareId, seq: u64) -> Option<Head> {
        let peers: Vec<PeerCtx> = {
            let g = self.inner.lock().unwrap();
            g.peers
                .values()
                .filter(|p| &p.ctx.info_hash == share)
                .map(|p| p.ctx.clone())
                .take(8)
                .collect()
        };
        for ctx in peers {
            let (id, rx) = {
                let mut g = self.inner.lock().unwrap();
                let id = g.next_id;
                g.next_id = g.next_id.wrapping_add(1).max(1);
                let (tx, rx) = oneshot::channel();
                g.pending.insert((ctx.key, id), tx);
                (id, rx)
            };
            ctx.sender.send(EXT_NAME, Msg::HeadReq { id, seq }.encode());
            // A peer of an older version ignores the request: do not wait long for it.
            let res = tokio::time::timeout(Duration::from_secs(5), rx).await;
            self.inner.lock().unwrap().pending.remove(&(ctx.key, id));
            let Ok(Ok((Kind::Any, data))) = res else {
                continue;
            };
            match Head::decode(&data) {
                Ok(h) if h.seq == seq && h.verify_for(share).is_ok() => return Some(h),
                _ => ctx.sender.ban(format!(
                    "sent a head that is not version {seq} of this share"
                )),
            }
        }
        None
    }

    /// What a CAS swarm serves: the nodes and chunks of its one file (walked once).
    fn file_reach(&self, id: &[u8; 20], root: [u8; 32]) -> Arc<Mutex<Reach>> {
        let r = self.reach.lock().unwrap().entry(*id).or_default().clone();
        let mut g = r.lock().unwrap();
        if g.walked.contains(&(*id, 0)) {
            return r.clone();
        }
        let mut stack = vec![root];
        while let Some(h) = stack.pop() {
            if !g.hashes.insert(h) {
                continue;
            }
            if let Ok(Some(text)) = self.shares.store.get_node(&h) {
                if let Ok(kids) = tree::parse_node(XetHash(h), &text) {
                    stack.extend(kids.iter().map(|k| k.hash.0));
                }
            }
        }
        g.walked.insert((*id, 0));
        drop(g);
        r
    }

    /// Brings a share's [`Reach`] up to the versions held locally. Blocking (store reads); the
    /// share's reach lock is held meanwhile so two requests never walk the same version.
    fn update_reach(&self, share: &ShareId) -> Arc<Mutex<Reach>> {
        let r = self
            .reach
            .lock()
            .unwrap()
            .entry(*share)
            .or_default()
            .clone();
        // The share's versions and those of its writers' feeds held here (point lookups).
        let mut ids = vec![*share];
        if let Some(f) = self.inner.lock().unwrap().feeds.get(share) {
            ids.extend(f.values().map(Head::feed_id));
        }
        let newest: Vec<([u8; 20], u64)> = ids
            .iter()
            .filter_map(|id| Some((*id, self.shares.record(id).ok()??.seq)))
            .collect();
        let mut g = r.lock().unwrap();
        if newest.iter().all(|v| g.walked.contains(v)) {
            return r.clone();
        }
        let store = &self.shares.store;
        let versions = newest.iter().flat_map(|(id, _)| {
            self.shares
                .versions(id)
                .unwrap_or_default()
                .into_iter()
                .map(move |v| (*id, v))
        });
        for (id, v) in versions {
            if g.walked.contains(&(id, v.seq)) {
                continue;
            }
            let Ok(head) = Head::decode(&v.head) else {
                continue;
            };
            let mut stack = vec![head.value.root];
            // A version whose listing is not here yet is walked again later.
            let complete = match self.shares.listing(&head) {
                Ok(entries) => {
                    stack.extend(entries.iter().map(|e| e.root));
                    true
                }
                Err(_) => false,
            };
            while let Some(h) = stack.pop() {
                if h == [0; 32] || !g.hashes.insert(h) {
                    continue;
                }
                if let Ok(Some(text)) = store.get_node(&h) {
                    if let Ok(kids) = tree::parse_node(XetHash(h), &text) {
                        stack.extend(kids.iter().map(|k| k.hash.0));
                    }
                }
            }
            if complete {
                g.walked.insert((id, v.seq));
            }
        }
        drop(g);
        r
    }

    /// A node or chunk of `share` for a peer in its swarm (blocking: store reads).
    fn serve(&self, share: &ShareId, kind: Kind, hash: &[u8; 32]) -> Option<(Kind, Vec<u8>)> {
        let file = self.cas.lock().unwrap().held.get(share).copied();
        let reach = match file {
            Some(root) => self.file_reach(share, root),
            None => self.update_reach(share),
        };
        if !reach.lock().unwrap().hashes.contains(hash) {
            tracing::debug!(
                "refusing {} in swarm {} (not its data)",
                XetHash(*hash),
                ccbt_core::encoding::to_hex(share)
            );
            self.count(share, |k| k.refused_requests += 1);
            return None;
        }
        let store = &self.shares.store;
        if kind != Kind::Chunk {
            if let Ok(Some(n)) = store.get_node(hash) {
                return Some((Kind::Node, n));
            }
        }
        if kind != Kind::Node {
            if let Ok(Some(c)) = store.get_chunk(hash) {
                self.count(share, |k| {
                    k.served_chunks += 1;
                    k.served_bytes += c.len() as u64;
                });
                return Some((Kind::Chunk, c));
            }
        }
        None
    }
}

impl Inner {
    /// The share's connected peers but `except` (the one a head came from).
    fn share_peers(&self, share: &ShareId, except: Option<u64>) -> Vec<PeerCtx> {
        self.peers
            .values()
            .filter(|p| &p.ctx.info_hash == share && Some(p.ctx.key) != except)
            .map(|p| p.ctx.clone())
            .collect()
    }
}

/// Sends a head (the owner's or a writer's) to `targets`.
fn push_head(targets: &[PeerCtx], head: &Head) {
    let msg = Msg::Head(head.encode()).encode();
    for p in targets {
        p.sender.send(EXT_NAME, msg.clone());
    }
}

struct XetExt(Arc<ShareNet>);

impl XetExt {
    /// Counts a request being served; a peer past the bound is banned.
    fn begin_serving(&self, key: u64) -> Result<(), ExtReply> {
        let mut g = self.0.inner.lock().unwrap();
        let Some(p) = g.peers.get_mut(&key) else {
            return Err(ExtReply::default());
        };
        if p.serving >= MAX_SERVING {
            return Err(ExtReply {
                send: vec![],
                ban: Some(format!(
                    "more than {MAX_SERVING} ccbt_xet requests in flight"
                )),
            });
        }
        p.serving += 1;
        Ok(())
    }
}

impl ExtensionHandler for XetExt {
    fn name(&self) -> &'static str {
        EXT_NAME
    }

    fn on_connect(&self, peer: &PeerCtx) -> ExtReply {
        let head = {
            let mut g = self.0.inner.lock().unwrap();
            g.peers.insert(
                peer.key,
                PeerState {
                    ctx: peer.clone(),
                    outstanding: 0,
                    seq: 0,
                    serving: 0,
                    srtt_ms: 20.0,
                },
            );
            g.heads.get(&peer.info_hash).cloned()
        };
        self.0.peers_changed.notify_waiters();
        let mut r = ExtReply::default();
        if let Some(h) = head {
            r.send.push(Msg::Head(h.encode()).encode());
            if self.0.shares.head(&peer.info_hash, Some(h.seq)).is_ok() {
                r.send.push(Msg::HaveVersion { seq: h.seq }.encode());
            }
            // The writers' heads after the owner's (which authorizes them).
            for w in self.0.writer_heads(&peer.info_hash) {
                r.send.push(Msg::Head(w.encode()).encode());
            }
        }
        r
    }

    fn on_message(&self, peer: &PeerCtx, payload: Bytes) -> ExtReply {
        let share = peer.info_hash;
        let msg = match Msg::decode(payload) {
            Ok(m) => m,
            Err(e) => {
                return ExtReply {
                    send: vec![],
                    ban: Some(format!("malformed ccbt_xet message: {e}")),
                }
            }
        };
        match msg {
            Msg::Head(b) => {
                let head = match Head::decode(&b) {
                    Ok(h) => h,
                    Err(e) => {
                        return ExtReply {
                            send: vec![],
                            ban: Some(format!("malformed head: {e}")),
                        }
                    }
                };
                if !head.salt.is_empty() {
                    return match self.0.offer_feed(head, Some(peer.key)) {
                        Ok(_) => ExtReply::default(),
                        // A writer the owner's head we know does not list (perhaps not yet,
                        // perhaps no longer): not news, but not a forgery either.
                        Err(HeadError::NotAuthorized) => {
                            tracing::debug!(
                                "{}: ignoring a head by a writer not authorized in {}",
                                peer.addr,
                                share_id_hex(&share)
                            );
                            self.0.count(&share, |k| k.refused_requests += 1);
                            ExtReply::default()
                        }
                        Err(e) => ExtReply {
                            send: vec![],
                            ban: Some(format!("forged writer head: {e}")),
                        },
                    };
                }
                if let Err(e) = head.verify_for(&share) {
                    return ExtReply {
                        send: vec![],
                        ban: Some(format!("forged head: {e}")),
                    };
                }
                // An old or replayed head is simply not news.
                self.0.offer_head(head, Some(peer.key));
                ExtReply::default()
            }
            Msg::Req { id, kind, hash } => {
                tracing::debug!("{} asks for {} ({kind:?})", peer.addr, XetHash(hash));
                if let Err(r) = self.begin_serving(peer.key) {
                    return r;
                }
                // Store reads run off the runtime's workers; the reply goes out when ready.
                let node = self.0.clone();
                let (key, sender) = (peer.key, peer.sender.clone());
                tokio::task::spawn_blocking(move || {
                    let reply = match node.serve(&share, kind, &hash) {
                        Some((k, data)) => Msg::Data {
                            id,
                            kind: k,
                            data: Bytes::from(data),
                        },
                        None => Msg::NotFound { id },
                    };
                    sender.send(EXT_NAME, reply.encode());
                    if let Some(p) = node.inner.lock().unwrap().peers.get_mut(&key) {
                        p.serving = p.serving.saturating_sub(1);
                    }
                });
                ExtReply::default()
            }
            Msg::Data { id, kind, data } => {
                if let Some(tx) = self.0.inner.lock().unwrap().pending.remove(&(peer.key, id)) {
                    let _ = tx.send((kind, data));
                }
                ExtReply::default()
            }
            Msg::HeadReq { id, seq } => {
                if let Err(r) = self.begin_serving(peer.key) {
                    return r;
                }
                let node = self.0.clone();
                let (key, sender) = (peer.key, peer.sender.clone());
                // A store read: off the runtime's workers.
                tokio::task::spawn_blocking(move || {
                    let reply = match node.shares.store.get_head(&share, seq) {
                        Ok(Some(h)) => Msg::HeadRep { id, head: h },
                        _ => Msg::NotFound { id },
                    };
                    sender.send(EXT_NAME, reply.encode());
                    if let Some(p) = node.inner.lock().unwrap().peers.get_mut(&key) {
                        p.serving = p.serving.saturating_sub(1);
                    }
                });
                ExtReply::default()
            }
            Msg::HeadRep { id, head } => {
                // Sent as `Any`: a chunk or node request answered with it bans the peer.
                if let Some(tx) = self.0.inner.lock().unwrap().pending.remove(&(peer.key, id)) {
                    let _ = tx.send((Kind::Any, Bytes::from(head)));
                }
                ExtReply::default()
            }
            Msg::NotFound { id } => {
                // Dropping the sender wakes the waiter, which tries another peer.
                self.0.inner.lock().unwrap().pending.remove(&(peer.key, id));
                ExtReply::default()
            }
            Msg::HaveVersion { seq } => {
                if let Some(p) = self.0.inner.lock().unwrap().peers.get_mut(&peer.key) {
                    p.seq = p.seq.max(seq);
                }
                ExtReply::default()
            }
            Msg::Unknown(t) => {
                tracing::debug!(
                    "{} sent a ccbt_xet message of unknown type {:?}: ignored",
                    peer.addr,
                    String::from_utf8_lossy(&t)
                );
                self.0.count(&share, |k| k.unknown_messages += 1);
                ExtReply::default()
            }
        }
    }

    fn on_disconnect(&self, peer: &PeerCtx) {
        let mut g = self.0.inner.lock().unwrap();
        g.peers.remove(&peer.key);
        g.pending.retain(|(k, _), _| *k != peer.key);
        drop(g);
        self.0.peers_changed.notify_waiters();
    }
}
