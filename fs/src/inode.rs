//! The inode tree: a version's listing as inodes, plus the owner's local attributes.
//!
//! Pure: no I/O and no locks. The mount keeps one [`Tree`] inside its state lock (see the lock
//! order in `lib.rs`). Every operation here checks what POSIX asks of it and returns the errno a
//! user expects; the FUSE layer only translates.
//!
//! Invariants:
//! - `nodes[ROOT]` is a directory with an empty path;
//! - every other inode is reachable from the root through exactly one `children` entry, and its
//!   `path` is the `/`-joined names on that way;
//! - `subdirs` of a directory counts its children that are directories (its link count is
//!   `2 + subdirs`);
//! - `inos` maps each path in the tree to its inode, so numbers stay stable across versions.

use crate::overlay::Overlay;
use ccbt_xet::hash::XetHash;
use ccbt_xet::listing::{Entry, Kind};
use fuser::{Errno, FileAttr, FileType, INodeNo};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub(crate) const ROOT: u64 = 1;
/// The longest name a directory entry may have (as on ext4; `ccbt export` writes these names).
pub(crate) const NAME_MAX: usize = 255;

/// Where a file's bytes are.
#[derive(Debug, Clone)]
pub(crate) enum Content {
    /// A published file in the CAS: its Merkle root.
    Cas(XetHash),
    /// A file being edited on the owner's mount.
    Overlay(Overlay),
}

#[derive(Debug, Clone)]
pub(crate) struct Inode {
    pub path: String,
    pub kind: Kind,
    pub size: u64,
    pub content: Content,
    /// Permission, set-id and sticky bits (`0o7777`).
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    pub atime: SystemTime,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
    pub target: Option<String>,
    pub children: BTreeMap<String, u64>,
    /// Children that are directories.
    pub subdirs: u32,
    /// A FIFO, socket or device node: local to the owner's mount, never published (a listing
    /// holds files, directories and symlinks). Its `kind` is `File` for the tree's rules.
    pub special: Option<Special>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Special {
    pub kind: FileType,
    pub rdev: u32,
}

impl Inode {
    /// A new inode made now by `uid:gid`.
    pub fn new(kind: Kind, perm: u32, uid: u32, gid: u32, now: SystemTime) -> Inode {
        Inode {
            path: String::new(),
            kind,
            size: 0,
            content: Content::Cas(XetHash::ZERO),
            perm: (perm & 0o7777) as u16,
            uid,
            gid,
            atime: now,
            mtime: now,
            ctime: now,
            target: None,
            children: BTreeMap::new(),
            subdirs: 0,
            special: None,
        }
    }

    fn from_entry(e: &Entry) -> Inode {
        let t = from_secs(e.mtime);
        Inode {
            path: e.path.clone(),
            kind: e.kind,
            size: e.size,
            content: Content::Cas(XetHash(e.root)),
            perm: e.perm() as u16,
            uid: 0,
            gid: 0,
            atime: t,
            mtime: t,
            ctime: t,
            target: e.target.clone(),
            children: BTreeMap::new(),
            subdirs: 0,
            special: None,
        }
    }

    /// Its listing entry (the root it publishes with is passed in).
    pub fn entry(&self, root: XetHash) -> Entry {
        let executable = self.perm & 0o111 != 0;
        let perm = (self.perm & 0o777) as u32;
        let default = match self.kind {
            Kind::File if !executable => 0o644,
            Kind::Link => 0o777,
            _ => 0o755,
        };
        Entry {
            path: self.path.clone(),
            kind: self.kind,
            size: self.size,
            root: if self.kind == Kind::File {
                root.0
            } else {
                [0; 32]
            },
            executable,
            mtime: secs(self.mtime),
            target: self.target.clone(),
            mode: (self.kind != Kind::Link && perm != default).then_some(perm),
            stamp: None,
        }
    }

    /// The attributes the kernel sees; a read-only mount shows no write bits.
    pub fn attr(&self, ino: u64, writable: bool) -> FileAttr {
        let kind = match (self.kind, self.special) {
            (_, Some(sp)) => sp.kind,
            (Kind::Dir, _) => FileType::Directory,
            (Kind::Link, _) => FileType::Symlink,
            (Kind::File, _) => FileType::RegularFile,
        };
        let size = match self.kind {
            Kind::Link => self.target.as_ref().map_or(0, |s| s.len() as u64),
            _ => self.size,
        };
        let perm = if writable || self.kind == Kind::Link {
            self.perm
        } else {
            self.perm & 0o7555
        };
        FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: self.atime,
            mtime: self.mtime,
            ctime: self.ctime,
            crtime: self.ctime,
            kind,
            perm,
            nlink: if self.kind == Kind::Dir {
                2 + self.subdirs
            } else {
                1
            },
            uid: self.uid,
            gid: self.gid,
            rdev: self.special.map_or(0, |s| s.rdev),
            blksize: 65536,
            flags: 0,
        }
    }
}

