//! `.ccbt/history/<seq>/`: every version of the share, read-only, inside every share mount (like
//! ZFS's `.zfs/snapshot`).
//!
//! `.ccbt` resolves by name in the root but is not listed by `readdir` (unless the mount's
//! `show_history` is set), so `find` and `du` of the mount stay clean; a real `.ccbt` entry in
//! the share wins over it. A version's tree is built on first use from its listing (held locally
//! or fetched from peers, its head too) and kept while in use; the least recently used are
//! dropped past [`MAX_LOADED`] and built again if the kernel asks for them.
//!
//! Inode numbers: bit 63 marks history; bits 32..63 hold `seq + 1` (0 for `.ccbt` and
//! `.ccbt/history` themselves), the low 32 bits the inode within that version's own tree.
//! Pure: no I/O and no locks; the state lock holds it (see the lock order in `lib.rs`).

use crate::inode::{InoMap, Inode, Tree, ROOT};
use ccbt_xet::listing::{Entry, Kind};
use fuser::{Errno, FileType};
use std::collections::{HashMap, VecDeque};
use std::time::SystemTime;

const HIST: u64 = 1 << 63;
/// `.ccbt`
pub(crate) const META: u64 = HIST | 1;
/// `.ccbt/history`
pub(crate) const DIR: u64 = HIST | 2;
/// The name in the root.
pub(crate) const NAME: &str = ".ccbt";
/// Versions whose trees are kept built at once.
pub(crate) const MAX_LOADED: usize = 32;
/// The highest seq that fits the inode scheme.
pub(crate) const MAX_SEQ: u64 = (1 << 31) - 2;

pub(crate) fn is_history(ino: u64) -> bool {
    ino & HIST != 0
}

fn global(seq: u64, local: u64) -> u64 {
    HIST | ((seq + 1) << 32) | local
}

/// The version an inode belongs to (None for `.ccbt` and `.ccbt/history`).
pub(crate) fn version_of(ino: u64) -> Option<u64> {
    let slot = (ino & !HIST) >> 32;
    (is_history(ino) && slot > 0).then(|| slot - 1)
}

fn local(ino: u64) -> u64 {
    ino & 0xffff_ffff
}

/// The inode of version `seq`'s root directory (`.ccbt/history/<seq>`).
pub(crate) fn version_root(seq: u64) -> u64 {
    global(seq, ROOT)
}

fn dir_inode(now: SystemTime) -> Inode {
    Inode::new(Kind::Dir, 0o555, 0, 0, now)
}

pub(crate) struct History {
    versions: HashMap<u64, Tree>,
    used: VecDeque<u64>,
    meta: Inode,
    dir: Inode,
}

impl History {
    pub fn new(now: SystemTime) -> History {
        History {
            versions: HashMap::new(),
            used: VecDeque::new(),
            meta: dir_inode(now),
            dir: dir_inode(now),
        }
    }

    pub fn loaded(&self, seq: u64) -> bool {
        self.versions.contains_key(&seq)
    }

    /// Builds version `seq`'s tree from its listing; drops the least recently loaded past the
    /// bound.
    pub fn load(&mut self, seq: u64, entries: &[Entry], now: SystemTime) {
        if self.loaded(seq) {
            return;
        }
        let mut t = Tree::build(&mut InoMap::default(), seq, entries, false, now);
        if let Some(root) = t.nodes.get_mut(&ROOT) {
            root.perm = 0o555;
        }
        self.versions.insert(seq, t);
        self.used.push_back(seq);
        while self.used.len() > MAX_LOADED {
            if let Some(old) = self.used.pop_front() {
                self.versions.remove(&old);
            }
        }
    }

    pub fn node(&self, ino: u64) -> Option<&Inode> {
        match ino {
            META => Some(&self.meta),
            DIR => Some(&self.dir),
            _ => self.versions.get(&version_of(ino)?)?.get(local(ino)),
        }
    }

