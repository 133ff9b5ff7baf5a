//! Unit tests of the store (a real RocksDB in a temporary directory).

use super::*;

fn fake_hash(d: &[u8]) -> Hash {
    let mut h = [0u8; 32];
    for (i, b) in d.iter().enumerate() {
        h[i % 32] ^= b.wrapping_add(i as u8);
    }
    h[31] = d.len() as u8;
    h
}

#[test]
fn chunks_dedupe_and_count() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let mut b = ChunkBatch::default();
    let a = b"hello world".to_vec();
    assert!(s.stage_chunk(&mut b, &fake_hash(&a), &a).unwrap());
    assert!(!s.stage_chunk(&mut b, &fake_hash(&a), &a).unwrap());
    s.write_chunks(b).unwrap();
    let mut b = ChunkBatch::default();
    assert!(!s.stage_chunk(&mut b, &fake_hash(&a), &a).unwrap());
    assert_eq!(s.get_chunk(&fake_hash(&a)).unwrap().unwrap(), a);
    // Counted (and indexed on disk) only once a version commits.
    assert_eq!(s.stats().unwrap().chunk_count, 0);
    let mut v = VersionBatch::default();
    v.node([7; 32], b"node".to_vec());
    v.head([1; 20], 1, b"head1".to_vec());
    v.share([1; 20], b"rec".to_vec());
    s.commit_version(v).unwrap();
    let st = s.stats().unwrap();
    assert_eq!((st.chunk_count, st.chunk_bytes), (1, 11));
    // A chunk written by a publish that never commits is an orphan after a restart.
    let o = b"orphan bytes".to_vec();
    let mut b = ChunkBatch::default();
    assert!(s.stage_chunk(&mut b, &fake_hash(&o), &o).unwrap());
    s.write_chunks(b).unwrap();
    s.db.flush_cf(s.cf(CF_CHUNKS)).unwrap();
    assert_eq!(s.heads(&[1; 20]).unwrap(), vec![(1, b"head1".to_vec())]);
    drop(s);
    // Reopen: everything committed is there; a second open while held fails clearly.
    let s = Store::open(dir.path()).unwrap();
    assert!(matches!(Store::open(dir.path()), Err(CasError::Locked(_))));
    assert_eq!(s.get_node(&[7; 32]).unwrap().unwrap(), b"node");
    assert!(!s.has_chunk(&fake_hash(&o)).unwrap());
    let rep = s.verify(&fake_hash, &|_| [7; 32], &|_| {}).unwrap();
    assert_eq!(
        rep,
        VerifyReport {
            damage: vec![],
            orphans: 1
        }
    );
    let keep = HashSet::new();
    let r = s.sweep(&keep, &HashSet::new()).unwrap();
    assert_eq!(
        (r.chunks_removed, r.nodes_removed, r.heads_removed),
        (1, 1, 1)
    );
    assert_eq!(s.stats().unwrap(), Stats::default());
    assert!(
        s.get_chunk(&fake_hash(&o)).unwrap().is_none(),
        "orphan not swept"
    );
}

/// The child half of the crash test: writes, then dies without any cleanup.
fn crash_child(dir: &Path) -> ! {
    let s = Store::open(dir).unwrap();
    for i in 0..100u32 {
        let d = format!("committed cached chunk {i}").into_bytes();
        s.put_chunk_cached(&fake_hash(&d), &d).unwrap();
    }
    s.commit_cached().unwrap();
    let mut v = VersionBatch::default();
    v.node([9; 32], b"node of v1".to_vec());
    v.head([2; 20], 1, b"head v1".to_vec());
    v.share([2; 20], b"record v1".to_vec());
    s.commit_version(v).unwrap();
    for i in 0..100u32 {
        let d = format!("uncommitted cached chunk {i}").into_bytes();
        s.put_chunk_cached(&fake_hash(&d), &d).unwrap();
    }
    let mut b = ChunkBatch::default();
    for i in 0..50u32 {
        let d = format!("staged publish chunk {i}").into_bytes();
        s.stage_chunk(&mut b, &fake_hash(&d), &d).unwrap();
    }
    s.write_chunks(b).unwrap();
    // kill -9 as far as the store can tell: no destructor, no flush.
    std::process::abort();
}

/// The crash rules: an indexed chunk always has its bytes, a committed version survives
/// whole, and what was written but not committed is not indexed (gc finds it as orphans).
#[test]
fn a_crash_keeps_commits_and_never_indexes_missing_bytes() {
    if let Ok(d) = std::env::var("CCBT_CAS_CRASH_CHILD") {
        crash_child(Path::new(&d));
    }
    let dir = tempfile::tempdir().unwrap();
    let st = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "tests::a_crash_keeps_commits_and_never_indexes_missing_bytes",
            "--test-threads=1",
        ])
        .env("CCBT_CAS_CRASH_CHILD", dir.path())
        .output()
        .unwrap();
    assert!(!st.status.success(), "the child must die mid-write");
    let s = Store::open(dir.path()).expect("the store opens after a crash");
    for i in 0..100u32 {
        let d = format!("committed cached chunk {i}").into_bytes();
        assert_eq!(
            s.get_chunk(&fake_hash(&d)).unwrap().as_deref(),
            Some(&d[..])
        );
        let u = format!("uncommitted cached chunk {i}").into_bytes();
        assert!(
            !s.has_chunk(&fake_hash(&u)).unwrap(),
            "indexed without a commit"
        );
    }
    for i in 0..50u32 {
        let d = format!("staged publish chunk {i}").into_bytes();
        assert!(!s.has_chunk(&fake_hash(&d)).unwrap());
    }
    assert_eq!(
        s.get_head(&[2; 20], 1).unwrap().as_deref(),
        Some(&b"head v1"[..])
    );
    assert_eq!(
        s.get_node(&[9; 32]).unwrap().as_deref(),
        Some(&b"node of v1"[..])
    );
    assert_eq!(s.stats().unwrap().chunk_count, 100);
    let rep = s.verify(&fake_hash, &|_| [9; 32], &|_| {}).unwrap();
    assert!(rep.damage.is_empty(), "{rep:?}");
}