pub(crate) fn from_secs(s: i64) -> SystemTime {
    if s >= 0 {
        UNIX_EPOCH + Duration::from_secs(s as u64)
    } else {
        UNIX_EPOCH - Duration::from_secs(s.unsigned_abs())
    }
}

pub(crate) fn secs(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs_f64().ceil() as i64),
    }
}

/// Inode numbers by key (a path, or on read-only mounts a path and a content root), kept across
/// versions so the kernel's inodes stay valid when the tree is swapped.
#[derive(Debug)]
pub(crate) struct InoMap {
    map: HashMap<String, u64>,
    last: u64,
}

impl Default for InoMap {
    fn default() -> Self {
        InoMap {
            map: HashMap::from([(String::new(), ROOT)]),
            last: ROOT,
        }
    }
}

impl InoMap {
    pub fn get(&mut self, key: &str) -> u64 {
        if let Some(i) = self.map.get(key) {
            return *i;
        }
        self.last += 1;
        self.map.insert(key.to_string(), self.last);
        self.last
    }

    /// A new number that no path names yet (an inode whose path is about to be set).
    fn fresh(&mut self) -> u64 {
        self.last += 1;
        self.last
    }
}

/// The working tree of a mount.
#[derive(Debug, Clone)]
pub(crate) struct Tree {
    pub nodes: HashMap<u64, Inode>,
    pub seq: u64,
}

/// The type `readdir` reports for an entry of this kind.
pub(crate) fn dirent_type(kind: Option<Kind>) -> FileType {
    match kind {
        Some(Kind::Dir) => FileType::Directory,
        Some(Kind::Link) => FileType::Symlink,
        _ => FileType::RegularFile,
    }
}

/// A name that may become a directory entry.
pub(crate) fn check_name(n: &str) -> Result<(), Errno> {
    if n.is_empty() || n == "." || n == ".." || n.contains('/') || n.contains('\0') {
        return Err(Errno::EINVAL);
    }
    if n.len() > NAME_MAX {
        return Err(Errno::ENAMETOOLONG);
    }
    Ok(())
}

impl Tree {
    /// The tree of a version. `content_inos`: an inode names its content too (read-only mounts,
    /// where a file's new version is a new inode, so open files and page caches never go stale).
    pub fn build(
        inos: &mut InoMap,
        seq: u64,
        entries: &[Entry],
        content_inos: bool,
        now: SystemTime,
    ) -> Tree {
        let mut root = Inode::new(Kind::Dir, 0o755, 0, 0, now);
        root.atime = now;
        let mut t = Tree {
            nodes: HashMap::from([(ROOT, root)]),
            seq,
        };
        for e in entries {
            let ino = if content_inos && e.kind == Kind::File {
                inos.get(&format!("{}\0{}", e.path, XetHash(e.root).to_hex()))
            } else {
                inos.get(&e.path)
            };
            // Parents first (listings are sorted, but a parent's own entry may be absent).
            let mut parent = ROOT;
            let (dirs, name) = match e.path.rsplit_once('/') {
                Some((d, n)) => (Some(d), n),
                None => (None, e.path.as_str()),
            };
            if let Some(dirs) = dirs {
                let mut acc = String::new();
                for c in dirs.split('/') {
                    if !acc.is_empty() {
                        acc.push('/');
                    }
                    acc.push_str(c);
                    let pi = inos.get(&acc);
                    t.nodes.entry(pi).or_insert_with(|| {
                        Inode::from_entry(&Entry {
                            path: acc.clone(),
                            kind: Kind::Dir,
                            size: 0,
                            root: [0; 32],
                            executable: true,
                            mtime: e.mtime,
                            target: None,
                            mode: None,
                            stamp: None,
                        })
                    });
                    t.link(parent, c, pi);
                    parent = pi;
                }
            }
            let mut n = Inode::from_entry(e);
            if let Some(old) = t.nodes.remove(&ino) {
                // A dir created above as a parent, now met as an entry: keep its children.
                n.children = old.children;
                n.subdirs = old.subdirs;
            }
            t.nodes.insert(ino, n);
            t.link(parent, name, ino);
        }
        t
    }

