//! Content-defined chunking, bit-compatible with xet-core (docs/formats.md).
//!
//! The gear hash at a position depends only on the last 64 bytes (older bytes are shifted out of the
//! u64), so a position is a *candidate* cut ("hit") independently of where chunks begin, and any cut
//! rule can be applied to the list of hits afterwards. That lets the scan run as several independent
//! lanes (instruction-level parallelism on one core, see [`crate::gear`]; threads over regions on
//! several) and still give exactly the boundaries of the byte-at-a-time definition, whatever way
//! the input was split.

use crate::gear::{scan4, step};

/// The gearhash crate's default table (docs/formats.md fixes it).
pub use gearhash::DEFAULT_TABLE as GEAR;

pub const MIN_CHUNK: usize = 8 * 1024;
pub const TARGET_CHUNK: usize = 64 * 1024;
pub const MAX_CHUNK: usize = 128 * 1024;
pub const MASK: u64 = 0xFFFF_0000_0000_0000;
/// Bytes of history that determine the gear hash.
pub const WINDOW: usize = 64;

/// Appends to `out` every position `p` in `from..to` (indices into `data`) where the gear hash of
/// `data[..=p]` has `h & MASK == 0`. The hash at `p` is exact when `p >= 63` (or when `data` begins
/// a chunk and only positions at least [`MIN_CHUNK`] into it matter). Returns the hash at `to - 1`
/// (exact under the same rule), so a caller can carry on from `to` without rehashing.
pub fn find_hits(data: &[u8], from: usize, to: usize, out: &mut Vec<usize>) -> u64 {
    debug_assert!(from <= to && to <= data.len());
    // Lanes begin 64 bytes early so their first positions are exact; the start of `data` has no
    // such history, so its first positions go through the scalar loop.
    let lanes_from = from.max(WINDOW.min(to));
    let n = to - lanes_from;
    let lane_len = n / 4;
    if lane_len < 4 * WINDOW {
        return scan_scalar(data, from, to, out);
    }
    scan_scalar(data, from, lanes_from, out);
    let start = lanes_from - WINDOW;
    let mut h = [0u64; 4];
    let mut lane_hits: [Vec<usize>; 4] = Default::default();
    scan4(
        data,
        start,
        lane_len,
        lane_len + WINDOW,
        &mut h,
        &mut |k, t| {
            if t >= WINDOW {
                lane_hits[k].push(start + k * lane_len + t);
            }
        },
    );
    for hits in &lane_hits {
        out.extend_from_slice(hits);
    }
    // The remainder after the last lane continues lane 3's hash.
    let mut hh = h[3];
    for (p, &b) in data
        .iter()
        .enumerate()
        .take(to)
        .skip(lanes_from + 4 * lane_len)
    {
        hh = step(hh, b);
        if hh & MASK == 0 {
            out.push(p);
        }
    }
    hh
}

fn scan_scalar(data: &[u8], from: usize, to: usize, out: &mut Vec<usize>) -> u64 {
    let mut h = 0u64;
    for &b in &data[from.saturating_sub(WINDOW)..from] {
        h = step(h, b);
    }
    for (p, &b) in data.iter().enumerate().take(to).skip(from) {
        h = step(h, b);
        if h & MASK == 0 {
            out.push(p);
        }
    }
    h
}

/// Applies the cut rule to sorted hits in a region that begins a chunk at offset 0 and ends at
/// `end`. Returns the chunk end offsets; bytes after the last one form an incomplete chunk, unless
/// `eof`, when they are the file's last chunk.
pub fn resolve_cuts(hits: &[usize], end: usize, eof: bool, cuts: &mut Vec<usize>) {
    let mut start = 0usize;
    for &p in hits {
        let cut = p + 1;
        while cut - start > MAX_CHUNK {
            start += MAX_CHUNK;
            cuts.push(start);
        }
        if cut - start >= MIN_CHUNK {
            cuts.push(cut);
            start = cut;
        }
    }
    while end - start >= MAX_CHUNK {
        start += MAX_CHUNK;
        cuts.push(start);
    }
    if eof && end > start {
        cuts.push(end);
    }
}

/// A streaming chunker: feed buffers of any size, get the same boundaries as for one buffer.
#[derive(Debug, Clone, Default)]
pub struct Chunker {
    /// Gear hash state (exact once 64 bytes of the chunk's scan window are absorbed).
    h: u64,
    /// Bytes in the current, unfinished chunk.
    len: usize,
    /// Absolute offset of the next byte.
    pos: u64,
}

/// Scan block for the lane kernel: small enough that the work done past the first hit stays small.
const BLOCK: usize = 8 * 1024;

