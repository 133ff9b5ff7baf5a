//! Torrent storage: the piece space mapped onto files with `pread`/`pwrite`, BEP 47 pad files
//! (never on disk, read as zeros), sparse or full preallocation; and piece verification fed block by
//! block as data arrives, so a piece is never read back to be hashed.

use crate::merkle::{self, Hash32, BLOCK};
use crate::metainfo::Metainfo;
use sha1::{Digest, Sha1};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Prealloc {
    #[default]
    Sparse,
    Full,
}

#[derive(Debug)]
struct StoredFile {
    path: PathBuf,
    offset: u64,
    length: u64,
    pad: bool,
    handle: OnceLock<File>,
}

/// A torrent's files on disk.
#[derive(Debug)]
pub struct Storage {
    files: Vec<StoredFile>,
    total: u64,
    prealloc: Prealloc,
}

fn mtime_ns(m: &std::fs::Metadata) -> i128 {
    m.modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

impl Storage {
    /// Maps `meta`'s files under `dir` (`dir/name/...` for a multi-file torrent, `dir/name` else).
    pub fn new(meta: &Metainfo, dir: &Path, prealloc: Prealloc) -> Storage {
        let files = meta
            .files
            .iter()
            .map(|f| {
                let mut path = dir.to_path_buf();
                if meta.multi_file {
                    path.push(&meta.name);
                }
                for c in &f.path {
                    path.push(c);
                }
                StoredFile {
                    path,
                    offset: f.offset,
                    length: f.length,
                    pad: f.pad,
                    handle: OnceLock::new(),
                }
            })
            .collect();
        Storage {
            files,
            total: meta.total_length(),
            prealloc,
        }
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    fn handle(&self, i: usize, create: bool) -> std::io::Result<&File> {
        let f = &self.files[i];
        if let Some(h) = f.handle.get() {
            return Ok(h);
        }
        if create {
            if let Some(parent) = f.path.parent() {
                std::fs::create_dir_all(parent)?;
            }
        }
        // Read-write whenever possible: the handle is cached, and one opened read-only for a
        // recheck must not turn later writes into EBADF. Read-only data still seeds.
        let h = match OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .open(&f.path)
        {
            Ok(h) => h,
            Err(e) if !create && e.kind() == std::io::ErrorKind::PermissionDenied => {
                OpenOptions::new().read(true).open(&f.path)?
            }
            Err(e) => return Err(e),
        };
        if create {
            let len = h.metadata()?.len();
            if len < f.length {
                match self.prealloc {
                    Prealloc::Sparse => h.set_len(f.length)?,
                    Prealloc::Full => {
                        // posix_fallocate: real blocks now, so a full disk fails here, not mid-way.
                        let r = unsafe {
                            libc::posix_fallocate(
                                std::os::unix::io::AsRawFd::as_raw_fd(&h),
                                0,
                                f.length as libc::off_t,
                            )
                        };
                        if r != 0 {
                            return Err(std::io::Error::from_raw_os_error(r));
                        }
                    }
                }
            }
        }
        let _ = f.handle.set(h);
        Ok(f.handle.get().expect("just set"))
    }

    /// Creates every (non-pad) file so that a complete torrent of empty files exists too.
    pub fn create_all(&self) -> std::io::Result<()> {
        for i in 0..self.files.len() {
            if !self.files[i].pad {
                self.handle(i, true)?;
            }
        }
        Ok(())
    }

    /// Calls `f(file index, offset in file, range in buf)` for each file run in `[off, off+len)`.
    fn runs(
        &self,
        off: u64,
        len: usize,
        mut f: impl FnMut(usize, u64, std::ops::Range<usize>) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        let end = off + len as u64;
        let mut i = self.files.partition_point(|x| x.offset + x.length <= off);
        while i < self.files.len() && self.files[i].offset < end {
            let x = &self.files[i];
            let s = x.offset.max(off);
            let t = (x.offset + x.length).min(end);
            if t > s {
                f(i, s - x.offset, (s - off) as usize..(t - off) as usize)?;
            }
            i += 1;
        }
        Ok(())
    }

    /// Writes `data` at `off` in the piece space (pad regions are dropped).
    pub fn write(&self, off: u64, data: &[u8]) -> std::io::Result<()> {
        self.runs(off, data.len(), |i, at, r| {
            if self.files[i].pad {
                return Ok(());
            }
            self.handle(i, true)?.write_all_at(&data[r], at)
        })
    }

    /// Starts writing `[off, off+len)` back to disk without waiting (`sync_file_range`), so that
    /// the flush at completion has little left to wait for. Advisory: errors are ignored.
    pub fn start_writeback(&self, off: u64, len: usize) {
        let _ = self.runs(off, len, |i, at, r| {
            if let Some(h) = self.files[i].handle.get() {
                // SAFETY: a valid fd and a range; the call only schedules writeback.
                unsafe {
                    libc::sync_file_range(
                        std::os::unix::io::AsRawFd::as_raw_fd(h),
                        at as libc::off64_t,
                        r.len() as libc::off64_t,
                        libc::SYNC_FILE_RANGE_WRITE,
                    );
                }
            }
            Ok(())
        });
    }

    /// Reads `buf.len()` bytes at `off`; pads and gaps between v2 files read as zeros.
    pub fn read(&self, off: u64, buf: &mut [u8]) -> std::io::Result<()> {
        buf.fill(0);
        self.runs(off, buf.len(), |i, at, r| {
            if self.files[i].pad {
                return Ok(());
            }
            self.handle(i, false)?.read_exact_at(&mut buf[r], at)
        })
    }

    /// (size, mtime in ns) of every non-pad file, `None` where a file is missing.
    pub fn file_states(&self) -> Vec<Option<(u64, i128)>> {
        self.files
            .iter()
            .filter(|f| !f.pad)
            .map(|f| {
                std::fs::metadata(&f.path)
                    .ok()
                    .map(|m| (m.len(), mtime_ns(&m)))
            })
            .collect()
    }

    /// Whether any non-pad file exists with data.
    pub fn any_data(&self) -> bool {
        self.file_states().iter().flatten().any(|(len, _)| *len > 0)
    }

    pub fn sync(&self) -> std::io::Result<()> {
        for f in &self.files {
            if let Some(h) = f.handle.get() {
                h.sync_data()?;
            }
        }
        Ok(())
    }

    /// Paths of the non-pad files (for messages and tests).
    pub fn paths(&self) -> Vec<PathBuf> {
        self.files
            .iter()
            .filter(|f| !f.pad)
            .map(|f| f.path.clone())
            .collect()
    }
}

/// What a piece must hash to.
#[derive(Debug, Clone)]
pub enum Expected {
    /// v1 SHA-1 of the whole piece (pads included).
    Sha1([u8; 20]),
    /// v2: root of the piece's 16 KiB leaves (padded as BEP 52 says), over `data_len` real bytes.
    Merkle {
        root: Hash32,
        data_len: u64,
        file_longer_than_piece: bool,
    },
}

/// The expected hash of every piece (v1 preferred when both exist).
pub fn expected_hashes(meta: &Metainfo) -> Vec<Expected> {
    if meta.is_v1() {
        return meta.pieces.iter().map(|h| Expected::Sha1(*h)).collect();
    }
    let pl = meta.piece_length;
    let mut out = Vec::new();
    for f in meta.files.iter().filter(|f| !f.pad && f.length > 0) {
        let n = f.length.div_ceil(pl);
        let root = f.pieces_root.unwrap_or([0; 32]);
        // Pieces of different files are aligned; the space between files is never a piece.
        while (out.len() as u64) < f.offset / pl {
            out.push(Expected::Merkle {
                root: [0; 32],
                data_len: 0,
                file_longer_than_piece: false,
            });
        }
        for k in 0..n {
            let data_len = (f.length - k * pl).min(pl);
            let longer = f.length > pl;
            let root = if longer {
                meta.piece_layers
                    .get(&root)
                    .map(|l| l[k as usize])
                    .unwrap_or([0; 32])
            } else {
                root
            };
            out.push(Expected::Merkle {
                root,
                data_len,
                file_longer_than_piece: longer,
            });
        }
    }
    out
}

/// Hashes one piece from blocks arriving in any order: in-order blocks are hashed at once,
/// out-of-order ones wait (in memory) until the gap before them is filled.
#[derive(Debug)]
pub struct PieceHasher {
    expected: Expected,
    sha1: Sha1,
    leaves: Vec<Hash32>,
    next: u32,
    waiting: BTreeMap<u32, bytes::Bytes>,
    piece_length: u64,
}

impl PieceHasher {
    pub fn new(expected: Expected, piece_length: u64) -> Self {
        PieceHasher {
            expected,
            sha1: Sha1::new(),
            leaves: Vec::new(),
            next: 0,
            waiting: BTreeMap::new(),
            piece_length,
        }
    }

    /// Feeds the block starting at `begin` (a multiple of 16 KiB).
    pub fn add(&mut self, begin: u32, data: bytes::Bytes) {
        if begin == self.next {
            self.consume(&data);
            while let Some(d) = self.waiting.remove(&self.next) {
                self.consume(&d);
            }
        } else if begin > self.next {
            self.waiting.insert(begin, data);
        }
    }

    fn consume(&mut self, d: &[u8]) {
        match &self.expected {
            Expected::Sha1(_) => self.sha1.update(d),
            Expected::Merkle { data_len, .. } => {
                let start = self.next as u64;
                let real = data_len.saturating_sub(start).min(d.len() as u64) as usize;
                for leaf in d[..real].chunks(BLOCK as usize) {
                    self.leaves.push(merkle::sha256(leaf));
                }
            }
        }
        self.next += d.len() as u32;
    }

    /// Bytes waiting out of order (memory held for this piece).
    pub fn waiting_bytes(&self) -> usize {
        self.waiting.values().map(|b| b.len()).sum()
    }

    /// True if the piece hashed to what it must.
    pub fn finish(self) -> bool {
        match self.expected {
            Expected::Sha1(want) => {
                let got: [u8; 20] = self.sha1.finalize().into();
                got == want
            }
            Expected::Merkle {
                root,
                file_longer_than_piece,
                ..
            } => {
                merkle::piece_subtree(&self.leaves, self.piece_length, file_longer_than_piece)
                    == root
            }
        }
    }
}

/// Verifies a piece by reading it (recheck on resume).
pub fn check_piece(
    storage: &Storage,
    expected: &Expected,
    piece: u32,
    piece_length: u64,
    buf: &mut Vec<u8>,
) -> std::io::Result<bool> {
    let off = piece as u64 * piece_length;
    let len = (storage.total() - off).min(piece_length) as usize;
    buf.resize(len, 0);
    storage.read(off, buf)?;
    let mut h = PieceHasher::new(expected.clone(), piece_length);
    h.add(0, bytes::Bytes::copy_from_slice(buf));
    Ok(h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::create::{create_torrent, CreateOptions, TorrentKind};
    use std::sync::atomic::AtomicU64;

    #[test]
    fn write_read_and_verify_every_kind() {
        for kind in [TorrentKind::V1, TorrentKind::V2, TorrentKind::Hybrid] {
            let src = tempfile::tempdir().unwrap();
            let root = src.path().join("t");
            std::fs::create_dir_all(root.join("d")).unwrap();
            let a: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
            let b: Vec<u8> = (0..50_001u32).map(|i| (i * 13) as u8).collect();
            std::fs::write(root.join("a"), &a).unwrap();
            std::fs::write(root.join("d/b"), &b).unwrap();
            let opts = CreateOptions {
                kind,
                piece_length: Some(32768),
                ..Default::default()
            };
            let m = create_torrent(&root, &opts, &AtomicU64::new(0)).unwrap();
            let exp = expected_hashes(&m);
            let orig = Storage::new(&m, src.path(), Prealloc::Sparse);
            let dst = tempfile::tempdir().unwrap();
            let out = Storage::new(&m, dst.path(), Prealloc::Sparse);
            let mut buf = Vec::new();
            for p in 0..exp.len() as u32 {
                assert!(check_piece(&orig, &exp[p as usize], p, m.piece_length, &mut buf).unwrap());
                // Copy the piece block by block, out of order, verifying as blocks arrive.
                let off = p as u64 * m.piece_length;
                let mut h = PieceHasher::new(exp[p as usize].clone(), m.piece_length);
                let mut blocks: Vec<u32> = (0..buf.len().div_ceil(16384) as u32).collect();
                blocks.reverse();
                for bi in blocks {
                    let s = bi as usize * 16384;
                    let e = (s + 16384).min(buf.len());
                    out.write(off + s as u64, &buf[s..e]).unwrap();
                    h.add(s as u32, bytes::Bytes::copy_from_slice(&buf[s..e]));
                }
                assert!(h.finish(), "{kind:?} piece {p}");
            }
            assert_eq!(std::fs::read(dst.path().join("t/a")).unwrap(), a);
            assert_eq!(std::fs::read(dst.path().join("t/d/b")).unwrap(), b);
            assert!(
                !dst.path().join("t/.pad").exists(),
                "pad files must not be written"
            );
            // A corrupted block fails verification.
            let mut h = PieceHasher::new(exp[0].clone(), m.piece_length);
            let mut bad = buf.clone();
            bad[0] ^= 1;
            h.add(0, bytes::Bytes::from(bad));
            assert!(!h.finish());
        }
    }
}
