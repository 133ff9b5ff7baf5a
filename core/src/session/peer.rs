//! One peer connection: handshake, then a reader loop (messages in, requests out, uploads served)
//! and a writer task fed by a bounded channel (backpressure, upload rate limits).

use super::transport::{self, PeerStream};
use super::{Cmd, PeerEntry, TorrentShared};
use crate::extension::{ExtHandshake, PeerCtx};
use crate::picker::Block;
use crate::wire::{Bitfield, Decoder, Handshake, Message, BLOCK_SIZE, MAX_REQUEST};
use bytes::{Bytes, BytesMut};
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Upload requests queued per peer; more are dropped (the peer re-requests).
const MAX_UPLOAD_QUEUE: usize = 512;
/// Deepest request pipeline.
const MAX_PIPELINE: usize = 1024;
/// A peer that sends nothing for this long while we wait on it loses its requests.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// A block still missing this long after it was asked for, while the peer's measured rate says
/// it should have come long ago (and at least [`STUCK_MIN`]), was dropped by the peer: it goes to
/// another peer and this one does not get it again for [`SHUN_FOR`] (unless it is our only peer).
const STUCK_FACTOR: f64 = 4.0;
const STUCK_MIN: Duration = Duration::from_secs(2);
const SHUN_FOR: Duration = Duration::from_secs(3);
/// AllowedFast pieces kept per peer (BEP 6 suggests about 10).
const MAX_ALLOWED_FAST: usize = 64;
const IDLE_TIMEOUT: Duration = Duration::from_secs(180);

/// Upload bytes read from disk and not yet handed to the socket, per peer. A block is read only
/// once the peer's queue has room, so a peer that never reads its socket costs at most this much
/// memory (plus the writer's batch), however much it requests.
const UPLOAD_BUDGET: usize = 1 << 20;

enum Out {
    Msg(Message),
    /// A piece block: rate-limited and counted as upload. Its permit holds its bytes in the
    /// peer's upload budget until it is encoded for the socket.
    Block(Message, usize, tokio::sync::OwnedSemaphorePermit),
}

async fn writer(
    mut w: transport::PeerWriter,
    mut rx: mpsc::Receiver<Out>,
    t: Arc<TorrentShared>,
    key: u64,
) {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        // Batch what is queued into one write.
        while let Some(o) = next.take() {
            match o {
                Out::Msg(m) => {
                    // Share data (ccbt_xet chunks) counts against the session's upload limit
                    // like piece blocks; small control messages do not wait.
                    let n = match &m {
                        Message::Extended { payload, .. } if payload.len() > 4096 => payload.len(),
                        _ => 0,
                    };
                    let d = if n > 0 {
                        t.up.take(n).max(t.session.up.take(n))
                    } else {
                        Duration::ZERO
                    };
                    if !d.is_zero() {
                        if !buf.is_empty() && w.send(&mut buf).await.is_err() {
                            return;
                        }
                        buf.clear();
                        tokio::time::sleep(d).await;
                    }
                    m.encode(&mut buf)
                }
                Out::Block(m, n, _permit) => {
                    let d = t.up.take(n).max(t.session.up.take(n));
                    if !d.is_zero() {
                        if !buf.is_empty() && w.send(&mut buf).await.is_err() {
                            return;
                        }
                        buf.clear();
                        tokio::time::sleep(d).await;
                    }
                    m.encode(&mut buf);
                    let mut s = t.state.lock().unwrap();
                    s.uploaded += n as u64;
                    if let Some(p) = s.peers.get_mut(&key) {
                        p.up_total += n as u64;
                    }
                }
            }
            if buf.len() < 256 * 1024 {
                next = rx.try_recv().ok();
            }
        }
        if w.send(&mut buf).await.is_err() {
            return;
        }
        t.wire_out
            .fetch_add(buf.len() as u64, std::sync::atomic::Ordering::Relaxed);
        buf.clear();
    }
    let _ = w.shutdown().await;
}