    /// Adds `name -> ino` to `parent` (no checks; for building).
    fn link(&mut self, parent: u64, name: &str, ino: u64) {
        let is_dir = self.nodes[&ino].kind == Kind::Dir;
        let p = self.nodes.get_mut(&parent).expect("parent exists");
        if p.children.insert(name.to_string(), ino).is_none() && is_dir {
            p.subdirs += 1;
        }
    }

    pub fn get(&self, ino: u64) -> Option<&Inode> {
        self.nodes.get(&ino)
    }

    pub fn lookup(&self, parent: u64, name: &str) -> Result<u64, Errno> {
        let p = self.nodes.get(&parent).ok_or(Errno::ENOENT)?;
        if p.kind != Kind::Dir {
            return Err(Errno::ENOTDIR);
        }
        p.children.get(name).copied().ok_or(Errno::ENOENT)
    }

    fn dir(&self, ino: u64) -> Result<&Inode, Errno> {
        let p = self.nodes.get(&ino).ok_or(Errno::ENOENT)?;
        if p.kind != Kind::Dir {
            return Err(Errno::ENOTDIR);
        }
        Ok(p)
    }

    fn child_path(&self, parent: u64, name: &str) -> Result<String, Errno> {
        let p = self.dir(parent)?;
        Ok(if p.path.is_empty() {
            name.to_string()
        } else {
            format!("{}/{}", p.path, name)
        })
    }

    /// A directory's entries changed now.
    fn touch_dir(&mut self, ino: u64, now: SystemTime) {
        if let Some(d) = self.nodes.get_mut(&ino) {
            d.mtime = now;
            d.ctime = now;
        }
    }

    /// Inserts `n` as `parent/name`; returns its inode number.
    pub fn insert(
        &mut self,
        inos: &mut InoMap,
        parent: u64,
        name: &str,
        mut n: Inode,
        now: SystemTime,
    ) -> Result<u64, Errno> {
        check_name(name)?;
        let path = self.child_path(parent, name)?;
        if self.nodes[&parent].children.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        n.path = path.clone();
        let ino = inos.fresh();
        inos.map.insert(path, ino);
        self.nodes.insert(ino, n);
        self.link(parent, name, ino);
        self.touch_dir(parent, now);
        Ok(ino)
    }

    /// Removes `parent/name` (`dir`: rmdir rules, else unlink rules); returns the inode removed.
    pub fn remove(
        &mut self,
        inos: &mut InoMap,
        parent: u64,
        name: &str,
        dir: bool,
        now: SystemTime,
    ) -> Result<(u64, Inode), Errno> {
        if dir && (name == "." || name == "..") {
            return Err(if name == "." {
                Errno::EINVAL
            } else {
                Errno::ENOTEMPTY
            });
        }
        let ino = self.lookup(parent, name)?;
        let n = &self.nodes[&ino];
        match (dir, n.kind == Kind::Dir) {
            (true, false) => return Err(Errno::ENOTDIR),
            (false, true) => return Err(Errno::EISDIR),
            (true, true) if !n.children.is_empty() => return Err(Errno::ENOTEMPTY),
            _ => {}
        }
        let p = self.nodes.get_mut(&parent).expect("looked up");
        p.children.remove(name);
        if dir {
            p.subdirs -= 1;
        }
        self.touch_dir(parent, now);
        let mut n = self.nodes.remove(&ino).expect("looked up");
        inos.map.remove(&n.path);
        n.ctime = now;
        Ok((ino, n))
    }

