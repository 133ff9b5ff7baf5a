//! Several writers: a mount of a share with writers shows the merged view of the owner's and
//! the writers' newest versions ([`ccbt_xet::writers`]), rebuilt when any of them changes; a
//! writable mount (the owner's, or an authorized writer's) stamps its changes against the view
//! its tree was built from and publishes them as its own version.
//!
//! A writable mount adopts a new view only when it has nothing unpublished and no edited file
//! open (it publishes first; the view is adopted on the next check). The view a writable tree
//! was built from is kept beside the state file (`view`), so after a crash its changes are
//! still stamped against what it had seen.

use crate::inode::{Content, Tree};
use crate::Shared;
use ccbt_core::bencode::{self, OwnedValue};
use ccbt_xet::feeds::{base_of, feeds_of};
use ccbt_xet::hash::XetHash;
use ccbt_xet::head::{key8, Head, HeadValue, Key8};
use ccbt_xet::listing::{Entry, Stamp};
use ccbt_xet::{tree, writers};
use fuser::Errno;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// The merged view a tree shows.
#[derive(Clone, Debug)]
pub(crate) struct View {
    /// Which versions it was merged from ([`ccbt_xet::net::ShareNet::view_key`]).
    pub key: Vec<([u8; 32], u64)>,
    /// Merged entries, tombstones included (the base a writer stamps against).
    pub entries: Vec<Entry>,
    /// The other writers' versions merged (`v.b` of this node's next version).
    pub base: Vec<(Key8, u64)>,
}

impl Shared {
    /// The share has writers (the owner's newest head lists some).
    pub(crate) fn multi(&self) -> bool {
        self.reader
            .node
            .newest_head(&self.cfg.share)
            .is_some_and(|h| !h.value.writers.is_empty())
    }

    /// This mount's key as it signs: the owner's, or a writer's.
    fn me(&self) -> Option<[u8; 32]> {
        self.key.as_ref().map(|k| k.verifying_key().to_bytes())
    }

    /// This node's newest version of the share (the owner's, or its writer feed's).
    fn own_newest(&self) -> Option<Head> {
        let me = self.me()?;
        let shares = &self.reader.node.shares;
        if self.writer {
            shares
                .head(&ccbt_xet::head::feed_id(&me, &self.cfg.share), None)
                .ok()
        } else {
            shares.head(&self.cfg.share, None).ok()
        }
    }

    /// Merges the newest versions known (listings fetched as needed); a writer's version read
    /// from a peer is kept in the store.
    pub(crate) fn compute_view(&self) -> Result<View, Errno> {
        let node = &self.reader.node;
        let key = sorted(node.view_key(&self.cfg.share));
        let owner = node.newest_head(&self.cfg.share).ok_or(Errno::ENOENT)?;
        let writer_heads = node.writer_heads(&self.cfg.share);
        let feeds = feeds_of(&owner, &writer_heads, |h| self.reader.load_listing_all(h))?;
        let _ = node.shares.store.commit_cached();
        for h in &writer_heads {
            if let Err(e) = node.shares.keep_writer_head(h) {
                tracing::debug!("cannot keep a writer's version: {e}");
            }
        }
        let me = self.me().unwrap_or([0; 32]);
        Ok(View {
            key,
            entries: writers::merge(&feeds),
            base: base_of(&feeds, &me),
        })
    }

    /// Adopts the newest view if it changed and the mount can take it now.
    pub(crate) fn refresh_view(&self) {
        let node = &self.reader.node;
        let key = sorted(node.view_key(&self.cfg.share));
        if self.state().view.as_ref().is_some_and(|v| v.key == key) {
            return;
        }
        if self.owner() && self.dirty.lock().unwrap().is_some() {
            return; // publish first
        }
        // No publish runs meanwhile: it stamps its snapshot against the view the snapshot's
        // tree was built from (lock order: `publishing`, then `state`).
        let _one = self.publishing.lock().unwrap();
        let view = match self.compute_view() {
            Ok(v) => v,
            Err(e) => {
                tracing::debug!("cannot merge the writers' versions yet: {e:?}");
                return;
            }
        };
        let live = writers::live(&view.entries);
        let mut gone_overlays = Vec::new();
        {
            let mut st = self.state();
            let st = &mut *st;
            if let Some(old) = &st.view {
                if writers::live(&old.entries) == live {
                    // Nothing to show differently (this node's own version, say).
                    st.view = Some(view);
                    return;
                }
            }
            if self.owner() {
                let open_edit = st.open.iter().any(|(ino, n)| {
                    *n > 0
                        && st
                            .tree
                            .nodes
                            .get(ino)
                            .is_some_and(|x| matches!(x.content, Content::Overlay(_)))
                });
                if open_edit || self.dirty.lock().unwrap().is_some() {
                    return; // retried on the next check
                }
                for n in st.tree.nodes.values() {
                    if let Content::Overlay(o) = &n.content {
                        gone_overlays.push(o.path.clone());
                    }
                }
            }
            let owner_seq = node.newest_head(&self.cfg.share).map_or(0, |h| h.seq);
            let seq = st.tree.seq.max(owner_seq);
            st.tree = Tree::build(&mut st.inos, seq, &live, !self.owner(), SystemTime::now());
            st.view = Some(view.clone());
            st.unsaved = true;
        }
        for p in gone_overlays {
            let _ = std::fs::remove_file(p);
        }
        if self.owner() {
            if let Err(e) = save_view(&self.cfg.overlay_dir, &self.reader, &view) {
                tracing::warn!("cannot keep the merged view: {e}");
            }
            if let Err(e) = self.save_state(false) {
                tracing::warn!("cannot save the mount's state: {e}");
            }
        }
        tracing::info!(
            "mount now shows the writers' merged view ({} entries)",
            live.len()
        );
    }

