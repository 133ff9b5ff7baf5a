//! Chunking and hashing whole files: a streaming single-thread hasher and a parallel one.
//!
//! All of them stream with bounded memory. The parallel paths find gear-hash hits over blocks on all
//! cores (a hit depends only on the 64 bytes before it), resolve the cut rule in file order (hits
//! are ~1 per 64 KiB, so that part is tiny), and hash the chunks on all cores. For files,
//! [`hash_file_parallel`] lets each worker read, scan and hash its own blocks; for other readers,
//! [`hash_reader_parallel`] reads on one thread.

use crate::chunker::{find_hits, resolve_cuts, Chunker, MAX_CHUNK, WINDOW};
use crate::hash::{chunk_hash, file_hash, merkle_root, MerkleEntry, XetHash};
use rayon::prelude::*;
use std::io::Read;
use std::sync::mpsc;

/// One chunk of a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkInfo {
    pub offset: u64,
    pub len: u32,
    pub hash: XetHash,
}

impl ChunkInfo {
    pub fn node(&self) -> MerkleEntry {
        MerkleEntry {
            hash: self.hash,
            size: self.len as u64,
        }
    }
}

/// The result of hashing one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileDigest {
    pub size: u64,
    pub chunks: Vec<ChunkInfo>,
    pub merkle_root: XetHash,
    pub file_hash: XetHash,
}

impl FileDigest {
    fn from_chunks(size: u64, chunks: Vec<ChunkInfo>) -> FileDigest {
        let nodes: Vec<MerkleEntry> = chunks.iter().map(ChunkInfo::node).collect();
        let merkle_root = merkle_root(&nodes);
        FileDigest {
            size,
            file_hash: file_hash(&merkle_root, chunks.len()),
            merkle_root,
            chunks,
        }
    }
}

/// Streaming chunk + hash. Feed buffers of any size; `sink` sees each chunk's bytes once.
#[derive(Default)]
pub struct FileHasher {
    chunker: Chunker,
    pending: Vec<u8>,
    chunks: Vec<ChunkInfo>,
    cuts: Vec<u64>,
}

impl FileHasher {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn update(&mut self, buf: &[u8]) {
        self.update_with(buf, &mut |_, _| {});
    }

    pub fn update_with(&mut self, buf: &[u8], sink: &mut dyn FnMut(&ChunkInfo, &[u8])) {
        let base = self.chunker.position();
        self.cuts.clear();
        self.chunker.feed(buf, &mut self.cuts);
        let mut at = 0usize;
        for i in 0..self.cuts.len() {
            let end = (self.cuts[i] - base) as usize;
            if self.pending.is_empty() {
                self.emit(&buf[at..end], sink);
            } else {
                self.pending.extend_from_slice(&buf[at..end]);
                let data = std::mem::take(&mut self.pending);
                self.emit(&data, sink);
                self.pending = data;
                self.pending.clear();
            }
            at = end;
        }
        self.pending.extend_from_slice(&buf[at..]);
    }

    fn emit(&mut self, data: &[u8], sink: &mut dyn FnMut(&ChunkInfo, &[u8])) {
        let offset = self
            .chunks
            .last()
            .map(|c| c.offset + c.len as u64)
            .unwrap_or(0);
        let c = ChunkInfo {
            offset,
            len: data.len() as u32,
            hash: chunk_hash(data),
        };
        sink(&c, data);
        self.chunks.push(c);
    }

    pub fn finish(self) -> FileDigest {
        self.finish_with(&mut |_, _| {})
    }

    pub fn finish_with(mut self, sink: &mut dyn FnMut(&ChunkInfo, &[u8])) -> FileDigest {
        let mut cuts = Vec::new();
        self.chunker.finish(&mut cuts);
        if !cuts.is_empty() {
            let data = std::mem::take(&mut self.pending);
            self.emit(&data, sink);
        }
        FileDigest::from_chunks(self.chunker.position(), self.chunks)
    }
}

/// Hashes a byte slice (tests, small inputs).
pub fn hash_bytes(data: &[u8]) -> FileDigest {
    let mut h = FileHasher::new();
    h.update(data);
    h.finish()
}

/// Single-thread streaming hash of a reader.
pub fn hash_reader(r: impl Read) -> std::io::Result<FileDigest> {
    hash_reader_with(r, &mut |_, _| {})
}

