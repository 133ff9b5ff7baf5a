//! Spare copies for fast follower updates on filesystems without reflinks.
//!
//! A synced file is replaced atomically: the new version is written next to it and renamed over
//! it. On ext4 that means copying the whole file before patching the changed chunks (a 1 GiB file
//! costs seconds). So after a version is applied, a background worker copies each large file it
//! wrote into `.ccbt-sync/spare/`, flushes it, and marks it ready. When the next version changes
//! that file, the spare is patched and renamed into place: the update costs only the changed
//! chunks. Spares are a cache, bounded by a byte budget; a spare is used only if it was copied
//! from exactly the version being replaced, and the copy is discarded if the file changed (inode,
//! size or mtime) while it was read.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};

/// Files smaller than this are copied on demand (cheap enough).
pub const MIN_SIZE: u64 = 32 << 20;

/// One file to keep a spare of.
#[derive(Debug, Clone)]
pub struct Want {
    /// Path inside the synced directory (names the spare).
    pub path: String,
    /// The file's content root in the version just written.
    pub root: [u8; 32],
    pub target: PathBuf,
    /// Inode of the file we renamed into place: a different inode means it was replaced since.
    pub ino: u64,
    pub size: u64,
}

struct Job {
    dir: PathBuf,
    wants: Vec<Want>,
    budget: u64,
}

fn spare_dir(sync_dir: &Path) -> PathBuf {
    sync_dir.join(crate::sync::STATE_DIR).join("spare")
}

fn name(path: &str, root: &[u8; 32]) -> String {
    let k = blake3::hash(path.as_bytes());
    format!(
        "{}-{}",
        &k.to_hex()[..32],
        ccbt_core::encoding::to_hex(&root[..16])
    )
}

/// Moves the ready spare of `path` at content `root` out of the spare dir to `to` (the caller
/// patches and renames it). False when there is none.
pub fn take(sync_dir: &Path, path: &str, root: &[u8; 32], to: &Path) -> bool {
    let d = spare_dir(sync_dir);
    let n = name(path, root);
    // The marker goes first: a crash between the two steps leaves an unmarked (unused) copy.
    std::fs::remove_file(d.join(format!("{n}.ok"))).is_ok()
        && std::fs::rename(d.join(&n), to).is_ok()
}

/// Queues spares for the files a version just wrote (`wants`), within `budget` bytes; spares of
/// anything else are removed. Returns at once; one worker thread per process does the copying.
pub fn schedule(sync_dir: &Path, mut wants: Vec<Want>, budget: u64) {
    static WORKER: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    wants.retain(|w| w.size >= MIN_SIZE);
    let tx = WORKER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("ccbt-spare".into())
            .spawn(move || {
                while let Ok(mut job) = rx.recv() {
                    // Only the newest job per directory matters.
                    while let Ok(next) = rx.try_recv() {
                        if next.dir != job.dir {
                            run(job);
                        }
                        job = next;
                    }
                    run(job);
                }
            })
            .expect("spawn the spare-copy thread");
        Mutex::new(tx)
    });
    let _ = tx.lock().unwrap().send(Job {
        dir: sync_dir.to_path_buf(),
        wants,
        budget,
    });
}

fn run(job: Job) {
    let d = spare_dir(&job.dir);
    let mut keep = std::collections::HashSet::new();
    let mut used = 0u64;
    for w in &job.wants {
        if used + w.size > job.budget {
            continue;
        }
        used += w.size;
        let n = name(&w.path, &w.root);
        keep.insert(n.clone());
        if d.join(format!("{n}.ok")).exists() {
            continue;
        }
        if let Err(e) = copy_one(&d, &n, w) {
            tracing::debug!("no spare copy of {}: {e}", w.path);
            keep.remove(&n);
        }
    }
    // Everything else in the spare dir is stale.
    if let Ok(rd) = std::fs::read_dir(&d) {
        for ent in rd.flatten() {
            let f = ent.file_name().to_string_lossy().to_string();
            let base = f.strip_suffix(".ok").unwrap_or(&f);
            if !keep.contains(base) {
                let _ = std::fs::remove_file(ent.path());
            }
        }
    }
}

fn copy_one(d: &Path, n: &str, w: &Want) -> std::io::Result<()> {
    std::fs::create_dir_all(d)?;
    let stamp = |m: &std::fs::Metadata| (m.ino(), m.size(), m.mtime(), m.mtime_nsec());
    let before = std::fs::metadata(&w.target)?;
    if before.ino() != w.ino || before.size() != w.size {
        return Err(std::io::Error::other("replaced since it was written"));
    }
    let tmp = d.join(format!("{n}.tmp"));
    std::fs::copy(&w.target, &tmp)?;
    // Flushed now, in the background, so renaming it into place later costs no writeback.
    std::fs::File::open(&tmp)?.sync_data()?;
    let after = std::fs::metadata(&w.target)?;
    if stamp(&before) != stamp(&after) {
        let _ = std::fs::remove_file(&tmp);
        return Err(std::io::Error::other("changed while it was copied"));
    }
    std::fs::rename(&tmp, d.join(n))?;
    std::fs::write(d.join(format!("{n}.ok")), b"")?;
    Ok(())
}