impl Chunker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes received so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Bytes of the unfinished chunk.
    pub fn pending(&self) -> usize {
        self.len
    }

    /// Consumes `buf`, appending the absolute end offset of every chunk completed inside it.
    pub fn feed(&mut self, buf: &[u8], cuts: &mut Vec<u64>) {
        let base = self.pos;
        let mut i = 0usize;
        let mut hits = Vec::new();
        while i < buf.len() {
            // The first MIN-64 bytes of a chunk cannot influence its first possible cut.
            let skip_to = MIN_CHUNK - WINDOW;
            if self.len < skip_to {
                let k = (skip_to - self.len).min(buf.len() - i);
                i += k;
                self.len += k;
                self.h = 0;
                continue;
            }
            // Scalar until the chunk may be cut and the lanes have 64 bytes of history in `buf`.
            if self.len < MIN_CHUNK - 1 || i < WINDOW {
                let b = buf[i];
                self.h = step(self.h, b);
                i += 1;
                self.len += 1;
                if self.h & MASK == 0 && self.len >= MIN_CHUNK || self.len == MAX_CHUNK {
                    self.cut(base + i as u64, cuts);
                }
                continue;
            }
            // Lane scan of the next block, bounded by the max-size cut.
            let n = BLOCK.min(buf.len() - i).min(MAX_CHUNK - self.len);
            hits.clear();
            let h = find_hits(buf, i, i + n, &mut hits);
            match hits.first() {
                Some(&p) => {
                    self.len += p + 1 - i;
                    i = p + 1;
                    self.cut(base + i as u64, cuts);
                }
                None => {
                    self.h = h;
                    i += n;
                    self.len += n;
                    if self.len == MAX_CHUNK {
                        self.cut(base + i as u64, cuts);
                    }
                }
            }
        }
        self.pos = base + buf.len() as u64;
    }

    fn cut(&mut self, at: u64, cuts: &mut Vec<u64>) {
        cuts.push(at);
        self.h = 0;
        self.len = 0;
    }

    /// Ends the input: the unfinished chunk, if any, is the last one.
    pub fn finish(&mut self, cuts: &mut Vec<u64>) {
        if self.len > 0 {
            let at = self.pos;
            self.cut(at, cuts);
        }
    }
}

/// The definition, byte at a time: the baseline for tests and benchmarks.
pub fn chunk_reference(data: &[u8]) -> Vec<usize> {
    let mut cuts = Vec::new();
    let mut h = 0u64;
    let mut len = 0usize;
    for (i, &b) in data.iter().enumerate() {
        h = step(h, b);
        len += 1;
        if (h & MASK == 0 && len >= MIN_CHUNK) || len >= MAX_CHUNK {
            cuts.push(i + 1);
            h = 0;
            len = 0;
        }
    }
    if len > 0 {
        cuts.push(data.len());
    }
    cuts
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, RngCore, SeedableRng};

    fn random(n: usize, seed: u64) -> Vec<u8> {
        let mut v = vec![0u8; n];
        rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut v);
        v
    }

    fn stream(data: &[u8], splits: &[usize]) -> Vec<usize> {
        let mut c = Chunker::new();
        let mut cuts = Vec::new();
        let mut at = 0;
        for &s in splits {
            c.feed(&data[at..s], &mut cuts);
            at = s;
        }
        c.feed(&data[at..], &mut cuts);
        c.finish(&mut cuts);
        cuts.into_iter().map(|c| c as usize).collect()
    }

    fn parallel_style(data: &[u8]) -> Vec<usize> {
        let mut hits = Vec::new();
        find_hits(data, 0, data.len(), &mut hits);
        let mut cuts = Vec::new();
        resolve_cuts(&hits, data.len(), true, &mut cuts);
        cuts
    }

    #[test]
    fn streaming_equals_reference_for_random_splits() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(99);
        for case in 0..40u64 {
            let n = rng.gen_range(0..3_000_000);
            let data = if case % 5 == 0 {
                vec![(case % 3) as u8; n] // long runs force max-size cuts
            } else {
                random(n, case)
            };
            let want = chunk_reference(&data);
            let mut splits: Vec<usize> = (0..rng.gen_range(0..20))
                .map(|_| rng.gen_range(0..=n))
                .collect();
            if case % 4 == 1 {
                splits.extend((1..n.min(200)).step_by(7)); // tiny buffers
            }
            splits.sort();
            assert_eq!(stream(&data, &splits), want, "case {case} n {n}");
            assert_eq!(parallel_style(&data), want, "case {case} n {n}");
        }
    }

    #[test]
    fn small_inputs() {
        assert!(chunk_reference(&[]).is_empty());
        assert_eq!(stream(&[7], &[]), vec![1]);
        let d = random(MIN_CHUNK - 1, 1);
        assert_eq!(stream(&d, &[100]), vec![MIN_CHUNK - 1]);
    }
}