/// As [`hash_reader`], handing every chunk's bytes to `sink` in file order.
pub fn hash_reader_with(
    mut r: impl Read,
    sink: &mut dyn FnMut(&ChunkInfo, &[u8]),
) -> std::io::Result<FileDigest> {
    let mut h = FileHasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = read_full(&mut r, &mut buf)?;
        if n == 0 {
            break;
        }
        h.update_with(&buf[..n], sink);
    }
    Ok(h.finish_with(sink))
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Bytes read per block by the parallel hasher.
pub const PAR_BLOCK: usize = 8 << 20;

/// Parallel hash of any reader on rayon's pool: a reader thread fills 8 MiB blocks. Peak memory:
/// three blocks plus chunk hashes. Files go faster through [`hash_file_parallel`].
pub fn hash_reader_parallel<R: Read + Send>(mut r: R) -> std::io::Result<FileDigest> {
    // Each buffer keeps MAX_CHUNK bytes of room in front for the previous block's unfinished chunk.
    let (full_tx, full_rx) = mpsc::sync_channel::<std::io::Result<(Vec<u8>, usize)>>(1);
    let (free_tx, free_rx) = mpsc::channel::<Vec<u8>>();
    for _ in 0..3 {
        free_tx.send(vec![0u8; MAX_CHUNK + PAR_BLOCK]).unwrap();
    }
    std::thread::scope(|s| {
        s.spawn(move || {
            while let Ok(mut buf) = free_rx.recv() {
                let res = read_full(&mut r, &mut buf[MAX_CHUNK..]);
                let done = !matches!(res, Ok(n) if n > 0);
                if full_tx.send(res.map(|n| (buf, n))).is_err() || done {
                    break;
                }
            }
        });
        let mut carry: Vec<u8> = Vec::with_capacity(MAX_CHUNK);
        let mut chunks: Vec<ChunkInfo> = Vec::new();
        let mut offset = 0u64;
        let mut hits = Vec::new();
        let mut cuts = Vec::new();
        while let Ok(r) = full_rx.recv() {
            let (mut buf, n) = r?;
            let eof = n == 0;
            let start = MAX_CHUNK - carry.len();
            buf[start..MAX_CHUNK].copy_from_slice(&carry);
            let region = &buf[start..MAX_CHUNK + n];
            if region.is_empty() {
                break;
            }
            hits.clear();
            parallel_hits(region, &mut hits);
            cuts.clear();
            resolve_cuts(&hits, region.len(), eof, &mut cuts);
            let mut bounds = Vec::with_capacity(cuts.len());
            let mut prev = 0;
            for &c in &cuts {
                bounds.push((prev, c));
                prev = c;
            }
            let hashes: Vec<XetHash> = bounds
                .par_iter()
                .map(|&(a, b)| chunk_hash(&region[a..b]))
                .collect();
            for (&(a, b), h) in bounds.iter().zip(hashes) {
                chunks.push(ChunkInfo {
                    offset: offset + a as u64,
                    len: (b - a) as u32,
                    hash: h,
                });
            }
            offset += prev as u64;
            carry.clear();
            carry.extend_from_slice(&region[prev..]);
            let _ = free_tx.send(buf);
            if eof {
                break;
            }
        }
        drop(free_tx);
        Ok(FileDigest::from_chunks(offset, chunks))
    })
}

/// Bytes per block of the parallel file hasher: a worker's block and its chunks' hashing stay in
/// its core's L2 cache.
pub const FILE_BLOCK: usize = 1 << 20;

/// A chunk sink shared by the file hasher's workers; they call it in file order.
type SharedSink<'a> = std::sync::Mutex<&'a mut (dyn FnMut(&ChunkInfo, &[u8]) + Send)>;

/// Chunk + hash of a file on all of rayon's threads (the `ccbt hash` path for files).
///
/// Workers take 1 MiB blocks in turn and read each with `pread`, so the copy out of the page cache
/// is spread over the cores too. A worker scans its block for gear hits, waits until the block
/// before it has placed its cuts (a moment: that happens right after that block's scan), places its
/// own, and hashes the chunks that end in its block while the bytes are still in cache. Peak memory
/// is about 1.2 MiB per thread. Hashes the first `len` bytes as they were when hashing started; a
/// file that shrinks meanwhile is an error.
pub fn hash_file_parallel(f: &std::fs::File) -> std::io::Result<FileDigest> {
    file_parallel(f, None)
}

/// As [`hash_file_parallel`], handing every chunk's bytes to `sink` in file order (publish stores
/// them). A worker hands over its block's chunks when the block before has handed over its own.
pub fn hash_file_parallel_with(
    f: &std::fs::File,
    sink: &mut (dyn FnMut(&ChunkInfo, &[u8]) + Send),
) -> std::io::Result<FileDigest> {
    file_parallel(f, Some(std::sync::Mutex::new(sink)))
}