    /// Publishes a writable mount's tree as this node's next version of a share with writers:
    /// changes against the view are stamped; nothing when there are none. Returns the version
    /// made (the owner's seq, or this writer's).
    pub(crate) fn publish_multi(
        &self,
        live: Vec<Entry>,
        mut nodes: tree::NodeList,
    ) -> Result<Option<u64>, String> {
        let key = self.key.as_ref().ok_or("not a writer")?;
        let me = key.verifying_key().to_bytes();
        let node = &self.reader.node;
        let shares = &node.shares;
        let share = self.cfg.share;
        let view = match self.state().view.clone() {
            Some(v) => v,
            // No view kept (a crash before it was saved): this node's own newest version is
            // what its tree last agreed with, so its changes are stamped against that, and
            // other writers' newer changes are not taken for reverts.
            None => match self.own_newest() {
                Some(h) => View {
                    key: Vec::new(),
                    entries: self
                        .reader
                        .load_listing_all(&h)
                        .map_err(|e| format!("{e:?}"))?,
                    base: h.value.base.clone(),
                },
                None => self.compute_view().map_err(|e| format!("{e:?}"))?,
            },
        };
        let seq = if self.writer {
            shares
                .record(&ccbt_xet::head::feed_id(&me, &share))
                .map_err(|e| e.to_string())?
                .map_or(0, |r| r.seq)
                + 1
        } else {
            shares.head(&share, None).map_err(|e| e.to_string())?.seq + 1
        };
        let time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let stamp = Stamp {
            c: time,
            w: key8(&me),
            q: seq,
            gone: false,
        };
        let stamped = writers::stamp_changes(&view.entries, &live, stamp);
        if stamped == view.entries {
            return Ok(None);
        }
        let (root, _) =
            tree::store_listing(&shares.store, &stamped, &mut nodes).map_err(|e| e.to_string())?;
        let mut value = HeadValue::new(root.0, live.iter().map(|e| e.size).sum(), time);
        value.base = view.base.clone();
        let head = if self.writer {
            let head = Head::sign_writer(key, &share, seq, value);
            shares
                .commit_head(&head.feed_id(), &head, nodes, None)
                .map_err(|e| e.to_string())?;
            node.offer_feed(head.clone(), None)
                .map_err(|e| format!("this node's writer key is refused: {e}"))?;
            head
        } else {
            value.writers = node
                .newest_head(&share)
                .map(|h| h.value.writers)
                .unwrap_or_default();
            let head = shares
                .commit_next(key, &share, value, nodes)
                .map_err(|e| e.to_string())?;
            node.offer_head(head.clone(), None);
            node.have_version(&share, head.seq);
            head
        };
        // The tree now is this version's view: adopted without a rebuild. (Only this node's
        // own entry of the key moves: versions of others that arrived meanwhile are not in it.)
        let mut new_key = view.key.clone();
        new_key.retain(|k| k.0 != me);
        new_key.push((me, seq));
        let v = View {
            key: sorted(new_key),
            entries: stamped,
            base: view.base,
        };
        if let Err(e) = save_view(&self.cfg.overlay_dir, &self.reader, &v) {
            tracing::warn!("cannot keep the merged view: {e}");
        }
        self.state().view = Some(v);
        tracing::info!(
            "published version {} of the share ({}) from the mount",
            head.seq,
            if self.writer { "as a writer" } else { "owner" }
        );
        Ok(Some(head.seq))
    }
}

fn sorted(mut v: Vec<([u8; 32], u64)>) -> Vec<([u8; 32], u64)> {
    v.sort_unstable();
    v
}

/// Keeps the view a writable tree was built from: its listing in the store, its root and `b`
/// in `<overlay>/view`.
fn save_view(dir: &Path, reader: &crate::read::Reader, v: &View) -> std::io::Result<()> {
    let store = &reader.node.shares.store;
    let mut nodes = Vec::new();
    let (root, _) =
        tree::store_listing(store, &v.entries, &mut nodes).map_err(std::io::Error::other)?;
    for (h, text) in nodes {
        store.put_node(&h, &text).map_err(std::io::Error::other)?;
    }
    let b = OwnedValue::dict([
        ("b", ccbt_xet::head::encode_base(&v.base)),
        ("root", OwnedValue::bytes(root.0.to_vec())),
    ])
    .encode();
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join("view.tmp");
    std::fs::write(&tmp, b)?;
    std::fs::rename(tmp, dir.join("view"))
}

/// The view kept by [`save_view`], if it is still readable.
pub(crate) fn load_view(dir: &Path, reader: &crate::read::Reader) -> Option<View> {
    let b = std::fs::read(dir.join("view")).ok()?;
    let v = bencode::decode(&b).ok()?;
    let d = v.as_dict()?;
    let root: [u8; 32] = d.get(b"root")?.as_bytes()?.try_into().ok()?;
    let base = ccbt_xet::head::decode_base(d.get(b"b")?)?;
    let entries = reader.listing_at(XetHash(root)).ok()?;
    Some(View {
        key: Vec::new(),
        entries,
        base,
    })
}