    /// Renames `parent/name` to `newparent/newname`; returns the inode it replaced, if any.
    pub fn rename(
        &mut self,
        inos: &mut InoMap,
        (parent, name): (u64, &str),
        (newparent, newname): (u64, &str),
        noreplace: bool,
        now: SystemTime,
    ) -> Result<Option<(u64, Inode)>, Errno> {
        check_name(newname)?;
        let ino = self.lookup(parent, name)?;
        let newpath = self.child_path(newparent, newname)?;
        let is_dir = self.nodes[&ino].kind == Kind::Dir;
        if is_dir {
            // A directory cannot move into itself or below itself.
            let own = &self.nodes[&ino].path;
            if newpath == *own || newpath.starts_with(&format!("{own}/")) {
                return Err(Errno::EINVAL);
            }
        }
        let mut victim = None;
        if let Some(&v) = self.nodes[&newparent].children.get(newname) {
            if v == ino {
                return Ok(None);
            }
            if noreplace {
                return Err(Errno::EEXIST);
            }
            let vn = &self.nodes[&v];
            match (is_dir, vn.kind == Kind::Dir) {
                (true, false) => return Err(Errno::ENOTDIR),
                (false, true) => return Err(Errno::EISDIR),
                (true, true) if !vn.children.is_empty() => return Err(Errno::ENOTEMPTY),
                _ => {}
            }
            victim = Some(self.remove(inos, newparent, newname, is_dir, now)?);
        }
        let p = self.nodes.get_mut(&parent).expect("looked up");
        p.children.remove(name);
        if is_dir {
            p.subdirs -= 1;
        }
        self.touch_dir(parent, now);
        self.link(newparent, newname, ino);
        self.touch_dir(newparent, now);
        let old = self.nodes[&ino].path.clone();
        inos.map.remove(&old);
        self.repath(inos, ino, newpath);
        self.nodes.get_mut(&ino).expect("moved").ctime = now;
        Ok(victim)
    }

    /// Re-keys a subtree's paths after a rename.
    fn repath(&mut self, inos: &mut InoMap, ino: u64, path: String) {
        let n = self.nodes.get_mut(&ino).expect("in tree");
        if !n.path.is_empty() && n.path != path {
            inos.map.remove(&n.path);
        }
        n.path = path.clone();
        let children: Vec<(String, u64)> =
            n.children.iter().map(|(k, v)| (k.clone(), *v)).collect();
        inos.map.insert(path.clone(), ino);
        for (name, c) in children {
            self.repath(inos, c, format!("{path}/{name}"));
        }
    }