fn file_parallel(f: &std::fs::File, sink: Option<SharedSink>) -> std::io::Result<FileDigest> {
    let size = f.metadata()?.len();
    let threads = rayon::current_num_threads().max(1);
    if threads == 1 || size < 2 * FILE_BLOCK as u64 {
        return match sink {
            Some(s) => hash_reader_with(f, s.into_inner().unwrap()),
            None => hash_reader(f),
        };
    }
    let blocks = size.div_ceil(FILE_BLOCK as u64);
    let next = std::sync::atomic::AtomicU64::new(0);
    let turn = std::sync::Mutex::new(Turn {
        block: 0,
        open: 0,
        sunk: 0,
        failed: false,
    });
    let turned = std::sync::Condvar::new();
    let results = std::sync::Mutex::new(Vec::with_capacity(blocks as usize));
    let work = || -> std::io::Result<()> {
        // Room in front of the block for the chunk that began in an earlier block.
        const FRONT: usize = MAX_CHUNK;
        let mut buf = vec![0u8; FRONT + FILE_BLOCK];
        let (mut hits, mut rel, mut cuts) = (Vec::new(), Vec::new(), Vec::new());
        loop {
            let b = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if b >= blocks {
                return Ok(());
            }
            let start = b * FILE_BLOCK as u64;
            let len = (size - start).min(FILE_BLOCK as u64) as usize;
            // With the 64 bytes before it, so the block's first positions hash exactly. (Block 0
            // has none; its first positions cannot be cuts: MIN_CHUNK.)
            let history = (start as usize).min(WINDOW);
            read_exact_at(
                f,
                &mut buf[FRONT - history..FRONT + len],
                start - history as u64,
            )?;
            hits.clear();
            find_hits(&buf, FRONT, FRONT + len, &mut hits);
            // Place this block's cuts once the block before has placed its own.
            let (open, lead) = {
                let mut t = turn.lock().unwrap();
                while t.block != b && !t.failed {
                    t = turned.wait(t).unwrap();
                }
                if t.failed {
                    return Ok(());
                }
                let open = t.open;
                let lead = (start - open) as usize; // < MAX_CHUNK: a chunk is never longer
                rel.clear();
                rel.extend(hits.iter().map(|&p| p - FRONT + lead));
                cuts.clear();
                resolve_cuts(&rel, lead + len, b + 1 == blocks, &mut cuts);
                t.open = open + cuts.last().copied().unwrap_or(0) as u64;
                t.block += 1;
                turned.notify_all();
                (open, lead)
            };
            // The bytes of the chunk that began before this block.
            if lead > history && !cuts.is_empty() {
                read_exact_at(f, &mut buf[FRONT - lead..FRONT - history], open)?;
            }
            let region = &buf[FRONT - lead..FRONT + len];
            let mut prev = 0;
            let mut chunks = Vec::with_capacity(cuts.len());
            for &c in &cuts {
                chunks.push(ChunkInfo {
                    offset: open + prev as u64,
                    len: (c - prev) as u32,
                    hash: chunk_hash(&region[prev..c]),
                });
                prev = c;
            }
            if let Some(sink) = &sink {
                // Hand the chunks over in file order, then let the next block's worker go.
                let mut t = turn.lock().unwrap();
                while t.sunk != b && !t.failed {
                    t = turned.wait(t).unwrap();
                }
                if t.failed {
                    return Ok(());
                }
                drop(t);
                let mut sink = sink.lock().unwrap();
                for c in &chunks {
                    let at = (c.offset - open) as usize;
                    sink(c, &region[at..at + c.len as usize]);
                }
                drop(sink);
                turn.lock().unwrap().sunk += 1;
                turned.notify_all();
            }
            results.lock().unwrap().push((b, chunks));
        }
    };
    let outcome: Vec<std::io::Result<()>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let r = work();
                    if r.is_err() {
                        // Release the workers waiting for this one's turn.
                        turn.lock().unwrap().failed = true;
                        turned.notify_all();
                    }
                    r
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    outcome.into_iter().collect::<std::io::Result<()>>()?;
    let mut per_block = results.into_inner().unwrap();
    per_block.sort_unstable_by_key(|(b, _)| *b);
    let chunks: Vec<ChunkInfo> = per_block.into_iter().flat_map(|(_, c)| c).collect();
    Ok(FileDigest::from_chunks(size, chunks))
}

/// Whose turn it is to place cuts, where the chunk open at that block's start began, and how many
/// blocks have handed their chunks to the sink.
struct Turn {
    block: u64,
    open: u64,
    sunk: u64,
    failed: bool,
}