    /// A name in a history directory. `.ccbt/history/<seq>` must be loaded first (the caller
    /// does the I/O); an unloaded one is ENOENT here.
    pub fn lookup(&self, parent: u64, name: &str) -> Result<u64, Errno> {
        match parent {
            META if name == "history" => Ok(DIR),
            META => Err(Errno::ENOENT),
            DIR => {
                let seq: u64 = name.parse().map_err(|_| Errno::ENOENT)?;
                if self.loaded(seq) {
                    Ok(version_root(seq))
                } else {
                    Err(Errno::ENOENT)
                }
            }
            _ => {
                let seq = version_of(parent).ok_or(Errno::ENOENT)?;
                let t = self.versions.get(&seq).ok_or(Errno::ENOENT)?;
                t.lookup(local(parent), name).map(|i| global(seq, i))
            }
        }
    }

    /// The parent of a history directory.
    fn parent(&self, ino: u64) -> u64 {
        match (ino, version_of(ino)) {
            (META, _) => ROOT,
            (DIR, _) => META,
            (_, Some(_)) if local(ino) == ROOT => DIR,
            (_, Some(seq)) => {
                let t = &self.versions[&seq];
                let path = &t.nodes[&local(ino)].path;
                let parent_path = path.rsplit_once('/').map_or("", |(p, _)| p);
                // Directories are few; a scan keeps the tree free of parent links.
                t.nodes
                    .iter()
                    .find(|(_, n)| n.kind == Kind::Dir && n.path == parent_path)
                    .map_or(version_root(seq), |(i, _)| global(seq, *i))
            }
            _ => ROOT,
        }
    }

    /// `readdir` of a history directory; `seqs`: the versions to list in `.ccbt/history`.
    pub fn entries(&self, ino: u64, seqs: &[u64]) -> Result<Vec<(u64, FileType, String)>, Errno> {
        let n = self.node(ino).ok_or(Errno::ENOENT)?;
        if n.kind != Kind::Dir {
            return Err(Errno::ENOTDIR);
        }
        let mut items = vec![
            (ino, FileType::Directory, ".".to_string()),
            (self.parent(ino), FileType::Directory, "..".to_string()),
        ];
        match ino {
            META => items.push((DIR, FileType::Directory, "history".into())),
            DIR => items.extend(
                seqs.iter()
                    .filter(|s| **s <= MAX_SEQ)
                    .map(|s| (version_root(*s), FileType::Directory, s.to_string())),
            ),
            _ => {
                let seq = version_of(ino).ok_or(Errno::ENOENT)?;
                let t = &self.versions[&seq];
                for (name, c) in &n.children {
                    let k = crate::inode::dirent_type(t.nodes.get(c).map(|x| x.kind));
                    items.push((global(seq, *c), k, name.clone()));
                }
            }
        }
        Ok(items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(p: &str, kind: Kind) -> Entry {
        Entry {
            path: p.into(),
            kind,
            size: 3,
            root: [1; 32],
            executable: false,
            mtime: 5,
            target: None,
            mode: None,
            stamp: None,
        }
    }

    #[test]
    fn versions_resolve_and_are_bounded() {
        let now = SystemTime::now();
        let mut h = History::new(now);
        assert_eq!(h.lookup(META, "history"), Ok(DIR));
        assert_eq!(h.lookup(DIR, "1"), Err(Errno::ENOENT));
        h.load(1, &[e("d", Kind::Dir), e("d/f", Kind::File)], now);
        let root = h.lookup(DIR, "1").unwrap();
        assert_eq!(root, version_root(1));
        assert_eq!(version_of(root), Some(1));
        let d = h.lookup(root, "d").unwrap();
        let f = h.lookup(d, "f").unwrap();
        assert!(is_history(f));
        assert_eq!(h.node(f).unwrap().size, 3);
        let names: Vec<_> = h
            .entries(d, &[])
            .unwrap()
            .into_iter()
            .map(|x| x.2)
            .collect();
        assert_eq!(names, [".", "..", "f"]);
        assert_eq!(h.entries(d, &[]).unwrap()[1].0, root);
        assert_eq!(h.entries(DIR, &[1, 2]).unwrap().len(), 4);
        for s in 2..(MAX_LOADED as u64 + 2) {
            h.load(s, &[], now);
        }
        assert!(!h.loaded(1), "the least recently loaded version is dropped");
        assert!(h.node(f).is_none());
        assert!(!is_history(ROOT) && version_of(META).is_none());
    }
}
