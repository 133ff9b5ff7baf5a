//! FUSE passthrough on read-only mounts: opens of large, fully local files read from a local copy
//! (see [`crate::filecache`]) and never reach the daemon.
//!
//! Only read-only mounts pass through: the kernel requires every open of an inode with a backing
//! file to pass through to that same file, so an owner could not open a file for writing while
//! someone reads it. `io` is a leaf lock.

use crate::filecache::FileCache;
use crate::inode::Content;
use fuser::ReplyOpen;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Open files of one inode on a mount that passes through. The kernel refuses to mix page-cached
/// opens of an inode with passthrough ones, and all passthrough opens of an inode must name one
/// backing file (on a read-only mount an inode's content never changes, so one copy serves all).
#[derive(Default)]
struct InodeIo {
    cached: u32,
    /// The backing file and how many opens use it.
    passthrough: Option<(Arc<fuser::BackingId>, u32)>,
}

pub(crate) struct Passthrough {
    /// Local copies of large files.
    pub cache: FileCache,
    /// The kernel agreed to FUSE passthrough at init (and this mount is read-only).
    pub on: AtomicBool,
    io: Mutex<HashMap<u64, InodeIo>>,
    /// Contents opened through passthrough so far (logged once each).
    passed: Mutex<HashSet<ccbt_xet::hash::XetHash>>,
}

impl Passthrough {
    pub fn new(cache: FileCache) -> Passthrough {
        Passthrough {
            cache,
            on: AtomicBool::new(false),
            io: Mutex::new(HashMap::new()),
            passed: Mutex::new(HashSet::new()),
        }
    }

    pub fn passes(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    /// The backing file for an open to pass through to: the content's local copy, unless the
    /// inode has page-cached opens. Counts the open either way, and asks for a copy when there
    /// is none.
    pub fn open_backing(
        &self,
        ino: u64,
        content: &Content,
        size: u64,
        name: &str,
        reply: &ReplyOpen,
    ) -> Option<Arc<fuser::BackingId>> {
        let (Content::Cas(root), true) = (content, self.passes()) else {
            return None;
        };
        let mut io = self.io.lock().unwrap();
        let e = io.entry(ino).or_default();
        if let Some((b, n)) = &mut e.passthrough {
            *n += 1;
            return Some(b.clone());
        }
        if e.cached == 0 {
            if let Some(f) = self.cache.open(root, size) {
                match reply.open_backing(&f) {
                    Ok(b) => {
                        let b = Arc::new(b);
                        e.passthrough = Some((b.clone(), 1));
                        if self.passed.lock().unwrap().insert(*root) {
                            tracing::info!("{name}: reads pass through to its local copy");
                        }
                        return Some(b);
                    }
                    Err(err) => {
                        tracing::info!("{name}: passthrough refused ({err}); reading through ccbt");
                        self.on.store(false, Ordering::Relaxed);
                    }
                }
            }
        }
        self.cache.want(*root, size, name);
        e.cached += 1;
        None
    }

    /// An open file of `ino` was released.
    pub fn closed(&self, ino: u64, passthrough: bool, content: &Content, size: u64) {
        if !self.passes() {
            return;
        }
        {
            let mut io = self.io.lock().unwrap();
            let Some(e) = io.get_mut(&ino) else { return };
            if passthrough {
                if let Some((_, n)) = &mut e.passthrough {
                    *n -= 1;
                    if *n == 0 {
                        e.passthrough = None; // drops the backing id
                    }
                }
            } else {
                e.cached = e.cached.saturating_sub(1);
            }
            if e.cached == 0 && e.passthrough.is_none() {
                io.remove(&ino);
            }
        }
        // Read through the daemon: once its chunks are all here, later opens can pass through.
        if let (false, Content::Cas(root)) = (passthrough, content) {
            self.cache.want(*root, size, &format!("inode {ino}"));
        }
    }
}