struct Conn {
    t: Arc<TorrentShared>,
    key: u64,
    ctx: PeerCtx,
    out: mpsc::Sender<Out>,
    peer_choking: bool,
    am_interested: bool,
    bitfield: Bitfield,
    /// Blocks asked of this peer, with when.
    outstanding: HashMap<Block, Instant>,
    /// Blocks this peer dropped (timed out): asked of others for a while.
    shunned: HashMap<Block, Instant>,
    /// Blocks a second, smoothed: how soon an asked block should come.
    block_rate: f64,
    /// Both sides speak BEP 6 (have all/none, reject, allowed fast, suggest).
    fast: bool,
    /// Pieces the peer lets us ask for while it chokes us (BEP 6).
    allowed_fast: HashSet<u32>,
    last_block: Instant,
    last_recv: Instant,
    ext: Option<ExtHandshake>,
    peer_reqq: usize,
    uploads: VecDeque<(u32, u32, u32)>,
    up_budget: Arc<tokio::sync::Semaphore>,
    pipeline: usize,
    blocks_this_second: usize,
    /// ut_metadata requests this peer made (BEP 9 flood protection).
    meta_requests: u32,
    /// PEX: the peers this peer has heard of from us, and when we last sent or received.
    pex_sent: HashSet<SocketAddr>,
    pex_last_sent: Option<Instant>,
    pex_last_recv: Option<Instant>,
    /// When its extension handshake arrived.
    ext_at: Option<Instant>,
}

/// PEX: the first message goes this soon after the extension handshake, then one a minute
/// (BEP 11: not more often); messages a peer sends faster than `PEX_MIN_GAP` are ignored.
const PEX_FIRST: Duration = Duration::from_secs(3);
const PEX_EVERY: Duration = Duration::from_secs(60);
const PEX_MIN_GAP: Duration = Duration::from_secs(20);

#[derive(Debug)]
enum Reason {
    Closed,
    Protocol(String),
    Ban(String),
}

pub(crate) async fn run(
    t: Arc<TorrentShared>,
    stream: PeerStream,
    addr: SocketAddr,
    incoming: Option<Handshake>,
) {
    let key = t.session.key();
    let r = run_inner(t.clone(), stream, addr, incoming, key).await;
    let mut s = t.state.lock().unwrap();
    if let Some(p) = s.peers.remove(&key) {
        // A connection that lasted was a good peer: if it goes, redial it at once and then
        // quickly (a restarting client), not after the backoff its early dials built up.
        if p.connected_at.elapsed() >= super::REDIAL_RESET_AFTER {
            s.reset_backoff(addr);
        }
    }
    match r {
        Ok(()) | Err(Reason::Closed) => tracing::debug!("peer {addr} closed"),
        Err(Reason::Protocol(m)) => tracing::info!("dropped peer {addr}: {m}"),
        Err(Reason::Ban(m)) => {
            tracing::warn!(
                "banned peer {}: {}",
                addr.ip(),
                crate::encoding::printable(&m)
            );
            s.banned.insert(addr.ip());
        }
    }
}

