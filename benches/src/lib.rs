//! Benchmarks live in `benches/benches/` (criterion) and `benches/*.sh` (comparisons).
