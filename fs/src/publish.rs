//! The owner's publisher: after changes settle (the debounce), re-chunk the edited files, sign the
//! next version and push it to peers.
//!
//! A publish works on a snapshot of the tree taken under the state lock and reads overlay files
//! without it, so writers go on meanwhile. A file written after the snapshot has a newer `gen`:
//! its new root is not remembered as clean, and the write has already asked for the next publish.

use crate::inode::{Content, ROOT};
use crate::overlay::Edits;
use crate::Shared;
use ccbt_xet::hash::XetHash;
use ccbt_xet::head::HeadValue;
use ccbt_xet::tree;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How often the publisher writes the state file after metadata changes (creates, renames...),
/// when no close or fsync has.
const STATE_EVERY: Duration = Duration::from_secs(1);

/// An overlay file's newly stored root, and what it was read from.
struct NewRoot {
    ino: u64,
    path: PathBuf,
    /// The file's `gen` when it was read: a later write makes the root stale.
    gen: u64,
    root: XetHash,
    size: u64,
}

/// Publishes the working tree as the next version; returns the newest version (unchanged when
/// the tree equals the last published version).
pub(crate) fn publish(s: &Shared) -> Result<u64, String> {
    let key = s.key.as_ref().ok_or("not the owner")?;
    let _one = s.publishing.lock().unwrap();
    *s.dirty.lock().unwrap() = None;
    let snapshot = s.state().tree.clone();
    let store = &s.reader.node.shares.store;
    let mut nodes = Vec::new();
    let mut entries = Vec::new();
    let mut new_roots: Vec<NewRoot> = Vec::new();
    for (ino, n) in &snapshot.nodes {
        if *ino == ROOT || n.path.is_empty() || n.special.is_some() {
            continue;
        }
        let mut size = n.size;
        let root = match &n.content {
            Content::Cas(r) => *r,
            Content::Overlay(o) if o.root.is_some() => o.root.unwrap_or(XetHash::ZERO),
            Content::Overlay(o) => {
                let inc =
                    o.edits.as_ref().and_then(
                        |Edits { base, ranges }| match tree::store_incremental(
                            store, *base, &o.file, size, ranges, &mut nodes,
                        ) {
                            Ok(i) => {
                                tracing::info!(
                                    "{}: re-chunked {} bytes around {} edits, reused {} chunks",
                                    n.path,
                                    i.bytes_read,
                                    ranges.len(),
                                    i.chunks_reused
                                );
                                Some(i.root)
                            }
                            Err(e) => {
                                tracing::debug!(
                                    "{}: incremental re-chunk failed ({e}); reading it all",
                                    n.path
                                );
                                None
                            }
                        },
                    );
                let root = match inc {
                    Some(r) => r,
                    None => {
                        let d = tree::store_file(store, &o.file, &AtomicU64::new(0), &mut nodes)
                            .map_err(|e| format!("{}: {e}", n.path))?;
                        // Written since the snapshot: list the bytes that were hashed.
                        size = d.size;
                        d.merkle_root
                    }
                };
                new_roots.push(NewRoot {
                    ino: *ino,
                    path: o.path.clone(),
                    gen: o.gen,
                    root,
                    size,
                });
                root
            }
        };
        let mut e = n.entry(root);
        e.size = size;
        entries.push(e);
    }
    entries.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    if s.writer || s.multi() {
        let made = s.publish_multi(entries, nodes)?;
        return Ok(finish(s, new_roots, made));
    }
    let (listing_root, _) =
        tree::store_listing(store, &entries, &mut nodes).map_err(|e| e.to_string())?;
    let shares = &s.reader.node.shares;
    let share = s.cfg.share;
    let current = shares.head(&share, None).map_err(|e| e.to_string())?;
    let seq = if current.value.root == listing_root.0 {
        tracing::debug!(
            "the working tree equals version {}: nothing to publish",
            current.seq
        );
        current.seq
    } else {
        let head = shares
            .commit_next(
                key,
                &share,
                // An edit through the mount is not the torrent a previous version named (no `ih`).
                HeadValue::new(
                    listing_root.0,
                    entries.iter().map(|e| e.size).sum(),
                    SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs() as i64),
                ),
                nodes,
            )
            .map_err(|e| e.to_string())?;
        let seq = head.seq;
        s.reader.node.offer_head(head, None);
        s.reader.node.have_version(&share, seq);
        tracing::info!("published version {seq} of the share from the mount");
        seq
    };
    Ok(finish(s, new_roots, Some(seq)))
}

/// After a publish (`made`: the version made, if any): the published roots become the overlay
/// files' clean state, and the state file is written.
fn finish(s: &Shared, new_roots: Vec<NewRoot>, made: Option<u64>) -> u64 {
    {
        // The published roots become the overlay files' clean state (unless written meanwhile).
        let mut st = s.state();
        for nr in new_roots {
            if let Some(n) = st.tree.nodes.get_mut(&nr.ino) {
                if let Content::Overlay(o) = &mut n.content {
                    if o.path == nr.path && o.gen == nr.gen {
                        o.root = Some(nr.root);
                        // Untouched since it was read: the base of later edits.
                        o.edits = Some(Edits {
                            base: (nr.root, nr.size),
                            ranges: Vec::new(),
                        });
                    }
                }
            }
        }
        if let (Some(seq), false) = (made, s.writer) {
            st.tree.seq = seq;
        }
        st.unsaved = true;
    }
    if let Err(e) = s.save_state(false) {
        tracing::warn!("cannot save the mount's state: {e}");
    }
    let mut p = s.published.lock().unwrap();
    if let Some(seq) = made {
        *p = seq;
    }
    let seq = *p;
    drop(p);
    s.published_cv.notify_all();
    seq
}

/// The owner's background thread: publishes after the debounce, and writes the state file after
/// metadata changes.
pub(crate) fn publisher(s: Arc<Shared>) {
    loop {
        let mut g = s.dirty.lock().unwrap();
        loop {
            match *g {
                Some(t) if t.elapsed() >= s.cfg.publish_debounce => break,
                Some(t) => {
                    let wait = s.cfg.publish_debounce - t.elapsed();
                    g = s.wake.wait_timeout(g, wait.min(STATE_EVERY)).unwrap().0;
                }
                None => g = s.wake.wait_timeout(g, STATE_EVERY).unwrap().0,
            }
            if s.closed.load(Ordering::Relaxed) {
                return;
            }
            drop(g);
            if let Err(e) = s.save_state(false) {
                tracing::warn!("cannot save the mount's state: {e}");
            }
            g = s.dirty.lock().unwrap();
        }
        drop(g);
        if let Err(e) = publish(&s) {
            tracing::error!("cannot publish the mount's changes: {e}");
        }
    }
}