async fn run_inner(
    t: Arc<TorrentShared>,
    mut stream: PeerStream,
    addr: SocketAddr,
    incoming: Option<Handshake>,
    key: u64,
) -> Result<(), Reason> {
    let ours = Handshake::new(t.info_hash, t.session.peer_id);
    let outgoing = incoming.is_none();
    tracing::debug!(
        "peer {addr}: {}",
        if stream.encrypted {
            "MSE, RC4"
        } else {
            "plaintext"
        }
    );
    let theirs = transport::handshake(&mut stream, &ours, incoming)
        .await
        .map_err(Reason::Protocol)?;
    if theirs.peer_id == t.session.peer_id {
        return Err(Reason::Protocol("connected to ourselves".into()));
    }
    let (cmd_tx, mut cmd_rx) = mpsc::unbounded_channel();
    let n = t.expected.len();
    {
        let mut s = t.state.lock().unwrap();
        if s.banned.contains(&addr.ip()) || s.banned_ids.contains(&theirs.peer_id) {
            return Err(Reason::Protocol("banned".into()));
        }
        if s.peers.values().any(|p| p.peer_id == theirs.peer_id) {
            return Err(Reason::Protocol("already connected to this peer".into()));
        }
        if s.peers.len() >= t.max_peers.load(std::sync::atomic::Ordering::Relaxed) {
            match s.evictable(Instant::now()) {
                Some(k) => {
                    // Its task removes it (and its availability) as it ends.
                    let victim = s.peers.get_mut(&k).expect("listed");
                    victim.evicted = true;
                    tracing::info!(
                        "peer limit reached: dropping idle peer {} to make room for {addr}",
                        victim.addr
                    );
                    let _ = victim.cmd.send(Cmd::Close);
                }
                None => return Err(Reason::Protocol("peer limit reached".into())),
            }
        }
        s.peers.insert(
            key,
            PeerEntry {
                addr,
                peer_id: theirs.peer_id,
                cmd: cmd_tx,
                bitfield: Bitfield::new(n),
                interested: false,
                choked_by_us: true,
                down_total: 0,
                up_total: 0,
                last_down: 0,
                last_up: 0,
                down_rate: 0.0,
                up_rate: 0.0,
                connected_at: Instant::now(),
                evicted: false,
                // Where others can reach it: the address we dialed; an incoming peer's comes
                // with its extension handshake (its listen port).
                reachable: outgoing.then_some(addr),
                outgoing,
            },
        );
        s.add_known_connected(addr);
    }
    let (rd, wr) = stream.into_split();
    let (out_tx, out_rx) = mpsc::channel(256);
    let (ext_tx, mut ext_rx) = mpsc::unbounded_channel();
    tokio::spawn(writer(wr, out_rx, t.clone(), key));
    let mut c = Conn {
        ctx: PeerCtx {
            addr,
            peer_id: theirs.peer_id,
            info_hash: t.info_hash,
            key,
            sender: crate::extension::ExtSender(ext_tx),
        },
        t: t.clone(),
        key,
        out: out_tx,
        peer_choking: true,
        am_interested: false,
        bitfield: Bitfield::new(n),
        outstanding: HashMap::new(),
        shunned: HashMap::new(),
        block_rate: 0.0,
        fast: ours.supports_fast() && theirs.supports_fast(),
        allowed_fast: HashSet::new(),
        last_block: Instant::now(),
        last_recv: Instant::now(),
        ext: None,
        peer_reqq: 250,
        uploads: VecDeque::new(),
        up_budget: Arc::new(tokio::sync::Semaphore::new(UPLOAD_BUDGET)),
        pipeline: t.cfg.pipeline_depth.max(4),
        blocks_this_second: 0,
        meta_requests: 0,
        pex_sent: HashSet::new(),
        pex_last_sent: None,
        pex_last_recv: None,
        ext_at: None,
    };
    let res = c.session(rd, &theirs, &mut cmd_rx, &mut ext_rx).await;
    // Give back what we asked this peer for.
    {
        let mut s = t.state.lock().unwrap();
        let out: Vec<Block> = c.outstanding.drain().map(|(b, _)| b).collect();
        s.picker.peer_gone(&c.bitfield, &out);
    }
    if c.ext.is_some() {
        for h in t.session.registry.handlers() {
            h.on_disconnect(&c.ctx);
        }
    }
    res
}

impl Conn {
    async fn send(&self, m: Message) -> Result<(), Reason> {
        self.out.send(Out::Msg(m)).await.map_err(|_| Reason::Closed)
    }

