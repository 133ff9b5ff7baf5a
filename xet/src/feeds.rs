//! Several writers, the store's half: a share's merged view from the versions held here, the
//! owner's next version in a share with writers (`publish`, `restore`), and authorizing writers.
//! The merge itself is [`crate::writers`].

use crate::head::{key8, share_id_hex, Head, HeadValue, ShareId, MAX_V_LEN, MAX_WRITERS};
use crate::listing::{Entry, Stamp};
use crate::shares::{Result, ShareError, Shares};
use crate::tree;
use crate::writers::{self, Feed};

/// A version's `v.b`: the other writers' versions it merged.
pub type Base = Vec<([u8; 8], u64)>;

/// The feeds a view is made of: the owner's head, and the newest head of each writer it
/// authorizes, each with its listing (tombstones included) from `load`.
pub fn feeds_of<E>(
    owner: &Head,
    writer_heads: &[Head],
    mut load: impl FnMut(&Head) -> std::result::Result<Vec<Entry>, E>,
) -> std::result::Result<Vec<Feed>, E> {
    let mut out = vec![Feed {
        key: owner.public_key,
        seq: owner.seq,
        owner: true,
        base: owner.value.base.clone(),
        entries: load(owner)?,
    }];
    for h in writer_heads {
        if owner.value.writers.contains(&h.public_key) {
            out.push(Feed {
                key: h.public_key,
                seq: h.seq,
                owner: false,
                base: h.value.base.clone(),
                entries: load(h)?,
            });
        }
    }
    Ok(out)
}

/// A view's `v.b`: the newest version of each feed but `me`.
pub fn base_of(feeds: &[Feed], me: &[u8; 32]) -> Base {
    feeds
        .iter()
        .filter(|f| &f.key != me)
        .map(|f| (key8(&f.key), f.seq))
        .collect()
}

impl Shares {
    /// A listing with its tombstones.
    pub fn listing_all(&self, head: &Head) -> Result<Vec<Entry>> {
        let root = crate::hash::XetHash(head.value.root);
        let bytes = tree::read_to_vec(&self.store, root, self.listing_size(head)?)?;
        Ok(crate::listing::decode_all(&bytes)?)
    }

    /// The writers' newest heads held here that `owner` authorizes.
    pub fn writer_heads(&self, owner: &Head) -> Result<Vec<Head>> {
        let mut v = self.feeds(&owner.share_id())?;
        v.retain(|h| owner.value.writers.contains(&h.public_key));
        v.sort_by_key(|h| h.public_key);
        Ok(v)
    }

    /// The share as every node shows it, from the versions held here: with writers, the merge
    /// of the owner's and the writers' newest versions (writers whose listing is not here are
    /// left out); else the owner's newest listing. Tombstones left out.
    pub fn view(&self, id: &ShareId) -> Result<Vec<Entry>> {
        let owner = self.head(id, None)?;
        if owner.value.writers.is_empty() {
            return self.listing(&owner);
        }
        let mut heads = self.writer_heads(&owner)?;
        heads.retain(|h| self.listing_all(h).is_ok());
        let feeds = feeds_of(&owner, &heads, |h| self.listing_all(h))?;
        Ok(writers::live(&writers::merge(&feeds)))
    }

    /// The owner's next version of a share that has writers: `live` stamped against the
    /// owner's previous listing (so other writers' newer changes are not overridden), with the
    /// writers and merged versions carried on. Single-writer shares: unchanged.
    pub fn owner_next(
        &self,
        id: &ShareId,
        live: Vec<Entry>,
        time: i64,
    ) -> Result<(Vec<Entry>, Vec<[u8; 32]>, Base)> {
        let Ok(prev) = self.head(id, None) else {
            return Ok((live, Vec::new(), Vec::new()));
        };
        if prev.value.writers.is_empty() {
            return Ok((live, Vec::new(), Vec::new()));
        }
        let stamp = Stamp {
            c: time,
            w: key8(&prev.public_key),
            q: prev.seq + 1,
            gone: false,
        };
        let stamped = writers::stamp_changes(&self.listing_all(&prev)?, &live, stamp);
        Ok((stamped, prev.value.writers.clone(), prev.value.base.clone()))
    }

    /// The owner authorizes exactly `writers` from the next version on. That version adopts the
    /// merged view of what is held here (so a removed writer's changes seen so far are kept).
    pub fn set_writers(&self, id: &ShareId, writers_now: Vec<[u8; 32]>) -> Result<Head> {
        let key = self
            .signing_key(id)?
            .ok_or_else(|| ShareError::NotOwner(share_id_hex(id)))?;
        if writers_now.len() > MAX_WRITERS {
            return Err(ShareError::Invalid(format!(
                "a share has at most {MAX_WRITERS} writers"
            )));
        }
        let prev = self.head(id, None)?;
        let mut heads = self.writer_heads(&prev)?;
        heads.retain(|h| self.listing_all(h).is_ok());
        let feeds = feeds_of(&prev, &heads, |h| self.listing_all(h))?;
        let merged = writers::merge(&feeds);
        let mut nodes = Vec::new();
        let (root, _) = tree::store_listing(&self.store, &merged, &mut nodes)?;
        let size = merged.iter().filter(|e| !e.is_gone()).map(|e| e.size).sum();
        let mut value = HeadValue::new(root.0, size, now());
        value.writers = writers_now;
        value.base = base_of(&feeds, &prev.public_key);
        if value.encode().len() > MAX_V_LEN {
            return Err(ShareError::Invalid(
                "too many writers for one head (BEP 44 caps a value at 1000 bytes)".into(),
            ));
        }
        let head = Head::sign(&key, prev.seq + 1, value);
        self.commit_head(id, &head, nodes, None)?;
        Ok(head)
    }

    /// Stores a writer's version made elsewhere whose listing is here (a node keeps the
    /// writers' newest versions it has read, so it can serve and merge them after a restart).
    pub fn keep_writer_head(&self, head: &Head) -> Result<()> {
        if self
            .record(&head.feed_id())?
            .is_some_and(|r| r.seq >= head.seq)
        {
            return Ok(());
        }
        self.commit_head(&head.feed_id(), head, Vec::new(), None)
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
