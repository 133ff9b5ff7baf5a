//! Chunking and hashing whole files: a streaming single-thread hasher and a parallel one.
//!
//! Both stream with bounded memory. The parallel path reads fixed blocks on a reader thread, finds
//! gear-hash hits over slices of each block on all cores, resolves the cut rule serially (hits are
//! ~1 per 64 KiB, so that part is tiny), then hashes the chunks on all cores.

use crate::chunker::{find_hits, resolve_cuts, Chunker, MAX_CHUNK};
use crate::hash::{chunk_hash, file_hash, merkle_root, Node, XetHash};
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
    pub fn node(&self) -> Node {
        Node {
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
        let nodes: Vec<Node> = chunks.iter().map(ChunkInfo::node).collect();
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
pub fn hash_reader(mut r: impl Read) -> std::io::Result<FileDigest> {
    let mut h = FileHasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = read_full(&mut r, &mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finish())
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

/// Parallel hash of a reader on rayon's pool. Peak memory: three blocks plus chunk hashes.
pub fn hash_reader_parallel<R: Read + Send>(r: R) -> std::io::Result<FileDigest> {
    hash_reader_parallel_with(r, &mut |_, _| {})
}

/// As [`hash_reader_parallel`], handing every chunk's bytes to `sink` in file order.
pub fn hash_reader_parallel_with<R: Read + Send>(
    mut r: R,
    sink: &mut (dyn FnMut(&ChunkInfo, &[u8]) + Send),
) -> std::io::Result<FileDigest> {
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
                let c = ChunkInfo {
                    offset: offset + a as u64,
                    len: (b - a) as u32,
                    hash: h,
                };
                sink(&c, &region[a..b]);
                chunks.push(c);
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
}