    async fn session(
        &mut self,
        mut rd: transport::PeerReader,
        theirs: &Handshake,
        cmd_rx: &mut mpsc::UnboundedReceiver<Cmd>,
        ext_rx: &mut mpsc::UnboundedReceiver<crate::extension::ExtCommand>,
    ) -> Result<(), Reason> {
        // Opening messages: our pieces first (BEP 3: a bitfield is only valid as the first
        // message), then the extension handshake.
        let have = self.t.state.lock().unwrap().picker.have().clone();
        if self.fast && have.count() == have.len() {
            self.send(Message::HaveAll).await?;
        } else if self.fast && have.count() == 0 {
            self.send(Message::HaveNone).await?;
        } else if have.count() > 0 {
            self.send(Message::Bitfield(Bytes::copy_from_slice(have.as_bytes())))
                .await?;
        }
        if theirs.supports_extensions() {
            let mut m = self.t.session.registry.advertised();
            let serve_meta = self.ut_metadata_id();
            if let Some(id) = serve_meta {
                m.insert(crate::metadata::NAME.to_string(), id);
            }
            if let Some(id) = self.ut_pex_id() {
                m.insert(crate::pex::NAME.to_string(), id);
            }
            let h = ExtHandshake {
                m,
                client: Some(format!("ccbt {}", env!("CARGO_PKG_VERSION"))),
                listen_port: Some(self.t.session.listen_addr.port()),
                reqq: Some(MAX_UPLOAD_QUEUE as u32),
                metadata_size: serve_meta.map(|_| self.t.meta.info_bytes.len() as u64),
            };
            self.send(Message::Extended {
                id: 0,
                payload: Bytes::from(h.encode()),
            })
            .await?;
        }
        let mut dec = Decoder::default();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut last_sent_keepalive = Instant::now();
        loop {
            tokio::select! {
                r = rd.read_buf(dec.buffer()) => {
                    let n = r.map_err(|e| Reason::Protocol(e.to_string()))?;
                    if n == 0 {
                        return Err(Reason::Closed);
                    }
                    self.t.wire_in.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
                    self.last_recv = Instant::now();
                    loop {
                        match dec.next_message() {
                            Ok(Some(m)) => {
                                let limited = matches!(m, Message::Piece { .. });
                                let len = if let Message::Piece { data, .. } = &m { data.len() } else { 0 };
                                self.handle(m).await?;
                                if limited {
                                    let d = self.t.down.take(len).max(self.t.session.down.take(len));
                                    if !d.is_zero() {
                                        tokio::time::sleep(d).await;
                                    }
                                }
                            }
                            Ok(None) => break,
                            Err(e) => return Err(Reason::Ban(format!("protocol violation: {e}"))),
                        }
                    }
                }
                Some(ec) = ext_rx.recv() => {
                    match ec {
                        crate::extension::ExtCommand::Send(name, payload) => {
                            if let Some(pid) = self.peer_ext_id(name) {
                                self.send(Message::Extended { id: pid, payload }).await?;
                            }
                        }
                        crate::extension::ExtCommand::Ban(why) => return Err(Reason::Ban(why)),
                    }
                }
                cmd = cmd_rx.recv() => {
                    match cmd {
                        None | Some(Cmd::Close) => return Ok(()),
                        Some(Cmd::Have(i)) => {
                            self.send(Message::Have(i)).await?;
                            self.update_interest().await?;
                        }
                        Some(Cmd::Choke) => {
                            self.send(Message::Choke).await?;
                            // BEP 6: a choke no longer drops queued requests silently.
                            for (index, begin, length) in std::mem::take(&mut self.uploads) {
                                if self.fast {
                                    self.send(Message::Reject { index, begin, length }).await?;
                                }
                            }
                        }
                        Some(Cmd::Unchoke) => self.send(Message::Unchoke).await?,
                        Some(Cmd::Cancel(b)) => {
                            if self.outstanding.remove(&b).is_some() {
                                let length = self.t.state.lock().unwrap().picker.block_len(b);
                                self.send(Message::Cancel { index: b.piece, begin: b.block * BLOCK_SIZE, length }).await?;
                            }
                        }
                    }
                }
                _ = tick.tick() => {
                    let now = Instant::now();
                    if now.duration_since(self.last_recv) > IDLE_TIMEOUT {
                        return Err(Reason::Protocol("idle".into()));
                    }
                    if !self.outstanding.is_empty() && now.duration_since(self.last_block) > REQUEST_TIMEOUT {
                        // Snubbed: hand its requests to others.
                        let mut s = self.t.state.lock().unwrap();
                        for (b, _) in self.outstanding.drain() {
                            s.picker.unrequest(b);
                        }
                        self.last_block = now;
                    }
                    self.block_rate = self.block_rate * 0.7 + self.blocks_this_second as f64 * 0.3;
                    self.release_stuck(now).await?;
                    if now.duration_since(last_sent_keepalive) > Duration::from_secs(60) {
                        self.send(Message::KeepAlive).await?;
                        last_sent_keepalive = now;
                    }
                    self.maybe_send_pex(now).await?;
                    // Adapt the pipeline to about a second of this peer's rate.
                    let want = (self.blocks_this_second * 2).clamp(self.t.cfg.pipeline_depth.max(4), MAX_PIPELINE);
                    // Below the peer's reqq: Transmission drops the reqq-th request silently.
                    self.pipeline = want.min(self.peer_reqq.saturating_sub(1)).max(1);
                    self.blocks_this_second = 0;
                    if self.t.stopping.load(std::sync::atomic::Ordering::Relaxed) {
                        return Ok(());
                    }
                }
            }
            self.serve_uploads().await?;
            self.fill_requests().await?;
        }
    }

