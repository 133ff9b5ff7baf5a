//! The disk pool: worker threads that write received blocks (pwrite) and hash them as they arrive,
//! off the async peer tasks and outside the torrent's state lock.
//!
//! Jobs are sharded by (torrent, piece), so every block of a piece goes to one worker, in the order
//! its peers submitted them, and a piece's hasher needs no lock. Each shard's queue is bounded:
//! when the disk or the hashing falls behind, `submit` waits, the peer task stops reading its
//! socket, and TCP pushes back on the sender. A piece is judged as soon as its last byte is hashed
//! (never re-read); the verdict is applied to the torrent's state from the worker.

use super::{Cmd, TorrentShared};
use crate::storage::PieceHasher;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Strikes (failed pieces mostly from this peer) before a ban.
pub(crate) const BAN_STRIKES: u32 = 2;
/// Blocks queued per worker (16 KiB each: 2 MiB per worker).
const QUEUE_BLOCKS: usize = 128;

enum Job {
    Block {
        t: Arc<TorrentShared>,
        piece: u32,
        begin: u32,
        data: Bytes,
        /// The peer connection it came from (for strikes).
        from: u64,
    },
    /// A torrent stopped: drop its half-hashed pieces, then say so (everything queued before
    /// this for the torrent has been written).
    Forget(u64, tokio::sync::oneshot::Sender<()>),
}

/// Handle to the workers; dropping it (with the session) ends them.
pub(crate) struct DiskPool {
    shards: Vec<mpsc::Sender<Job>>,
}

impl DiskPool {
    /// Jobs queued across the workers.
    pub(crate) fn queue_depth(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.max_capacity() - s.capacity())
            .sum()
    }

    /// Starts `threads` workers (0: one per core).
    pub(crate) fn start(threads: usize) -> DiskPool {
        let n = if threads == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            threads
        };
        let shards = (0..n)
            .map(|i| {
                let (tx, rx) = mpsc::channel(QUEUE_BLOCKS);
                std::thread::Builder::new()
                    .name(format!("ccbt-disk-{i}"))
                    .spawn(move || worker(rx))
                    .expect("spawn a disk worker thread");
                tx
            })
            .collect();
        DiskPool { shards }
    }

    fn shard(&self, torrent: u64, piece: u32) -> &mpsc::Sender<Job> {
        let i = (torrent.wrapping_mul(0x9E37_79B9) ^ piece as u64) % self.shards.len() as u64;
        &self.shards[i as usize]
    }

    /// Queues a received block to be written and hashed; waits while its worker is full
    /// (backpressure).
    pub(crate) async fn write_block(
        &self,
        t: Arc<TorrentShared>,
        piece: u32,
        begin: u32,
        data: Bytes,
        from: u64,
    ) {
        let tx = self.shard(t.id, piece).clone();
        let _ = tx
            .send(Job::Block {
                t,
                piece,
                begin,
                data,
                from,
            })
            .await;
    }

    /// Waits until every block queued for a torrent is written, then drops its half-hashed
    /// pieces (call when it stops, before the last checkpoint).
    pub(crate) async fn drain(&self, torrent: u64) {
        for tx in &self.shards {
            let (done, wait) = tokio::sync::oneshot::channel();
            if tx.send(Job::Forget(torrent, done)).await.is_ok() {
                let _ = wait.await;
            }
        }
    }
}

struct Progress {
    hasher: PieceHasher,
    /// Bytes of the piece received so far (blocks are never duplicated: the picker lets only
    /// the first copy of a block through).
    received: u64,
    from: HashMap<u64, u32>,
    write_failed: bool,
}

fn worker(mut rx: mpsc::Receiver<Job>) {
    let mut pieces: HashMap<(u64, u32), Progress> = HashMap::new();
    while let Some(job) = rx.blocking_recv() {
        match job {
            Job::Forget(id, done) => {
                pieces.retain(|(t, _), _| *t != id);
                let _ = done.send(());
            }
            Job::Block {
                t,
                piece,
                begin,
                data,
                from,
            } => {
                let pl = t.meta.piece_length;
                let off = piece as u64 * pl;
                let piece_len = (t.storage.total() - off).min(pl);
                let p = pieces.entry((t.id, piece)).or_insert_with(|| Progress {
                    hasher: PieceHasher::new(t.expected[piece as usize].clone(), pl),
                    received: 0,
                    from: HashMap::new(),
                    write_failed: false,
                });
                if let Err(e) = t.storage.write(off + begin as u64, &data) {
                    p.write_failed = true;
                    let mut de = t.disk_error.lock().unwrap();
                    if de.is_none() {
                        *de = Some(format!("cannot write piece {piece} to disk: {e}"));
                        t.wake.notify_one();
                    }
                }
                p.received += data.len() as u64;
                *p.from.entry(from).or_default() += 1;
                p.hasher.add(begin, data);
                if p.received >= piece_len {
                    let p = pieces.remove(&(t.id, piece)).expect("present");
                    let ok = p.hasher.finish() && !p.write_failed;
                    if ok {
                        t.storage.start_writeback(off, piece_len as usize);
                    }
                    verdict(&t, piece, ok, p.write_failed, p.from);
                }
            }
        }
    }
}

/// Applies a piece's hash result: announce it, or give it back to the picker and strike the
/// peers that sent most of it (banning repeat offenders).
fn verdict(t: &TorrentShared, piece: u32, ok: bool, write_failed: bool, from: HashMap<u64, u32>) {
    let mut s = t.state.lock().unwrap();
    if ok {
        s.picker.piece_done(piece);
        s.dirty = true;
        for p in s.peers.values() {
            let _ = p.cmd.send(Cmd::Have(piece));
        }
        if s.picker.complete() {
            t.wake.notify_one();
        }
        return;
    }
    s.picker.piece_failed(piece);
    if write_failed {
        return; // our disk's fault, not the peers'
    }
    s.hash_failures += 1;
    tracing::warn!("piece {piece} failed its hash check");
    let total: u32 = from.values().sum();
    for (k, n) in from {
        if n * 2 <= total {
            continue;
        }
        if let Some(w) = s.web_seeds.get_mut(&k) {
            // A web seed cannot be banned by address; its task drops it.
            w.corrupt = Some(piece);
            continue;
        }
        let Some((addr, id)) = s.peers.get(&k).map(|p| (p.addr, p.peer_id)) else {
            continue;
        };
        let st = s.strikes.entry(addr).or_default();
        *st += 1;
        if *st >= BAN_STRIKES {
            tracing::warn!("banned peer {addr}: sent corrupt data for {BAN_STRIKES} pieces");
            s.banned.insert(addr.ip());
            s.banned_ids.insert(id);
            if let Some(p) = s.peers.get(&k) {
                let _ = p.cmd.send(Cmd::Close);
            }
        }
    }
}
