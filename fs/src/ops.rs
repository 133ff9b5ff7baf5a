//! The `Filesystem` impl: a thin translation from FUSE requests to the inode tree, the read path
//! and the overlay. Locks are taken as `lib.rs` says; see there.
//!
//! FIFOs, sockets and device nodes live on the owner's mount only (never published). Deliberately
//! unsupported, each with the errno the kernel itself gives a filesystem that lacks the operation
//! (docs/architecture.md lists them): hard links (`link`: EPERM), `RENAME_EXCHANGE` and
//! whiteouts (EINVAL).

use crate::history;
use crate::inode::{check_name, dirent_type, Content, Inode, Special, ROOT};
use crate::overlay::{self, Overlay};
use crate::read::{errno, io_errno};
use crate::{fill_dir, Handle, ShareFs, Shared, State};
use ccbt_xet::hash::XetHash;
use ccbt_xet::listing::Kind;
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, OpenFlags,
    RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry,
    ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::MutexGuard;
use std::time::{Duration, SystemTime};

const TTL: Duration = Duration::from_secs(1);

fn name_str(name: &OsStr) -> Result<&str, Errno> {
    let n = name.to_str().ok_or(Errno::EINVAL)?;
    check_name(n)?;
    Ok(n)
}

/// A name to look up: anything that is not valid UTF-8 cannot be in a share.
fn lookup_name(name: &OsStr) -> Result<&str, Errno> {
    let n = name.to_str().ok_or(Errno::ENOENT)?;
    if n.len() > crate::inode::NAME_MAX {
        return Err(Errno::ENAMETOOLONG);
    }
    Ok(n)
}

impl Shared {
    fn writable(&self) -> Result<(), Errno> {
        if !self.owner() {
            tracing::warn!("write refused: this node does not hold the share's key, so the mount is read-only (EROFS)");
            return Err(Errno::EROFS);
        }
        Ok(())
    }

    /// [`Shared::writable`], and none of `inos` is in `.ccbt/history` (read-only everywhere).
    fn writable_at(&self, inos: &[u64]) -> Result<(), Errno> {
        if inos.iter().any(|i| history::is_history(*i)) {
            return Err(Errno::EROFS);
        }
        self.writable()
    }

    /// A name in a directory; `.ccbt` in the root when the share has no such entry.
    fn resolve(&self, st: &State, parent: u64, name: &str) -> Result<u64, Errno> {
        if history::is_history(parent) {
            return st.history.lookup(parent, name);
        }
        match st.tree.lookup(parent, name) {
            Err(Errno::ENOENT) if parent == ROOT && name == history::NAME && self.cfg.history => {
                Ok(history::META)
            }
            r => r,
        }
    }

    fn attr_of(&self, st: &State, ino: u64) -> Result<FileAttr, Errno> {
        let mut a = st
            .node(ino)
            .map(|n| n.attr(ino, self.owner() && !history::is_history(ino)))
            .ok_or(Errno::ENOENT)?;
        if st.orphans.contains_key(&ino) {
            a.nlink = 0; // open but unlinked
        }
        Ok(a)
    }

    /// Copies a published file out of the CAS into a new overlay file, fetching what is missing
    /// from peers. Runs without the state lock.
    fn materialise(&self, ino: u64, root: XetHash, size: u64) -> Result<(PathBuf, File), Errno> {
        if size > 0 {
            self.reader.fetch_all(root, size)?;
        }
        std::fs::create_dir_all(&self.cfg.overlay_dir).map_err(io_errno)?;
        let p = overlay::new_path(&self.cfg.overlay_dir, ino);
        let mut f = overlay::open_rw(&p, true).map_err(io_errno)?;
        if size > 0 {
            let r =
                ccbt_xet::tree::read_into(&self.reader.node.shares.store, root, size, &mut f, true)
                    .map_err(|e| errno(e, Errno::EIO))
                    .and_then(|_| f.set_len(size).map_err(io_errno));
            if let Err(e) = r {
                let _ = std::fs::remove_file(&p);
                return Err(e);
            }
        }
        Ok((p, f))
    }

