//! A share's history: what changed between two versions (`ccbt diff`), one summary per version
//! (`ccbt log`), and a version made from an old one (`ccbt restore`).
//!
//! Cost: the two listings are read and compared entry by entry (equal listings are detected by
//! their root and not read at all); for a file whose content changed, only the Merkle paths that
//! differ are walked ([`tree::changed_leaves`]), so a small edit in a large file costs a few node
//! reads per tree level, whatever the file's size. Summaries are derived data, cached in the
//! store's `summaries` column family and recomputed when absent.

use crate::hash::XetHash;
use crate::head::{Head, ShareId};
use crate::listing::{Entry, Kind};
use crate::shares::{Result, ShareError, Shares};
use crate::tree;
use ccbt_core::bencode::{self, OwnedValue, Value};
use std::collections::HashMap;

/// How a path differs between two versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeKind {
    Added,
    Removed,
    /// Content, type, size, link target or permissions changed (a time-only change is not one).
    Modified,
    /// Same content under a new path (equal Merkle roots); `path` is the new one.
    Renamed {
        from: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub path: String,
    pub kind: ChangeKind,
    pub old_size: u64,
    pub new_size: u64,
    /// Bytes that differ, at chunk granularity: the new file's chunks not found at the same
    /// offset in the old one (or the whole file when added or removed).
    pub bytes: u64,
    /// A directory (listed, but not counted in the totals, which count files and links).
    pub dir: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diff {
    pub changes: Vec<Change>,
}

impl Diff {
    fn count(&self, f: impl Fn(&ChangeKind) -> bool) -> u64 {
        self.changes.iter().filter(|c| !c.dir && f(&c.kind)).count() as u64
    }
    pub fn added(&self) -> u64 {
        self.count(|k| *k == ChangeKind::Added)
    }
    pub fn removed(&self) -> u64 {
        self.count(|k| *k == ChangeKind::Removed)
    }
    pub fn modified(&self) -> u64 {
        self.count(|k| *k == ChangeKind::Modified)
    }
    pub fn renamed(&self) -> u64 {
        self.count(|k| matches!(k, ChangeKind::Renamed { .. }))
    }
    pub fn bytes(&self) -> u64 {
        self.changes.iter().map(|c| c.bytes).sum()
    }
}

fn same_content(a: &Entry, b: &Entry) -> bool {
    a.kind == b.kind
        && a.size == b.size
        && a.root == b.root
        && a.target == b.target
        && a.perm() == b.perm()
}

/// Bytes of `new` that differ from `old` (chunk granularity). Merkle nodes that are not local
/// count as wholly changed rather than failing: the answer stays an upper bound.
fn changed_bytes(shares: &Shares, old: &Entry, new: &Entry) -> u64 {
    if old.kind != Kind::File || new.kind != Kind::File || old.size == 0 || new.size == 0 {
        return new.size.max(old.size);
    }
    match tree::changed_leaves(
        &shares.store,
        (XetHash(old.root), old.size),
        (XetHash(new.root), new.size),
    ) {
        Ok(spans) => {
            let changed: u64 = spans.iter().map(|s| s.2).sum();
            // A file that only shrank has no new chunks, yet its tail differs.
            changed + old.size.saturating_sub(new.size)
        }
        Err(_) => new.size,
    }
}

/// The changes that turn listing `old` into listing `new` (both sorted by path, as listings are).
pub fn diff_listings(shares: &Shares, old: &[Entry], new: &[Entry]) -> Diff {
    let mut added: Vec<&Entry> = Vec::new();
    let mut removed: Vec<&Entry> = Vec::new();
    let mut changes = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < old.len() || j < new.len() {
        let ord = match (old.get(i), new.get(j)) {
            (Some(a), Some(b)) => a.path.as_bytes().cmp(b.path.as_bytes()),
            (Some(_), None) => std::cmp::Ordering::Less,
            _ => std::cmp::Ordering::Greater,
        };
        match ord {
            std::cmp::Ordering::Less => {
                removed.push(&old[i]);
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                added.push(&new[j]);
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                let (a, b) = (&old[i], &new[j]);
                if !same_content(a, b) {
                    changes.push(Change {
                        path: b.path.clone(),
                        kind: ChangeKind::Modified,
                        old_size: a.size,
                        new_size: b.size,
                        bytes: if a.root == b.root {
                            0
                        } else {
                            changed_bytes(shares, a, b)
                        },
                        dir: a.kind == Kind::Dir && b.kind == Kind::Dir,
                    });
                }
                i += 1;
                j += 1;
            }
        }
    }
    // Renames: a removed and an added file with the same non-empty content.
    let mut gone: HashMap<[u8; 32], Vec<&Entry>> = HashMap::new();
    for e in &removed {
        if e.kind == Kind::File && e.root != [0; 32] {
            gone.entry(e.root).or_default().push(e);
        }
    }
    let mut renamed_from = std::collections::HashSet::new();
    for e in &added {
        let from = (e.kind == Kind::File && e.root != [0; 32])
            .then(|| gone.get_mut(&e.root).and_then(|v| v.pop()))
            .flatten();
        match from {
            Some(f) => {
                renamed_from.insert(f.path.as_str());
                changes.push(Change {
                    path: e.path.clone(),
                    kind: ChangeKind::Renamed {
                        from: f.path.clone(),
                    },
                    old_size: f.size,
                    new_size: e.size,
                    bytes: 0,
                    dir: false,
                });
            }
            None => changes.push(Change {
                path: e.path.clone(),
                kind: ChangeKind::Added,
                old_size: 0,
                new_size: e.size,
                bytes: if e.kind == Kind::File { e.size } else { 0 },
                dir: e.kind == Kind::Dir,
            }),
        }
    }
    for e in removed {
        if !renamed_from.contains(e.path.as_str()) {
            changes.push(Change {
                path: e.path.clone(),
                kind: ChangeKind::Removed,
                old_size: e.size,
                new_size: 0,
                bytes: if e.kind == Kind::File { e.size } else { 0 },
                dir: e.kind == Kind::Dir,
            });
        }
    }
    changes.sort_by(|a, b| a.path.cmp(&b.path));
    Diff { changes }
}

/// The changes from version `a` to version `b` of a share (both held locally).
pub fn diff_versions(shares: &Shares, id: &ShareId, a: u64, b: u64) -> Result<Diff> {
    let ha = shares.head(id, Some(a))?;
    let hb = shares.head(id, Some(b))?;
    diff_heads(shares, &ha, &hb)
}

pub fn diff_heads(shares: &Shares, a: &Head, b: &Head) -> Result<Diff> {
    if a.value.root == b.value.root {
        return Ok(Diff::default());
    }
    if let Some(d) = diff_pieces(shares, a, b) {
        return Ok(d);
    }
    Ok(diff_listings(
        shares,
        &shares.listing(a)?,
        &shares.listing(b)?,
    ))
}

/// The listing's pieces (chunks) with their place: (offset, hash, len), and the total size.
fn pieces(shares: &Shares, h: &Head) -> Option<(Vec<tree::Span>, u64)> {
    let root = XetHash(h.value.root);
    let mut spans = Vec::new();
    let mut off = 0u64;
    tree::walk_tree(
        &shares.store,
        root,
        u64::MAX,
        &mut |c, len| {
            // A single-chunk listing: its size is the chunk's.
            let len = if len == u64::MAX {
                match shares.store.chunk_len(&c.0) {
                    Ok(Some(n)) => n as u64,
                    _ => return Err(tree::TreeError::Missing(c)),
                }
            } else {
                len
            };
            spans.push((off, c, len));
            off += len;
            Ok(())
        },
        &mut |_| {},
    )
    .ok()?;
    Some((spans, off))
}

/// The entries in `spans` (pieces held by one side only), or None if one does not parse alone.
fn entries_of(shares: &Shares, spans: &[tree::Span], size: u64) -> Option<Vec<Entry>> {
    let mut out = Vec::new();
    for (off, h, len) in spans {
        let bytes = shares.store.get_chunk(&h.0).ok()??;
        let piece = crate::listing::decode_piece(&bytes, *off == 0, off + len == size).ok()?;
        out.extend(piece);
    }
    Some(out)
}

/// A diff that reads only the listing pieces the two versions do not share: pieces end at
/// entry boundaries, and a path lives in one piece of a listing, so an entry in a piece both
/// listings hold is the same in both. None for listings cut otherwise (older versions).
fn diff_pieces(shares: &Shares, a: &Head, b: &Head) -> Option<Diff> {
    let (pa, sa) = pieces(shares, a)?;
    let (pb, sb) = pieces(shares, b)?;
    let ha: std::collections::HashSet<XetHash> = pa.iter().map(|p| p.1).collect();
    let hb: std::collections::HashSet<XetHash> = pb.iter().map(|p| p.1).collect();
    let only_a: Vec<tree::Span> = pa.into_iter().filter(|p| !hb.contains(&p.1)).collect();
    let only_b: Vec<tree::Span> = pb.into_iter().filter(|p| !ha.contains(&p.1)).collect();
    let old = entries_of(shares, &only_a, sa)?;
    let new = entries_of(shares, &only_b, sb)?;
    Some(diff_listings(shares, &old, &new))
}

/// One line of `ccbt log`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub seq: u64,
    pub time: i64,
    /// The key that signed the version.
    pub author: [u8; 32],
    /// The version compared against (the previous one held here; 0 for the first).
    pub base: u64,
    pub files: u64,
    pub size: u64,
    pub added: u64,
    pub removed: u64,
    pub modified: u64,
    pub renamed: u64,
    pub bytes: u64,
    /// The listing could not be read (not held here): counts are unknown.
    pub incomplete: bool,
}