fn read_exact_at(f: &std::fs::File, buf: &mut [u8], at: u64) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    f.read_exact_at(buf, at).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the file became shorter while it was being hashed; hash it again",
            )
        } else {
            e
        }
    })
}

/// Hits over `region` (which begins a chunk), split across rayon's threads.
fn parallel_hits(region: &[u8], out: &mut Vec<usize>) {
    let parts = rayon::current_num_threads().max(1) * 2;
    let step = region.len().div_ceil(parts).max(1 << 16);
    let ranges: Vec<(usize, usize)> = (0..region.len())
        .step_by(step)
        .map(|a| (a, (a + step).min(region.len())))
        .collect();
    let per: Vec<Vec<usize>> = ranges
        .par_iter()
        .map(|&(a, b)| {
            let mut v = Vec::new();
            find_hits(region, a, b, &mut v);
            v
        })
        .collect();
    for v in per {
        out.extend(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunker::chunk_reference;
    use rand::{RngCore, SeedableRng};

    #[test]
    fn random_splits_give_identical_digests() {
        use rand::Rng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for case in 0..25u64 {
            let n = rng.gen_range(0..2_500_000);
            let mut data = vec![0u8; n];
            rand::rngs::StdRng::seed_from_u64(case).fill_bytes(&mut data);
            let want = hash_bytes(&data);
            let mut h = FileHasher::new();
            let mut at = 0;
            while at < n {
                let k = rng.gen_range(1..=(n - at).min(if case % 3 == 0 { 300 } else { 400_000 }));
                h.update(&data[at..at + k]);
                at += k;
            }
            assert_eq!(h.finish(), want, "case {case}");
            // Chunk bytes handed to a sink are exactly the file, in order.
            let mut seen = Vec::new();
            let mut h = FileHasher::new();
            h.update_with(&data, &mut |_, d| seen.extend_from_slice(d));
            h.finish_with(&mut |_, d| seen.extend_from_slice(d));
            assert!(seen == data);
        }
    }

    #[test]
    fn parallel_equals_streaming() {
        for (n, seed) in [
            (0usize, 0u64),
            (1, 1),
            (PAR_BLOCK - 5, 2),
            (3 * PAR_BLOCK + 12345, 3),
        ] {
            let mut data = vec![0u8; n];
            rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut data);
            if seed == 3 {
                data[PAR_BLOCK..PAR_BLOCK + 500_000].fill(0);
            }
            let a = hash_bytes(&data);
            let b = hash_reader_parallel(&data[..]).unwrap();
            assert_eq!(a, b, "n={n}");
            let ends: Vec<usize> = a
                .chunks
                .iter()
                .map(|c| (c.offset + c.len as u64) as usize)
                .collect();
            assert_eq!(ends, chunk_reference(&data));
        }
    }

    #[test]
    fn file_workers_equal_streaming() {
        use std::io::Write;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cases: [(usize, u64); 5] = [
            (2 * FILE_BLOCK, 1),          // exactly two blocks
            (2 * FILE_BLOCK + 1, 2),      // a one-byte last block
            (5 * FILE_BLOCK + 77_777, 3), // long zero runs: max-size chunks across blocks
            (7 * FILE_BLOCK - 3, 4),
            (3 * FILE_BLOCK, 5), // all zeros: max-size cuts only
        ];
        for (n, seed) in cases {
            let mut data = vec![0u8; n];
            if seed != 5 {
                rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut data);
            }
            if seed == 3 {
                data[FILE_BLOCK - 50_000..2 * FILE_BLOCK + 300_000].fill(0);
            }
            let path = dir.path().join(format!("f{seed}"));
            std::fs::File::create(&path)
                .unwrap()
                .write_all(&data)
                .unwrap();
            let f = std::fs::File::open(&path).unwrap();
            let want = hash_bytes(&data);
            let got = pool.install(|| hash_file_parallel(&f)).unwrap();
            assert_eq!(got, want, "n={n}");
            // With a sink: every chunk's bytes, in file order, exactly once.
            let mut seen = Vec::with_capacity(n);
            let mut offsets = Vec::new();
            let got = pool
                .install(|| {
                    hash_file_parallel_with(&f, &mut |c, d| {
                        offsets.push(c.offset);
                        assert_eq!(c.len as usize, d.len());
                        seen.extend_from_slice(d);
                    })
                })
                .unwrap();
            assert_eq!(got, want, "n={n}");
            assert!(seen == data, "n={n}: the sink saw other bytes");
            assert_eq!(
                offsets,
                want.chunks.iter().map(|c| c.offset).collect::<Vec<_>>()
            );
        }
    }
}