    /// The parent of a directory (the root is its own parent).
    pub fn parent_of(&self, inos: &mut InoMap, ino: u64) -> u64 {
        let Some(n) = self.nodes.get(&ino) else {
            return ROOT;
        };
        match n.path.rsplit_once('/') {
            Some((pp, _)) => inos.map.get(pp).copied().unwrap_or(ROOT),
            None => ROOT,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(p: &str, kind: Kind) -> Entry {
        Entry {
            path: p.into(),
            kind,
            size: 3,
            root: [7; 32],
            executable: false,
            mtime: 1_700_000_000,
            target: (kind == Kind::Link).then(|| "t".into()),
            mode: None,
            stamp: None,
        }
    }

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::new(1_800_000_000, 123_456_789)
    }

    fn tree() -> (InoMap, Tree) {
        let mut inos = InoMap::default();
        let t = Tree::build(
            &mut inos,
            1,
            &[
                entry("a", Kind::Dir),
                entry("a/f", Kind::File),
                entry("b/c/g", Kind::File),
                entry("l", Kind::Link),
            ],
            false,
            now(),
        );
        (inos, t)
    }

    #[test]
    fn builds_parents_and_counts_links() {
        let (mut inos, t) = tree();
        let b = t.lookup(ROOT, "b").unwrap();
        let c = t.lookup(b, "c").unwrap();
        assert_eq!(t.get(c).unwrap().path, "b/c");
        assert_eq!(t.get(ROOT).unwrap().attr(ROOT, true).nlink, 4); // a, b
        assert_eq!(t.get(b).unwrap().attr(b, true).nlink, 3);
        assert_eq!(
            t.lookup(t.lookup(ROOT, "a").unwrap(), "x"),
            Err(Errno::ENOENT)
        );
        let f = t.lookup(t.lookup(ROOT, "a").unwrap(), "f").unwrap();
        assert_eq!(t.lookup(f, "x"), Err(Errno::ENOTDIR));
        assert_eq!(t.parent_of(&mut inos, c), b);
        // Read-only: no write bits; the same numbers on a rebuild.
        assert_eq!(t.get(f).unwrap().attr(f, false).perm, 0o444);
        let again = Tree::build(&mut inos, 2, &[entry("a/f", Kind::File)], false, now());
        assert_eq!(again.lookup(t.lookup(ROOT, "a").unwrap(), "f"), Ok(f));
    }

    #[test]
    fn insert_remove_follow_posix() {
        let (mut inos, mut t) = tree();
        let n = Inode::new(Kind::Dir, 0o2750, 5, 6, now());
        let d = t.insert(&mut inos, ROOT, "new", n, now()).unwrap();
        assert_eq!(t.get(ROOT).unwrap().mtime, now());
        assert_eq!(t.get(ROOT).unwrap().attr(ROOT, true).nlink, 5);
        assert_eq!(t.get(d).unwrap().attr(d, true).perm, 0o2750);
        let f = Inode::new(Kind::File, 0o644, 0, 0, now());
        assert_eq!(
            t.insert(&mut inos, ROOT, "new", f.clone(), now()),
            Err(Errno::EEXIST)
        );
        let long = "x".repeat(256);
        assert_eq!(
            t.insert(&mut inos, ROOT, &long, f.clone(), now()),
            Err(Errno::ENAMETOOLONG)
        );
        assert!(t
            .insert(&mut inos, ROOT, &long[..255], f.clone(), now())
            .is_ok());
        let l = t.lookup(ROOT, "l").unwrap();
        assert_eq!(
            t.insert(&mut inos, l, "x", f.clone(), now()),
            Err(Errno::ENOTDIR)
        );
        assert_eq!(
            t.remove(&mut inos, ROOT, "a", true, now()).unwrap_err(),
            Errno::ENOTEMPTY
        );
        assert_eq!(
            t.remove(&mut inos, ROOT, "a", false, now()).unwrap_err(),
            Errno::EISDIR
        );
        assert_eq!(
            t.remove(&mut inos, ROOT, "l", true, now()).unwrap_err(),
            Errno::ENOTDIR
        );
        t.remove(&mut inos, ROOT, "new", true, now()).unwrap();
        assert_eq!(t.get(ROOT).unwrap().attr(ROOT, true).nlink, 4);
    }

    #[test]
    fn rename_rules_and_repath() {
        let (mut inos, mut t) = tree();
        let a = t.lookup(ROOT, "a").unwrap();
        let b = t.lookup(ROOT, "b").unwrap();
        let c = t.lookup(b, "c").unwrap();
        // Into itself or below.
        assert_eq!(
            t.rename(&mut inos, (ROOT, "b"), (c, "x"), false, now())
                .unwrap_err(),
            Errno::EINVAL
        );
        // A dir over a file, a file over a dir, onto a non-empty dir.
        assert_eq!(
            t.rename(&mut inos, (ROOT, "a"), (ROOT, "l"), false, now())
                .unwrap_err(),
            Errno::ENOTDIR
        );
        assert_eq!(
            t.rename(&mut inos, (ROOT, "l"), (ROOT, "a"), false, now())
                .unwrap_err(),
            Errno::EISDIR
        );
        assert_eq!(
            t.rename(&mut inos, (ROOT, "b"), (ROOT, "a"), false, now())
                .unwrap_err(),
            Errno::ENOTEMPTY
        );
        assert_eq!(
            t.rename(&mut inos, (ROOT, "l"), (a, "f"), true, now())
                .unwrap_err(),
            Errno::EEXIST
        );
        // A file over a file: the victim comes back, paths follow the move.
        let f = t.lookup(a, "f").unwrap();
        let v = t
            .rename(&mut inos, (ROOT, "l"), (a, "f"), false, now())
            .unwrap();
        assert_eq!(v.map(|v| v.0), Some(f));
        t.rename(&mut inos, (ROOT, "b"), (a, "bb"), false, now())
            .unwrap();
        let g = t.lookup(c, "g").unwrap();
        assert_eq!(t.get(g).unwrap().path, "a/bb/c/g");
        assert_eq!(t.get(a).unwrap().attr(a, true).nlink, 3);
        assert_eq!(t.get(ROOT).unwrap().attr(ROOT, true).nlink, 3);
        assert_eq!(t.parent_of(&mut inos, c), t.lookup(a, "bb").unwrap());
    }

    #[test]
    fn entries_keep_mode_but_not_setid_or_owner() {
        let mut n = Inode::new(Kind::File, 0o4751, 1000, 1000, now());
        n.path = "x".into();
        let e = n.entry(XetHash([1; 32]));
        assert!(e.executable);
        assert_eq!(e.mode, Some(0o751));
        assert_eq!(e.perm(), 0o751);
        let mut plain = Inode::new(Kind::File, 0o644, 0, 0, now());
        plain.path = "y".into();
        assert_eq!(plain.entry(XetHash::ZERO).mode, None);
        assert_eq!(secs(from_secs(-5)), -5);
    }
}
