//! A classic torrent as a read-only directory. A read raises the priority of the pieces it covers
//! (the picker's streaming window, plus a little read-ahead) and blocks until they are verified, so a
//! media player can play while the torrent downloads; a read no peer can satisfy in time gets EIO.

use ccbt_core::session::TorrentHandle;
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, OpenFlags,
    ReplyAttr, ReplyData, ReplyDirectory, ReplyEntry, ReplyOpen, Request,
};
use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

const TTL: Duration = Duration::from_secs(60);
/// Pieces fetched ahead of the one being read.
const READ_AHEAD: u32 = 4;

struct Entry {
    parent: u64,
    dir: bool,
    /// Offset in the torrent's piece space, and length.
    offset: u64,
    size: u64,
    children: BTreeMap<String, u64>,
}

pub struct TorrentFs {
    handle: Arc<TorrentHandle>,
    entries: HashMap<u64, Entry>,
    timeout: Duration,
}

impl TorrentFs {
    pub fn new(handle: Arc<TorrentHandle>, timeout: Duration) -> TorrentFs {
        let mut entries = HashMap::new();
        entries.insert(
            1,
            Entry {
                parent: 1,
                dir: true,
                offset: 0,
                size: 0,
                children: BTreeMap::new(),
            },
        );
        let mut next = 2u64;
        let meta = handle.meta();
        for f in meta.files.iter().filter(|f| !f.pad) {
            let mut parent = 1u64;
            for (i, comp) in f.path.iter().enumerate() {
                let last = i + 1 == f.path.len();
                let existing = entries[&parent].children.get(comp).copied();
                let ino = match existing {
                    Some(ino) => ino,
                    None => {
                        let ino = next;
                        next += 1;
                        entries.insert(
                            ino,
                            Entry {
                                parent,
                                dir: !last,
                                offset: f.offset,
                                size: if last { f.length } else { 0 },
                                children: BTreeMap::new(),
                            },
                        );
                        entries
                            .get_mut(&parent)
                            .unwrap()
                            .children
                            .insert(comp.clone(), ino);
                        ino
                    }
                };
                parent = ino;
            }
        }
        TorrentFs {
            handle,
            entries,
            timeout,
        }
    }

    fn attr(&self, ino: u64) -> FileAttr {
        let e = &self.entries[&ino];
        FileAttr {
            ino: INodeNo(ino),
            size: e.size,
            blocks: e.size.div_ceil(512),
            atime: UNIX_EPOCH,
            mtime: UNIX_EPOCH,
            ctime: UNIX_EPOCH,
            crtime: UNIX_EPOCH,
            kind: if e.dir {
                FileType::Directory
            } else {
                FileType::RegularFile
            },
            perm: if e.dir { 0o555 } else { 0o444 },
            nlink: if e.dir { 2 } else { 1 },
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 65536,
            flags: 0,
        }
    }

    /// Waits (bounded) until every piece covering `[off, off+len)` of the piece space is verified.
    fn wait_pieces(&self, off: u64, len: u64) -> Result<(), Errno> {
        let pl = self.handle.meta().piece_length;
        let first = (off / pl) as u32;
        let last = ((off + len - 1) / pl) as u32;
        let deadline = Instant::now() + self.timeout;
        let mut raised = false;
        while !(first..=last).all(|p| self.handle.have_piece(p)) {
            if !raised {
                self.handle
                    .set_stream_window(first, last - first + 1 + READ_AHEAD);
                raised = true;
            }
            if Instant::now() > deadline {
                tracing::warn!(
                    "read timed out after {:?} waiting for pieces {first}..={last}",
                    self.timeout
                );
                return Err(Errno::EIO);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }
}

impl Filesystem for TorrentFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match name
            .to_str()
            .and_then(|n| self.entries.get(&parent.0)?.children.get(n))
        {
            Some(&ino) => reply.entry(&TTL, &self.attr(ino), Generation(0)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        if self.entries.contains_key(&ino.0) {
            reply.attr(&TTL, &self.attr(ino.0))
        } else {
            reply.error(Errno::ENOENT)
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.0 & libc::O_ACCMODE != libc::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        match self.entries.get(&ino.0) {
            Some(e) if !e.dir => reply.opened(FileHandle(0), FopenFlags::empty()),
            Some(_) => reply.error(Errno::EISDIR),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock: Option<fuser::LockOwner>,
        reply: ReplyData,
    ) {
        let Some(e) = self.entries.get(&ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        let end = (offset + size as u64).min(e.size);
        if offset >= end {
            return reply.data(&[]);
        }
        let off = e.offset + offset;
        if let Err(err) = self.wait_pieces(off, end - offset) {
            return reply.error(err);
        }
        let mut buf = vec![0u8; (end - offset) as usize];
        match self.handle.read_at(off, &mut buf) {
            Ok(()) => reply.data(&buf),
            Err(err) => reply.error(Errno::from(err)),
        }
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply.opened(FileHandle(0), FopenFlags::empty());
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        reply: ReplyDirectory,
    ) {
        let Some(e) = self.entries.get(&ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        let mut items = vec![
            (ino.0, FileType::Directory, ".".to_string()),
            (e.parent, FileType::Directory, "..".to_string()),
        ];
        for (name, c) in &e.children {
            items.push((
                *c,
                if self.entries[c].dir {
                    FileType::Directory
                } else {
                    FileType::RegularFile
                },
                name.clone(),
            ));
        }
        crate::fill_dir(reply, offset, items);
    }
}

/// A mounted torrent (unmount with `umount_and_join`).
pub type TorrentMounted = fuser::BackgroundSession;

/// Mounts a running torrent read-only at `dir`.
pub fn mount_torrent(
    handle: Arc<TorrentHandle>,
    dir: &Path,
    timeout: Duration,
    read_ahead_kb: u32,
) -> std::io::Result<TorrentMounted> {
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::FSName("ccbt-torrent".into()),
        fuser::MountOption::RO,
        fuser::MountOption::DefaultPermissions,
    ];
    config.acl = fuser::SessionACL::All;
    config.n_threads = Some(4);
    let session = fuser::spawn_mount(TorrentFs::new(handle, timeout), dir, &config)?;
    crate::set_read_ahead(dir, read_ahead_kb);
    Ok(session)
}