    async fn update_interest(&mut self) -> Result<(), Reason> {
        let want = self
            .t
            .state
            .lock()
            .unwrap()
            .picker
            .interesting(&self.bitfield);
        if want != self.am_interested {
            self.am_interested = want;
            self.send(if want {
                Message::Interested
            } else {
                Message::NotInterested
            })
            .await?;
        }
        Ok(())
    }

    /// The peer's pieces are now `bf` (a bitfield, have all, have none).
    fn replace_bitfield(&mut self, bf: Bitfield) {
        let mut s = self.t.state.lock().unwrap();
        s.picker.peer_gone(&self.bitfield, &[]);
        s.picker.peer_bitfield(&bf);
        if let Some(p) = s.peers.get_mut(&self.key) {
            p.bitfield = bf.clone();
        }
        drop(s);
        self.bitfield = bf;
    }

    /// Blocks the peer should have sent long ago by its own rate (a dropped request) go back
    /// to the picker for other peers, with a cancel to this one.
    async fn release_stuck(&mut self, now: Instant) -> Result<(), Reason> {
        if self.outstanding.is_empty() || self.block_rate < 0.5 {
            return Ok(()); // a stalled peer is the REQUEST_TIMEOUT's case
        }
        let expected = self.outstanding.len() as f64 / self.block_rate;
        let limit = STUCK_MIN.max(Duration::from_secs_f64(expected * STUCK_FACTOR));
        let stuck: Vec<Block> = self
            .outstanding
            .iter()
            .filter(|(_, &at)| now.duration_since(at) > limit)
            .map(|(b, _)| *b)
            .collect();
        for b in stuck {
            self.outstanding.remove(&b);
            let (length, others) = {
                let mut s = self.t.state.lock().unwrap();
                s.picker.unrequest(b);
                (s.picker.block_len(b), s.peers.len() > 1)
            };
            if others {
                self.shunned.insert(b, now);
            }
            tracing::debug!(
                "peer {}: block {}/{} timed out",
                self.ctx.addr,
                b.piece,
                b.block
            );
            self.send(Message::Cancel {
                index: b.piece,
                begin: b.block * BLOCK_SIZE,
                length,
            })
            .await?;
        }
        Ok(())
    }