impl Summary {
    fn encode(&self) -> Vec<u8> {
        OwnedValue::dict([
            ("a", OwnedValue::Int(self.added as i64)),
            ("b", OwnedValue::Int(self.base as i64)),
            ("by", OwnedValue::Int(self.bytes as i64)),
            ("f", OwnedValue::Int(self.files as i64)),
            ("m", OwnedValue::Int(self.modified as i64)),
            ("n", OwnedValue::Int(self.renamed as i64)),
            ("r", OwnedValue::Int(self.removed as i64)),
        ])
        .encode()
    }

    fn decode(b: &[u8], head: &Head, base: u64) -> Option<Summary> {
        let v = bencode::decode(b).ok()?;
        let d = v.as_dict()?;
        let int = |k: &str| {
            d.get(k.as_bytes())
                .and_then(Value::as_int)
                .map(|i| i as u64)
        };
        if int("b")? != base {
            return None; // computed against another base (a version was gc'd or arrived since)
        }
        Some(Summary {
            seq: head.seq,
            time: head.value.time,
            author: head.public_key,
            base,
            files: int("f")?,
            size: head.value.size,
            added: int("a")?,
            removed: int("r")?,
            modified: int("m")?,
            renamed: int("n")?,
            bytes: int("by")?,
            incomplete: false,
        })
    }
}