    /// The state lock, with `ino` a file whose content is an overlay (made one if needed).
    fn overlay_locked(&self, ino: u64) -> Result<MutexGuard<'_, State>, Errno> {
        loop {
            let st = self.state();
            let n = st.node(ino).ok_or(Errno::ENOENT)?;
            if n.special.is_some() {
                return Err(Errno::EINVAL);
            }
            match (&n.content, n.kind) {
                (_, Kind::Dir) => return Err(Errno::EISDIR),
                (_, Kind::Link) => return Err(Errno::EINVAL),
                (Content::Overlay(_), _) => return Ok(st),
                (Content::Cas(root), Kind::File) => {
                    let (root, size) = (*root, n.size);
                    drop(st);
                    let (p, f) = self.materialise(ino, root, size)?;
                    let mut st = self.state();
                    match st.node_mut(ino) {
                        Some(n) if matches!(n.content, Content::Cas(r) if r == root) => {
                            n.content = Content::Overlay(Overlay::new(p, f, Some((root, size))));
                            st.unsaved = true;
                            return Ok(st);
                        }
                        // Changed meanwhile: look again.
                        _ => {
                            let _ = std::fs::remove_file(&p);
                        }
                    }
                }
            }
        }
    }

    /// Sets a file's size (owner mounts).
    fn truncate(&self, ino: u64, size: u64, now: SystemTime) -> Result<(), Errno> {
        let mut st = self.overlay_locked(ino)?;
        let n = st.node_mut(ino).ok_or(Errno::ENOENT)?;
        let old = n.size;
        let Content::Overlay(o) = &mut n.content else {
            return Err(Errno::EIO);
        };
        o.file.set_len(size).map_err(io_errno)?;
        o.note_edit(old.min(size), old.max(size));
        n.size = size;
        n.mtime = now;
        n.ctime = now;
        drop(st);
        self.changed();
        Ok(())
    }

    /// A new, empty overlay file (made before taking the state lock).
    fn new_overlay_file(&self) -> Result<(PathBuf, File), Errno> {
        std::fs::create_dir_all(&self.cfg.overlay_dir).map_err(io_errno)?;
        let p = overlay::new_path(&self.cfg.overlay_dir, 0);
        let f = overlay::open_rw(&p, true).map_err(io_errno)?;
        Ok((p, f))
    }

    /// Inserts a new regular file (with its overlay file) or special node under `parent`;
    /// on failure the overlay file is removed.
    #[allow(clippy::too_many_arguments)]
    fn make_node(
        &self,
        st: &mut State,
        req: &Request,
        parent: u64,
        name: &str,
        mode: u32,
        file: Option<(PathBuf, File)>,
        special: Option<Special>,
    ) -> Result<u64, Errno> {
        let mut n = self.new_inode(st, req, parent, Kind::File, mode);
        let path = file.as_ref().map(|f| f.0.clone());
        if let Some((p, f)) = file {
            n.content = Content::Overlay(Overlay::new(p, f, None));
        }
        n.special = special;
        let now = n.ctime;
        match st.tree.insert(&mut st.inos, parent, name, n, now) {
            Ok(ino) => {
                st.unsaved = true;
                Ok(ino)
            }
            Err(e) => {
                if let Some(p) = path {
                    let _ = std::fs::remove_file(p);
                }
                Err(e)
            }
        }
    }

    /// Replies to an operation that changed the published tree.
    fn reply_changed(&self, res: Result<(), Errno>, reply: ReplyEmpty) {
        match res {
            Ok(()) => {
                self.changed();
                self.request_publish();
                reply.ok()
            }
            Err(e) => reply.error(e),
        }
    }

    /// Records an open of `ino`.
    fn add_handle(&self, st: &mut State, ino: u64, h: Handle) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        *st.open.entry(ino).or_default() += 1;
        st.handles.insert(fh, h);
        fh
    }

    /// Owner uid/gid of a new entry under `parent`: the caller's, but a set-gid directory gives
    /// its group (and, to a new directory, its set-gid bit).
    fn new_inode(&self, st: &State, req: &Request, parent: u64, kind: Kind, perm: u32) -> Inode {
        let now = SystemTime::now();
        let mut perm = perm & 0o7777;
        let mut gid = req.gid();
        if let Some(p) = st.node(parent) {
            if p.perm & 0o2000 != 0 {
                gid = p.gid;
                if kind == Kind::Dir {
                    perm |= 0o2000;
                }
            }
        }
        Inode::new(kind, perm, req.uid(), gid, now)
    }
}