    async fn fill_requests(&mut self) -> Result<(), Reason> {
        let choked_fast = self.peer_choking && self.fast && !self.allowed_fast.is_empty();
        if (self.peer_choking && !choked_fast)
            || !self.am_interested
            || self.outstanding.len() >= self.pipeline / 2
        {
            return Ok(());
        }
        let want = self.pipeline - self.outstanding.len();
        let now = Instant::now();
        self.shunned
            .retain(|_, t| now.duration_since(*t) < SHUN_FOR);
        // Choked, a Fast peer still serves the pieces it allowed.
        let allowed;
        let from = if choked_fast {
            let mut bf = Bitfield::new(self.bitfield.len());
            for &i in &self.allowed_fast {
                if self.bitfield.get(i as usize) {
                    bf.set(i as usize);
                }
            }
            allowed = bf;
            &allowed
        } else {
            &self.bitfield
        };
        let reqs: Vec<(Block, u32)> = {
            let mut s = self.t.state.lock().unwrap();
            let (out, shun) = (&self.outstanding, &self.shunned);
            let picked = s.picker.pick_with(from, want, out.len(), &|b| {
                out.contains_key(&b) || shun.contains_key(&b)
            });
            picked
                .into_iter()
                .map(|b| (b, s.picker.block_len(b)))
                .collect()
        };
        if reqs.is_empty() {
            return Ok(());
        }
        if self.outstanding.is_empty() {
            self.last_block = Instant::now();
        }
        for (b, length) in reqs {
            self.outstanding.insert(b, now);
            self.send(Message::Request {
                index: b.piece,
                begin: b.block * BLOCK_SIZE,
                length,
            })
            .await?;
        }
        Ok(())
    }