/// One summary per version held, oldest first; each against the previous version held. With
/// listings stored in pieces a summary costs reading the pieces that changed; summaries are
/// cached, so a second `log` reads one small record per version.
pub fn log(shares: &Shares, id: &ShareId) -> Result<Vec<Summary>> {
    let mut out: Vec<Summary> = Vec::new();
    let mut prev: Option<Head> = None;
    for v in shares.versions(id)? {
        let head = Head::decode(&v.head)?;
        let base = prev.as_ref().map_or(0, |p| p.seq);
        if let Some(s) = shares
            .store
            .get_summary(id, head.seq)?
            .and_then(|b| Summary::decode(&b, &head, base))
        {
            out.push(s);
            prev = Some(head);
            continue;
        }
        let mut s = Summary {
            seq: head.seq,
            time: head.value.time,
            author: head.public_key,
            base,
            files: 0,
            size: head.value.size,
            added: 0,
            removed: 0,
            modified: 0,
            renamed: 0,
            bytes: 0,
            incomplete: false,
        };
        let prev_files = out.last().filter(|p| !p.incomplete).map(|p| p.files);
        let diff = match (&prev, prev_files) {
            (Some(p), Some(files)) => diff_heads(shares, p, &head).ok().map(|d| (d, files)),
            (None, _) => shares
                .listing(&head)
                .ok()
                .map(|l| (diff_listings(shares, &[], &l), 0)),
            _ => None,
        };
        match diff {
            Some((d, files)) => {
                s.added = d.added();
                s.removed = d.removed();
                s.modified = d.modified();
                s.renamed = d.renamed();
                s.bytes = d.bytes();
                s.files = (files + s.added).saturating_sub(s.removed);
                let _ = shares.store.put_summary(id, head.seq, &s.encode());
            }
            None => s.incomplete = true,
        }
        out.push(s);
        prev = Some(head);
    }
    Ok(out)
}

/// The listing of a restore: `current` with `path` (or everything, when `None`) as it was in
/// `old`. Parent directories a restored entry needs are taken from `old` too.
pub fn restored_listing(current: &[Entry], old: &[Entry], path: Option<&str>) -> Vec<Entry> {
    let Some(path) = path.map(|p| p.trim_matches('/')).filter(|p| !p.is_empty()) else {
        return old.to_vec();
    };
    let mut map: std::collections::BTreeMap<Vec<u8>, Entry> = current
        .iter()
        .filter(|e| e.path != path && !e.path.starts_with(&format!("{path}/")))
        .map(|e| (e.path.as_bytes().to_vec(), e.clone()))
        .collect();
    let restored: Vec<&Entry> = crate::listing::under(old, path).collect();
    if !restored.is_empty() {
        // Parents: as in `old`, unless the current tree has them.
        let mut p = path;
        while let Some((parent, _)) = p.rsplit_once('/') {
            if !map.contains_key(parent.as_bytes()) {
                if let Some(e) = old.iter().find(|e| e.path == parent) {
                    map.insert(parent.as_bytes().to_vec(), e.clone());
                }
            }
            p = parent;
        }
    }
    for e in restored {
        map.insert(e.path.as_bytes().to_vec(), e.clone());
    }
    map.into_values().collect()
}