impl ShareFs {
    /// `mkdir` and `symlink`: a new directory or link under `parent` (owner mounts).
    fn add_entry(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        (kind, perm, target): (Kind, u32, Option<String>),
        reply: ReplyEntry,
    ) {
        let s = &self.0;
        let res = s
            .writable_at(&[parent.0])
            .and_then(|_| name_str(name))
            .and_then(|name| {
                let mut st = s.state();
                let st = &mut *st;
                let mut n = s.new_inode(st, req, parent.0, kind, perm);
                n.target = target;
                let now = n.ctime;
                let ino = st.tree.insert(&mut st.inos, parent.0, name, n, now)?;
                st.unsaved = true;
                s.attr_of(st, ino)
            });
        match res {
            Ok(attr) => {
                s.changed();
                s.request_publish();
                reply.entry(&TTL, &attr, Generation(0))
            }
            Err(e) => reply.error(e),
        }
    }

    /// `unlink` and `rmdir`.
    fn remove_entry(&self, parent: INodeNo, name: &OsStr, dir: bool, reply: ReplyEmpty) {
        let s = &self.0;
        let res = s
            .writable_at(&[parent.0])
            .and_then(|_| lookup_name(name))
            .and_then(|name| {
                let mut st = s.state();
                let st = &mut *st;
                let (ino, n) =
                    st.tree
                        .remove(&mut st.inos, parent.0, name, dir, SystemTime::now())?;
                st.unlinked(ino, n);
                st.unsaved = true;
                Ok(())
            });
        s.reply_changed(res, reply);
    }
}

