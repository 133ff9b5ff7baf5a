//! Materialized copies of large, fully local files, for FUSE passthrough.
//!
//! A read through FUSE costs a round trip and three copies (store → reply → page cache → reader);
//! on two cores that caps a first sequential read near a quarter of a native one. When a file's
//! content is wholly in the CAS, a background worker writes it out once, every chunk checked
//! against its hash, to `<data dir>/fscache/<root hex>`; later read-only opens of that content hand
//! the copy to the kernel (FOPEN_PASSTHROUGH) and reads never reach the daemon. A copy is named by
//! its content root, so it can never be stale: a new version of a file is a different name.
//! Copies live within a byte budget (least recently opened evicted first); a crash leaves at most
//! a `.tmp` file, removed at the next start.

use ccbt_cas::Store;
use ccbt_xet::hash::XetHash;
use ccbt_xet::tree;
use std::collections::{HashSet, VecDeque};
use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Files smaller than this stay on the FUSE path (a copy would not pay off).
pub(crate) const MIN_SIZE: u64 = 1 << 20;

/// Contents waiting to be materialized (root, size, name for logs), and the set of those queued or
/// being written.
type Queue = (VecDeque<(XetHash, u64, String)>, HashSet<XetHash>);

pub(crate) struct FileCache {
    dir: PathBuf,
    budget: u64,
    queue: Mutex<Queue>,
    cv: Condvar,
}

impl FileCache {
    /// A cache in `dir` holding at most `budget` bytes (0: none).
    pub(crate) fn new(dir: PathBuf, budget: u64) -> FileCache {
        // Half-written copies from a crash.
        if let Ok(rd) = std::fs::read_dir(&dir) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().ends_with(".tmp") {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        FileCache {
            dir,
            budget,
            queue: Mutex::new((VecDeque::new(), HashSet::new())),
            cv: Condvar::new(),
        }
    }

    pub(crate) fn enabled(&self) -> bool {
        self.budget >= MIN_SIZE
    }

    fn path(&self, root: &XetHash) -> PathBuf {
        self.dir.join(root.to_hex())
    }

    /// The materialized copy of `root`, if there is a complete one.
    pub(crate) fn open(&self, root: &XetHash, size: u64) -> Option<File> {
        if !self.enabled() || size < MIN_SIZE {
            return None;
        }
        let f = File::open(self.path(root)).ok()?;
        if f.metadata().ok()?.len() != size {
            return None;
        }
        // The modification time orders eviction: most recently opened last.
        let _ = f.set_modified(SystemTime::now());
        Some(f)
    }

    /// Asks for `root` to be materialized (if it is big enough, fits and is not there yet).
    pub(crate) fn want(&self, root: XetHash, size: u64, name: &str) {
        if !self.enabled() || size < MIN_SIZE || size > self.budget {
            return;
        }
        if self.path(&root).exists() {
            return;
        }
        let mut q = self.queue.lock().unwrap();
        if q.1.insert(root) {
            q.0.push_back((root, size, name.to_string()));
            self.cv.notify_one();
        }
    }

    /// The worker: materializes what is asked for until `closed`.
    pub(crate) fn run(&self, store: &Store, closed: &AtomicBool) {
        loop {
            let job = {
                let mut q = self.queue.lock().unwrap();
                loop {
                    if closed.load(Ordering::Relaxed) {
                        return;
                    }
                    if let Some(j) = q.0.pop_front() {
                        break j;
                    }
                    q = self.cv.wait_timeout(q, Duration::from_secs(1)).unwrap().0;
                }
            };
            let (root, size, name) = job;
            let t0 = Instant::now();
            match self.materialize(store, root, size) {
                Ok(true) => tracing::info!(
                    "{name}: local copy for passthrough reads written ({size} bytes in {:.2} s)",
                    t0.elapsed().as_secs_f64()
                ),
                Ok(false) => tracing::debug!("{name}: not every chunk is local; no copy"),
                Err(e) => tracing::warn!("{name}: cannot write a local copy: {e}"),
            }
            self.queue.lock().unwrap().1.remove(&root);
        }
    }

    /// Writes the copy; `Ok(false)` if some chunk is not local (nothing is fetched for this).
    fn materialize(&self, store: &Store, root: XetHash, size: u64) -> std::io::Result<bool> {
        let err = |e: tree::TreeError| std::io::Error::other(e.to_string());
        let spans = match tree::leaves(store, root, size) {
            Ok(s) => s,
            Err(tree::TreeError::Missing(_)) => return Ok(false),
            Err(e) => return Err(err(e)),
        };
        for (_, h, _) in &spans {
            if !store.has_chunk(&h.0).map_err(std::io::Error::other)? {
                return Ok(false);
            }
        }
        std::fs::create_dir_all(&self.dir)?;
        self.evict(size)?;
        let dst = self.path(&root);
        let tmp = self.dir.join(format!("{}.tmp", root.to_hex()));
        let res = (|| {
            // The store's own file writer: every chunk checked against its hash and length.
            let mut w = std::io::BufWriter::with_capacity(1 << 20, File::create(&tmp)?);
            tree::read_into(store, root, size, &mut w, false).map_err(err)?;
            let f = w.into_inner().map_err(|e| e.into_error())?;
            if f.metadata()?.len() != size {
                return Err(std::io::Error::other("the copy has the wrong length"));
            }
            // On disk before it is named: a crash must not leave a complete-looking copy with
            // holes in it.
            f.sync_data()?;
            std::fs::rename(&tmp, &dst)
        })();
        if res.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        res.map(|_| true)
    }

    /// Removes the least recently opened copies until `need` more bytes fit in the budget.
    /// Open copies stay readable (their open file descriptors keep them).
    fn evict(&self, need: u64) -> std::io::Result<()> {
        let mut files: Vec<(SystemTime, u64, PathBuf)> = Vec::new();
        for e in std::fs::read_dir(&self.dir)?.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_file() {
                files.push((
                    m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                    m.len(),
                    e.path(),
                ));
            }
        }
        let mut used: u64 = files.iter().map(|f| f.1).sum();
        files.sort();
        for (_, len, path) in files {
            if used + need <= self.budget {
                break;
            }
            if std::fs::remove_file(&path).is_ok() {
                used -= len;
            }
        }
        Ok(())
    }
}