/// Whether every file of `entries` can be read locally (a restore must not publish a version
/// whose data this node no longer holds).
pub fn missing_files(shares: &Shares, entries: &[Entry]) -> Vec<String> {
    entries
        .iter()
        .filter(|e| e.kind == Kind::File && e.size > 0 && !shares.file_is_whole(e.root))
        .map(|e| e.path.clone())
        .collect()
}

/// Makes a new version of an owned share from a listing (its files already in the store).
pub fn commit_listing(shares: &Shares, id: &ShareId, entries: &[Entry]) -> Result<Head> {
    let key = shares
        .signing_key(id)?
        .ok_or_else(|| ShareError::NotOwner(crate::head::share_id_hex(id)))?;
    let mut nodes = Vec::new();
    let time = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let (stamped, writers, base) = shares.owner_next(id, entries.to_vec(), time)?;
    let (listing_root, _) = tree::store_listing(&shares.store, &stamped, &mut nodes)?;
    let size = entries.iter().map(|e| e.size).sum();
    let mut value = crate::head::HeadValue::new(listing_root.0, size, time);
    value.writers = writers;
    value.base = base;
    shares.commit_next(&key, id, value, nodes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(p: &str, root: u8, size: u64) -> Entry {
        Entry {
            path: p.into(),
            kind: Kind::File,
            size,
            root: [root; 32],
            executable: false,
            mtime: 1,
            target: None,
            mode: None,
            stamp: None,
        }
    }

    fn dir(p: &str) -> Entry {
        Entry {
            path: p.into(),
            kind: Kind::Dir,
            size: 0,
            root: [0; 32],
            executable: true,
            mtime: 1,
            target: None,
            mode: None,
            stamp: None,
        }
    }

    #[test]
    fn diff_finds_added_removed_modified_renamed() {
        let tmp = tempfile::tempdir().unwrap();
        let shares = Shares::open(tmp.path()).unwrap();
        let old = vec![
            file("a", 1, 10),
            file("b", 2, 20),
            file("c", 3, 30),
            dir("d"),
        ];
        let mut touched = file("c", 3, 30);
        touched.mtime = 99; // a time-only change is not a change
        let new = vec![
            file("a", 1, 10),
            touched,
            dir("d"),
            file("d/b2", 2, 20),
            file("e", 5, 50),
        ];
        let d = diff_listings(&shares, &old, &new);
        assert_eq!(d.changes.len(), 2, "{d:?}");
        assert_eq!(d.changes[0].kind, ChangeKind::Renamed { from: "b".into() });
        assert_eq!(d.changes[0].path, "d/b2");
        assert_eq!(d.changes[1].kind, ChangeKind::Added);
        assert_eq!(d.bytes(), 50);
        let back = diff_listings(&shares, &new, &old);
        assert_eq!(back.renamed(), 1);
        assert_eq!(back.removed(), 1);
        let mut m = old.clone();
        m[0] = file("a", 9, 12);
        let d = diff_listings(&shares, &old, &m);
        assert_eq!(d.modified(), 1);
        // Nodes not held: the whole file counts as changed.
        assert_eq!(d.bytes(), 12);
    }

    #[test]
    fn restore_replaces_a_subtree_only() {
        let old = vec![
            dir("d"),
            file("d/x", 1, 1),
            file("d/y", 2, 2),
            file("z", 3, 3),
        ];
        let cur = vec![
            dir("d"),
            file("d/x", 7, 7),
            file("d/w", 8, 8),
            file("z", 9, 9),
        ];
        let r = restored_listing(&cur, &old, Some("d"));
        let paths: Vec<_> = r.iter().map(|e| (e.path.as_str(), e.root[0])).collect();
        assert_eq!(paths, [("d", 0), ("d/x", 1), ("d/y", 2), ("z", 9)]);
        let r = restored_listing(&cur, &old, Some("z"));
        assert_eq!(r.iter().find(|e| e.path == "z").unwrap().root[0], 3);
        assert_eq!(restored_listing(&cur, &old, None), old);
        // A path absent from the old version is removed.
        let r = restored_listing(&cur, &old, Some("d/w"));
        assert!(r.iter().all(|e| e.path != "d/w"));
    }
}