impl Filesystem for ShareFs {
    fn init(&mut self, _req: &Request, config: &mut fuser::KernelConfig) -> std::io::Result<()> {
        let s = &self.0;
        if s.owner() && s.multi() {
            // Other writers' versions replace files under the kernel: it must take sizes from
            // us, which the writeback cache stops it doing.
            tracing::info!("several writers: the kernel's writeback cache stays off");
        } else if s.owner() {
            // The kernel gathers small writes in its page cache and sends them in large
            // requests: a 4 KiB write costs a memory copy, not a round trip.
            if config
                .add_capabilities(fuser::InitFlags::FUSE_WRITEBACK_CACHE)
                .is_err()
            {
                tracing::info!("the kernel does not offer FUSE's writeback cache");
            }
        } else if s.pt.cache.enabled() {
            // Depth 2: the data dir may itself be on a stacked filesystem (overlayfs).
            let ok = config
                .add_capabilities(fuser::InitFlags::FUSE_PASSTHROUGH)
                .is_ok()
                && config.set_max_stack_depth(2).is_ok();
            s.pt.on.store(ok, Ordering::Relaxed);
            if !ok {
                tracing::info!(
                    "the kernel does not offer FUSE passthrough: every read goes through ccbt"
                );
            }
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let s = &self.0;
        let res = lookup_name(name).and_then(|n| {
            // Old versions are built (fetched if need be) before the state lock is taken.
            s.ensure_history(parent.0)?;
            if parent.0 == history::DIR {
                if let Ok(seq) = n.parse::<u64>() {
                    s.load_version(seq)?;
                }
            }
            let st = s.state();
            s.resolve(&st, parent.0, n)
                .and_then(|ino| s.attr_of(&st, ino))
        });
        match res {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let _ = self.0.ensure_history(ino.0);
        let st = self.0.state();
        match self.0.attr_of(&st, ino.0) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let _ = self.0.ensure_history(ino.0);
        let st = self.0.state();
        match st.node(ino.0).and_then(|n| n.target.clone()) {
            Some(target) => reply.data(target.as_bytes()),
            None => reply.error(Errno::EINVAL),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let s = &self.0;
        let wants_write =
            flags.0 & libc::O_ACCMODE != libc::O_RDONLY || flags.0 & libc::O_TRUNC != 0;
        if wants_write {
            if let Err(e) = s.writable_at(&[ino.0]) {
                return reply.error(e);
            }
            if flags.0 & libc::O_TRUNC != 0 {
                if let Err(e) = s.truncate(ino.0, 0, SystemTime::now()) {
                    return reply.error(e);
                }
            }
        }
        if let Err(e) = s.ensure_history(ino.0) {
            return reply.error(e);
        }
        let mut st = s.state();
        let Some(n) = st.node(ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        if n.kind == Kind::Dir {
            return reply.error(Errno::EISDIR);
        }
        let (content, size, path) = (n.content.clone(), n.size, n.path.clone());
        let backing = s.pt.open_backing(ino.0, &content, size, &path, &reply);
        // Published content never changes under a root, so the kernel may keep what it cached
        // the last time this inode was opened with the same root.
        let fopen = match &content {
            Content::Cas(root) => match st.opened_roots.insert(ino.0, *root) {
                Some(prev) if prev == *root => FopenFlags::FOPEN_KEEP_CACHE,
                _ => FopenFlags::empty(),
            },
            // The owner's edits go through this mount only: its cache is never stale.
            Content::Overlay(_) => FopenFlags::FOPEN_KEEP_CACHE,
        };
        let fh = s.add_handle(
            &mut st,
            ino.0,
            Handle {
                passthrough: backing.is_some(),
                content,
                size,
                last_end: 0,
                ahead: 0,
            },
        );
        drop(st);
        match backing {
            Some(b) => reply.opened_passthrough(FileHandle(fh), FopenFlags::empty(), &b),
            None => reply.opened(FileHandle(fh), fopen),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock: Option<fuser::LockOwner>,
        reply: ReplyData,
    ) {
        let s = &self.0;
        let (content, fsize, sequential) = {
            let mut st = s.state();
            let owner = s.owner();
            // The owner reads the inode's current bytes; others the version they opened.
            let current = if owner {
                st.node(ino.0).map(|n| (n.content.clone(), n.size))
            } else {
                None
            };
            let Some(h) = st.handles.get_mut(&fh.0) else {
                return reply.error(Errno::EBADF);
            };
            let (c, sz) = current.unwrap_or_else(|| (h.content.clone(), h.size));
            let seq = offset == h.last_end;
            h.last_end = offset + size as u64;
            (c, sz, seq.then_some(h.ahead))
        };
        let mut ahead = sequential.unwrap_or(0);
        // One reply buffer per FUSE thread: a fresh 1 MiB allocation per read costs page faults.
        thread_local! {
            static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        BUF.with(|b| {
            let mut out = b.borrow_mut();
            out.clear();
            let res = match &content {
                Content::Cas(root) => s.reader.read_cas(
                    *root,
                    fsize,
                    offset,
                    size,
                    sequential.is_some().then_some(&mut ahead),
                    &mut out,
                ),
                Content::Overlay(o) => {
                    let end = (offset + size as u64).min(fsize);
                    if offset < end {
                        out.resize((end - offset) as usize, 0);
                        match o.file.read_at(&mut out, offset) {
                            Ok(n) => {
                                out.truncate(n);
                                Ok(())
                            }
                            Err(e) => Err(io_errno(e)),
                        }
                    } else {
                        Ok(())
                    }
                }
            };
            if sequential.is_some() {
                if let Some(h) = s.state().handles.get_mut(&fh.0) {
                    h.ahead = h.ahead.max(ahead);
                }
            }
            match res {
                Ok(()) => reply.data(&out),
                Err(e) => reply.error(e),
            }
        })
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _wf: WriteFlags,
        flags: OpenFlags,
        _lock: Option<fuser::LockOwner>,
        reply: ReplyWrite,
    ) {
        let s = &self.0;
        let res = s.writable_at(&[ino.0]).and_then(|_| {
            let mut st = s.overlay_locked(ino.0)?;
            let n = st.node_mut(ino.0).ok_or(Errno::ENOENT)?;
            let off = if flags.0 & libc::O_APPEND != 0 {
                n.size
            } else {
                offset
            };
            let end = off.checked_add(data.len() as u64).ok_or(Errno::EFBIG)?;
            let Content::Overlay(o) = &mut n.content else {
                return Err(Errno::EIO);
            };
            o.file.write_all_at(data, off).map_err(io_errno)?;
            // A write past the end leaves a hole of zeros, which is new content too.
            o.note_edit(off.min(n.size), end);
            n.size = n.size.max(end);
            let now = SystemTime::now();
            n.mtime = now;
            n.ctime = now;
            Ok(())
        });
        match res {
            Ok(()) => {
                s.changed();
                reply.written(data.len() as u32)
            }
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock: fuser::LockOwner,
        reply: ReplyEmpty,
    ) {
        // close(2): the state file names every file written so far (data stays in the page
        // cache until fsync, as on any filesystem).
        match self.0.save_state(false) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(io_errno(e)),
        }
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock: Option<fuser::LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let s = &self.0;
        let h = {
            let mut st = s.state();
            let h = st.handles.remove(&fh.0);
            let last = match st.open.get_mut(&ino.0) {
                Some(c) => {
                    *c = c.saturating_sub(1);
                    *c == 0
                }
                None => true,
            };
            if last {
                st.open.remove(&ino.0);
                if let Some(Inode {
                    content: Content::Overlay(o),
                    ..
                }) = st.orphans.remove(&ino.0)
                {
                    let _ = std::fs::remove_file(&o.path);
                }
            }
            h
        };
        if let Some(h) = h {
            s.pt.closed(ino.0, h.passthrough, &h.content, h.size);
        }
        if let Err(e) = s.save_state(false) {
            tracing::warn!("cannot save the mount's state: {e}");
        }
        s.request_publish();
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let s = &self.0;
        let file = match s.state().node(ino.0).map(|n| &n.content) {
            Some(Content::Overlay(o)) => Some(o.file.clone()),
            _ => None,
        };
        let res = file
            .map_or(Ok(()), |f| {
                if datasync {
                    f.sync_data()
                } else {
                    f.sync_all()
                }
            })
            .and_then(|_| s.save_state(true));
        s.request_publish();
        match res {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(io_errno(e)),
        }
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.0.save_state(true) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(io_errno(e)),
        }
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let _ = self.0.ensure_history(ino.0);
        crate::xattr::getxattr(&self.0, ino.0, name, size, reply)
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let _ = self.0.ensure_history(ino.0);
        crate::xattr::listxattr(&self.0, ino.0, size, reply)
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let _ = self.0.ensure_history(ino.0);
        match self.0.state().node(ino.0).map(|n| n.kind) {
            Some(Kind::Dir) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Some(_) => reply.error(Errno::ENOTDIR),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        reply: ReplyDirectory,
    ) {
        let s = &self.0;
        if history::is_history(ino.0) {
            // The store is read before the state lock is taken.
            let seqs = if ino.0 == history::DIR {
                s.held_versions()
            } else {
                Vec::new()
            };
            if let Err(e) = s.ensure_history(ino.0) {
                return reply.error(e);
            }
            return match s.state().history.entries(ino.0, &seqs) {
                Ok(items) => fill_dir(reply, offset, items),
                Err(e) => reply.error(e),
            };
        }
        let mut st = s.state();
        let st = &mut *st;
        let Some(n) = st.tree.get(ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        if n.kind != Kind::Dir {
            return reply.error(Errno::ENOTDIR);
        }
        let parent = if ino.0 == ROOT {
            ROOT
        } else {
            st.tree.parent_of(&mut st.inos, ino.0)
        };
        let n = &st.tree.nodes[&ino.0];
        let mut items: Vec<(u64, FileType, String)> = Vec::with_capacity(n.children.len() + 2);
        items.push((ino.0, FileType::Directory, ".".into()));
        items.push((parent, FileType::Directory, "..".into()));
        for (name, c) in &n.children {
            let k = dirent_type(st.tree.nodes.get(c).map(|x| x.kind));
            items.push((*c, k, name.clone()));
        }
        if ino.0 == ROOT
            && s.cfg.history
            && s.cfg.show_history
            && !n.children.contains_key(history::NAME)
        {
            items.push((history::META, FileType::Directory, history::NAME.into()));
        }
        fill_dir(reply, offset, items);
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let st = self.0.state();
        let used: u64 = st.tree.nodes.values().map(|n| n.size.div_ceil(4096)).sum();
        reply.statfs(
            used + (1 << 24),
            1 << 24,
            1 << 24,
            st.tree.nodes.len() as u64 + (1 << 20),
            1 << 20,
            4096,
            crate::inode::NAME_MAX as u32,
            4096,
        );
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let s = &self.0;
        let res = s
            .writable_at(&[parent.0])
            .and_then(|_| name_str(name))
            .and_then(|name| {
                let file = s.new_overlay_file()?;
                let mut st = s.state();
                let st = &mut *st;
                let ino = s.make_node(st, req, parent.0, name, mode, Some(file), None)?;
                let attr = s.attr_of(st, ino)?;
                let content = st.tree.nodes[&ino].content.clone();
                let fh = s.add_handle(
                    st,
                    ino,
                    Handle {
                        passthrough: false,
                        content,
                        size: 0,
                        last_end: 0,
                        ahead: 0,
                    },
                );
                Ok((attr, fh))
            });
        match res {
            Ok((attr, fh)) => {
                s.changed();
                reply.created(
                    &TTL,
                    &attr,
                    Generation(0),
                    FileHandle(fh),
                    FopenFlags::FOPEN_KEEP_CACHE,
                )
            }
            Err(e) => reply.error(e),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let s = &self.0;
        let special = match mode & libc::S_IFMT {
            libc::S_IFIFO => Some(FileType::NamedPipe),
            libc::S_IFSOCK => Some(FileType::Socket),
            libc::S_IFCHR => Some(FileType::CharDevice),
            libc::S_IFBLK => Some(FileType::BlockDevice),
            _ => None,
        };
        let res = s
            .writable_at(&[parent.0])
            .and_then(|_| name_str(name))
            .and_then(|name| {
                // A regular file gets an (empty) overlay file; the others live in the tree only.
                let file = match special {
                    None => Some(s.new_overlay_file()?),
                    Some(_) => None,
                };
                let special = special.map(|kind| Special { kind, rdev });
                let mut st = s.state();
                let ino = s.make_node(&mut st, req, parent.0, name, mode, file, special)?;
                s.attr_of(&st, ino)
            });
        match res {
            Ok(attr) => {
                if special.is_none() {
                    s.changed();
                }
                reply.entry(&TTL, &attr, Generation(0))
            }
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        self.add_entry(req, parent, name, (Kind::Dir, mode, None), reply);
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let Some(target) = target.to_str() else {
            return reply.error(Errno::EINVAL);
        };
        if target.len() >= libc::PATH_MAX as usize {
            return reply.error(Errno::ENAMETOOLONG);
        }
        self.add_entry(
            req,
            parent,
            link_name,
            (Kind::Link, 0o777, Some(target.to_string())),
            reply,
        );
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        // A listing cannot say two paths are one file.
        reply.error(if self.0.owner() {
            Errno::EPERM
        } else {
            Errno::EROFS
        });
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.remove_entry(parent, name, false, reply);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.remove_entry(parent, name, true, reply);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let s = &self.0;
        let res = s.writable_at(&[parent.0, newparent.0]).and_then(|_| {
            if flags.intersects(RenameFlags::RENAME_EXCHANGE | RenameFlags::RENAME_WHITEOUT) {
                return Err(Errno::EINVAL);
            }
            let name = lookup_name(name)?;
            let newname = name_str(newname)?;
            let mut st = s.state();
            let st = &mut *st;
            let victim = st.tree.rename(
                &mut st.inos,
                (parent.0, name),
                (newparent.0, newname),
                flags.contains(RenameFlags::RENAME_NOREPLACE),
                SystemTime::now(),
            )?;
            if let Some((ino, n)) = victim {
                st.unlinked(ino, n);
            }
            st.unsaved = true;
            Ok(())
        });
        s.reply_changed(res, reply);
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let s = &self.0;
        let nothing = mode.is_none()
            && uid.is_none()
            && gid.is_none()
            && size.is_none()
            && atime.is_none()
            && mtime.is_none()
            && ctime.is_none();
        let res = (|| {
            if nothing {
                return s.attr_of(&s.state(), ino.0);
            }
            s.writable_at(&[ino.0])?;
            let now = SystemTime::now();
            if let Some(sz) = size {
                s.truncate(ino.0, sz, now)?;
            }
            let mut st = s.state();
            let n = st.node_mut(ino.0).ok_or(Errno::ENOENT)?;
            let before = (n.perm & 0o777, n.mtime);
            if let Some(m) = mode {
                n.perm = (m & 0o7777) as u16;
            }
            if let Some(u) = uid {
                n.uid = u;
            }
            if let Some(g) = gid {
                n.gid = g;
            }
            let at = |t: TimeOrNow| match t {
                TimeOrNow::SpecificTime(t) => t,
                TimeOrNow::Now => now,
            };
            if let Some(t) = atime {
                n.atime = at(t);
            }
            if let Some(t) = mtime {
                n.mtime = at(t);
            }
            n.ctime = ctime.unwrap_or(now);
            // Owners and access times stay local; permission bits and mtimes are published.
            let published = before != (n.perm & 0o777, n.mtime);
            st.unsaved = true;
            let attr = s.attr_of(&st, ino.0)?;
            drop(st);
            if published {
                s.changed();
                s.request_publish();
            }
            Ok(attr)
        })();
        match res {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }
}
