//! Xet chunking and hashing on 1 GiB: boundary scan, chunk + hash, full file hash; one thread and
//! all threads; against a plain byte-at-a-time implementation of the spec (the baseline).
//!
//! `cargo bench -p ccbt-benches --bench xet` (set CCBT_BENCH_MIB to change the size).

use ccbt_benches::{data, reference_file_hash};
use ccbt_xet::chunker::{chunk_reference, find_hits, resolve_cuts, Chunker};
use ccbt_xet::hash::chunk_hash;
use ccbt_xet::{hash_bytes, hash_file_parallel, hash_reader, hash_reader_parallel};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rayon::prelude::*;
use std::io::Write;

fn size() -> usize {
    std::env::var("CCBT_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024)
        << 20
}

fn bench(c: &mut Criterion) {
    let n = size();
    let d = data(n, 0x1234_5678_9abc_def1);
    let mut g = c.benchmark_group("xet");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(n as u64));

    g.bench_function("scan/reference-1t", |b| {
        b.iter(|| chunk_reference(&d).len())
    });
    g.bench_function("scan/lanes-1t", |b| {
        b.iter(|| {
            let mut c = Chunker::new();
            let mut cuts = Vec::new();
            c.feed(&d, &mut cuts);
            c.finish(&mut cuts);
            cuts.len()
        })
    });
    g.bench_function("scan/all-threads", |b| {
        b.iter(|| {
            let step = 16 << 20;
            let hits: Vec<Vec<usize>> = (0..n)
                .step_by(step)
                .collect::<Vec<_>>()
                .par_iter()
                .map(|&a| {
                    let mut v = Vec::new();
                    find_hits(&d, a, (a + step).min(n), &mut v);
                    v
                })
                .collect();
            let hits: Vec<usize> = hits.concat();
            let mut cuts = Vec::new();
            resolve_cuts(&hits, n, true, &mut cuts);
            cuts.len()
        })
    });
    g.bench_function("blake3-only/1t", |b| {
        b.iter(|| {
            d.chunks(65536)
                .map(|c| chunk_hash(c).0[0])
                .fold(0u8, |a, x| a ^ x)
        })
    });
    g.bench_function("chunk+hash/reference-1t", |b| {
        b.iter(|| reference_file_hash(&d))
    });
    g.bench_function("chunk+hash/1t", |b| b.iter(|| hash_bytes(&d).file_hash));
    g.bench_function("chunk+hash/all-threads", |b| {
        b.iter(|| hash_reader_parallel(&d[..]).unwrap().file_hash)
    });

    // Full file hash from a file on disk (page cache warm after the first pass).
    let dir = tempfile_dir();
    let path = dir.join("bench-1g.bin");
    std::fs::File::create(&path).unwrap().write_all(&d).unwrap();
    drop(d);
    g.bench_function("file/1t", |b| {
        b.iter(|| {
            hash_reader(std::fs::File::open(&path).unwrap())
                .unwrap()
                .file_hash
        })
    });
    g.bench_function("file/all-threads", |b| {
        b.iter(|| {
            hash_file_parallel(&std::fs::File::open(&path).unwrap())
                .unwrap()
                .file_hash
        })
    });
    g.finish();
    let _ = std::fs::remove_file(&path);
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("ccbt-bench-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

criterion_group!(benches, bench);
criterion_main!(benches);