    async fn serve_uploads(&mut self) -> Result<(), Reason> {
        while let Some((index, begin, length)) = self.uploads.pop_front() {
            // Room in the peer's upload budget first, then the disk read (off the runtime).
            let permit = self
                .up_budget
                .clone()
                .acquire_many_owned(length)
                .await
                .map_err(|_| Reason::Closed)?;
            let off = index as u64 * self.t.meta.piece_length + begin as u64;
            let t = self.t.clone();
            let read = tokio::task::spawn_blocking(move || {
                let mut buf = vec![0u8; length as usize];
                t.storage.read(off, &mut buf).map(|_| buf)
            })
            .await
            .map_err(|_| Reason::Closed)?;
            let buf = match read {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!("cannot read piece {index} for upload: {e}");
                    continue;
                }
            };
            let m = Message::Piece {
                index,
                begin,
                data: Bytes::from(buf),
            };
            self.out
                .send(Out::Block(m, length as usize, permit))
                .await
                .map_err(|_| Reason::Closed)?;
        }
        Ok(())
    }

    async fn handle(&mut self, m: Message) -> Result<(), Reason> {
        match m {
            Message::KeepAlive | Message::Port(_) | Message::Unknown { .. } => {}
            Message::Hashes { .. } | Message::HashReject(_) => {} // we never ask here
            Message::HashRequest(r) => {
                let reply = crate::merkle::serve_hash_request(&self.t.meta, &r);
                tracing::debug!(
                    "hash request from {}: layer {} index {} length {} proofs {}: {}",
                    self.ctx.addr,
                    r.base_layer,
                    r.index,
                    r.length,
                    r.proof_layers,
                    if matches!(reply, Message::HashReject(_)) {
                        "rejected"
                    } else {
                        "served"
                    }
                );
                self.send(reply).await?;
            }
            Message::Choke => {
                self.peer_choking = true;
                // A Fast peer rejects what it will not serve, one by one; the others drop it all.
                if !self.fast {
                    let mut s = self.t.state.lock().unwrap();
                    for (b, _) in self.outstanding.drain() {
                        s.picker.unrequest(b);
                    }
                }
            }
            Message::HaveAll | Message::HaveNone => {
                if !self.fast {
                    return Err(Reason::Protocol(
                        "have all/none without the Fast extension".into(),
                    ));
                }
                let n = self.bitfield.len();
                let bf = if matches!(m, Message::HaveAll) {
                    Bitfield::full(n)
                } else {
                    Bitfield::new(n)
                };
                self.replace_bitfield(bf);
                self.update_interest().await?;
            }
            Message::Reject {
                index,
                begin,
                length: _,
            } => {
                if !self.fast {
                    return Err(Reason::Protocol("reject without the Fast extension".into()));
                }
                let b = Block {
                    piece: index,
                    block: begin / BLOCK_SIZE,
                };
                if self.outstanding.remove(&b).is_some() {
                    self.t.state.lock().unwrap().picker.unrequest(b);
                }
            }
            Message::AllowedFast(i) => {
                if self.fast
                    && (i as usize) < self.bitfield.len()
                    && self.allowed_fast.len() < MAX_ALLOWED_FAST
                {
                    self.allowed_fast.insert(i);
                }
            }
            // A hint only; the picker's order stands.
            Message::Suggest(_) => {}
            Message::Unchoke => {
                self.peer_choking = false;
                self.last_block = Instant::now();
            }
            Message::Interested | Message::NotInterested => {
                let on = matches!(m, Message::Interested);
                let mut s = self.t.state.lock().unwrap();
                let free_slot =
                    s.peers.values().filter(|p| !p.choked_by_us).count() < self.t.cfg.upload_slots;
                if let Some(p) = s.peers.get_mut(&self.key) {
                    p.interested = on;
                    // Do not make a newcomer wait for the next rechoke when a slot is free.
                    if on && p.choked_by_us && free_slot {
                        p.choked_by_us = false;
                        let _ = p.cmd.send(Cmd::Unchoke);
                    }
                }
            }
            Message::Have(i) => {
                if i as usize >= self.bitfield.len() {
                    return Err(Reason::Ban(format!(
                        "have for piece {i} of {}",
                        self.bitfield.len()
                    )));
                }
                if !self.bitfield.get(i as usize) {
                    self.bitfield.set(i as usize);
                    let mut s = self.t.state.lock().unwrap();
                    s.picker.peer_has(i);
                    if let Some(p) = s.peers.get_mut(&self.key) {
                        p.bitfield.set(i as usize);
                    }
                }
                self.update_interest().await?;
            }
            Message::Bitfield(b) => {
                // BEP 3 puts the bitfield first, but clients differ (aria2 sends it later):
                // accept it any time, replacing what we knew; only a malformed one is fatal.
                let bf = Bitfield::from_bytes(&b, self.bitfield.len())
                    .ok_or_else(|| Reason::Ban("malformed bitfield".into()))?;
                self.replace_bitfield(bf);
                self.update_interest().await?;
            }
            Message::Request {
                index,
                begin,
                length,
            } => {
                let (ok, choked) = {
                    let s = self.t.state.lock().unwrap();
                    let choked = s.peers.get(&self.key).is_none_or(|p| p.choked_by_us);
                    let ok = (index as usize) < s.picker.num_pieces() as usize
                        && s.picker.have().get(index as usize)
                        && length > 0
                        && length <= MAX_REQUEST
                        && begin as u64 + length as u64 <= {
                            // libtorrent pads a v2 torrent's last file to a whole piece and asks
                            // for it whole; the padding reads as zeros.
                            if self.t.meta.is_v1() {
                                s.picker.piece_size(index) as u64
                            } else {
                                self.t.meta.piece_length
                            }
                        };
                    (ok, choked)
                };
                if !ok {
                    return Err(Reason::Protocol(format!(
                        "invalid request {index}/{begin}/{length}"
                    )));
                }
                if !choked && self.uploads.len() < MAX_UPLOAD_QUEUE {
                    self.uploads.push_back((index, begin, length));
                } else if self.fast {
                    self.send(Message::Reject {
                        index,
                        begin,
                        length,
                    })
                    .await?;
                }
            }
            Message::Cancel {
                index,
                begin,
                length,
            } => {
                self.uploads.retain(|u| *u != (index, begin, length));
            }
            Message::Piece { index, begin, data } => self.on_block(index, begin, data).await?,
            Message::Extended { id, payload } => self.on_extended(id, payload).await?,
        }
        Ok(())
    }

    async fn on_block(&mut self, index: u32, begin: u32, data: Bytes) -> Result<(), Reason> {
        let b = Block {
            piece: index,
            block: begin / BLOCK_SIZE,
        };
        let t = self.t.clone();
        {
            let mut s = t.state.lock().unwrap();
            if index >= s.picker.num_pieces() {
                return Err(Reason::Ban(format!(
                    "block for piece {index} that does not exist"
                )));
            }
            if self.outstanding.remove(&b).is_none()
                || !begin.is_multiple_of(BLOCK_SIZE)
                || data.len() as u32 != s.picker.block_len(b)
            {
                // Unrequested (or cancelled in endgame): ignore, count nothing.
                return Ok(());
            }
            self.last_block = Instant::now();
            self.blocks_this_second += 1;
            // Slow start for the pipeline: a block back while at least half the pipeline is
            // out allows one more request (doubling per round trip, as TCP's window), so a
            // long fast path is not held to `pipeline_depth` blocks per round trip for the
            // first second. The once-a-second sizing (twice the last second's blocks) rules
            // from then on.
            if self.outstanding.len() + 1 >= self.pipeline / 2 {
                self.pipeline = (self.pipeline + 1)
                    .min(MAX_PIPELINE)
                    .min(self.peer_reqq.saturating_sub(1).max(1));
            }
            if let Some(p) = s.peers.get_mut(&self.key) {
                p.down_total += data.len() as u64;
            }
            s.downloaded += data.len() as u64;
            if !s.picker.block_received(b) {
                return Ok(()); // another peer's copy won
            }
            // Endgame: others asked for this block too.
            for (k, p) in &s.peers {
                if *k != self.key {
                    let _ = p.cmd.send(Cmd::Cancel(b));
                }
            }
        }
        // Written and hashed by the disk pool; its verdict comes back through the state.
        self.t
            .session
            .disk
            .write_block(t, index, begin, data, self.key)
            .await;
        Ok(())
    }

    async fn on_extended(&mut self, id: u8, payload: Bytes) -> Result<(), Reason> {
        if id == 0 {
            let h = ExtHandshake::decode(&payload)
                .ok_or_else(|| Reason::Protocol("malformed extension handshake".into()))?;
            if let Some(q) = h.reqq {
                self.peer_reqq = (q as usize).clamp(2, MAX_PIPELINE + 1);
                self.pipeline = self.pipeline.min(self.peer_reqq - 1);
            }
            let first = self.ext.is_none();
            if let (Some(port), true) = (h.listen_port, first) {
                let mut s = self.t.state.lock().unwrap();
                if let Some(p) = s.peers.get_mut(&self.key) {
                    if !p.outgoing && port != 0 {
                        p.reachable = Some(SocketAddr::new(self.ctx.addr.ip(), port));
                    }
                }
            }
            if first {
                self.ext_at = Some(Instant::now());
            }
            self.ext = Some(h);
            if first {
                for handler in self.t.session.registry.handlers().to_vec() {
                    if self.peer_ext_id(handler.name()).is_some() {
                        let r = handler.on_connect(&self.ctx);
                        self.apply_ext_reply(handler.name(), r).await?;
                    }
                }
            }
            return Ok(());
        }
        if Some(id) == self.ut_metadata_id() {
            return self.on_ut_metadata(payload).await;
        }
        if Some(id) == self.ut_pex_id() {
            self.on_pex(&payload);
            return Ok(());
        }
        let Some(handler) = self.t.session.registry.by_local_id(id).cloned() else {
            return Ok(()); // an extension we never advertised: ignore
        };
        let r = handler.on_message(&self.ctx, payload);
        self.apply_ext_reply(handler.name(), r).await
    }

    fn peer_ext_id(&self, name: &str) -> Option<u8> {
        self.ext.as_ref()?.m.get(name).copied().filter(|&i| i != 0)
    }

    async fn apply_ext_reply(
        &mut self,
        name: &str,
        r: crate::extension::ExtReply,
    ) -> Result<(), Reason> {
        if let Some(why) = r.ban {
            return Err(Reason::Ban(why));
        }
        if let Some(pid) = self.peer_ext_id(name) {
            for payload in r.send {
                self.send(Message::Extended { id: pid, payload }).await?;
            }
        }
        Ok(())
    }
}

impl super::State {
    /// An address we are connected to is known (so the driver does not dial it again).
    pub(crate) fn add_known_connected(&mut self, addr: SocketAddr) {
        self.add_known(addr);
    }
}

mod ext;
