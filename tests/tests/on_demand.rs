//! Files on demand on a follower's real mount: `ccbt pin` keeps a file readable with the peer
//! gone, `ccbt evict` drops it (a read fetches it again), `user.ccbt.local` says which, `ccbt
//! status` counts it, and `[fs] cache_limit_mib` bounds the store while other files are read.

use ccbt_tests::*;
use serde_json::Value;
use std::ffi::CString;
use std::path::Path;
use std::time::Duration;

const MIB: u64 = 1 << 20;

/// `user.ccbt.local` of a file on the mount.
fn local_attr(p: &Path) -> String {
    let path = CString::new(s(p)).unwrap();
    let name = CString::new("user.ccbt.local").unwrap();
    let mut buf = [0u8; 64];
    // SAFETY: both strings are NUL-terminated; the buffer's length is passed.
    let n = unsafe {
        libc::getxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    assert!(
        n >= 0,
        "getxattr {}: {}",
        p.display(),
        std::io::Error::last_os_error()
    );
    String::from_utf8(buf[..n as usize].to_vec()).unwrap()
}

fn status(data: &Path) -> Value {
    let out = ccbt_ok(&["--json", "--data-dir", s(data), "status"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    v["shares"][0].clone()
}

fn residency(data: &Path, key: &str) -> u64 {
    status(data)["residency"][key].as_u64().unwrap_or(0)
}

#[test]
fn pin_survives_the_peer_evict_refetches_and_the_cache_limit_holds() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    make_tree(
        &src,
        &[
            ("pinned.bin", 256 << 20),
            ("o/1.bin", 64 << 20),
            ("o/2.bin", 64 << 20),
            ("o/3.bin", 64 << 20),
            ("o/4.bin", 64 << 20),
        ],
    );
    let a = t.path().join("A");
    let id = publish(&a, &src);
    let alisten = format!("127.0.0.1:{}", free_port());
    let seed_args = ["--data-dir", s(&a), "seed", "--listen", &alisten];
    let mut seed = Some(spawn_ccbt(&seed_args, &t.path().join("A.log")));
    wait_listening(&alisten, 20);

    // B follows through a mount with a 64 MiB cache limit (and no passthrough copies, which
    // `[fs] file_cache_mib` governs apart).
    let b = t.path().join("B");
    let m = t.path().join("m");
    std::fs::create_dir_all(&m).unwrap();
    let blisten = format!("127.0.0.1:{}", free_port());
    let child = spawn_ccbt_env(
        &[
            "--data-dir",
            s(&b),
            "mount",
            &id,
            s(&m),
            "--listen",
            &blisten,
            "--peer",
            &alisten,
        ],
        &t.path().join("B.log"),
        &[("CCBT_CACHE_LIMIT_MIB", "64"), ("CCBT_FILE_CACHE_MIB", "0")],
    );
    let mut g = MountGuard {
        child: Some(child),
        dir: m.clone(),
    };
    wait_until(30.0, "the mount", || {
        is_mounted(&m) && m.join("pinned.bin").exists()
    });
    assert_eq!(local_attr(&m.join("pinned.bin")), "none");

    // Pin: fetched in the background, shown in status and in the attribute.
    let out = ccbt_ok(&["--data-dir", s(&b), "pin", &id, "pinned.bin"]);
    assert!(out.contains("pinned 1 file(s)"), "{out}");
    wait_until(60.0, "the pinned file to be local", || {
        residency(&b, "pinned_bytes") == 256 * MIB && local_attr(&m.join("pinned.bin")) == "full"
    });
    let text = ccbt_ok(&["--data-dir", s(&b), "status"]);
    assert!(text.contains("pinned 256.00 MiB"), "{text}");
    assert_eq!(local_attr(&m.join("o/1.bin")), "none");

    // The peer goes away: the pinned file still reads, exactly.
    drop(seed.take());
    drop_caches();
    assert!(same_file(&m.join("pinned.bin"), &src.join("pinned.bin")));
    // Evicting a pinned file keeps it; unpinned, it goes, and a read fetches it again.
    let out = ccbt_ok(&["--data-dir", s(&b), "evict", &id, "pinned.bin"]);
    assert!(out.contains("1 pinned file(s) kept"), "{out}");
    ccbt_ok(&["--data-dir", s(&b), "unpin", &id, "pinned.bin"]);
    let out = ccbt_ok(&["--data-dir", s(&b), "evict", &id, "pinned.bin"]);
    assert!(out.contains("evicted 1 file(s)"), "{out}");
    assert_eq!(local_attr(&m.join("pinned.bin")), "none");
    assert_eq!(residency(&b, "local_bytes"), 0);
    seed = Some(spawn_ccbt(&seed_args, &t.path().join("A2.log")));
    wait_listening(&alisten, 20);
    wait_until(30.0, "B to reconnect to A", || {
        status(&b)["peers"].as_u64() == Some(1)
    });
    let before = status(&b)["fetched_bytes"].as_u64().unwrap();
    drop_caches();

    // Reading 512 MiB (the evicted file again, then four others) under the 64 MiB limit: the
    // store stays under the limit plus one check batch (4 MiB) and the read-ahead in flight.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (b, stop) = (b.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut peak = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(residency(&b, "local_bytes"));
                std::thread::sleep(Duration::from_millis(100));
            }
            peak
        })
    };
    for f in ["pinned.bin", "o/1.bin", "o/2.bin", "o/3.bin", "o/4.bin"] {
        assert!(same_file(&m.join(f), &src.join(f)), "{f} differs");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak = sampler.join().unwrap().max(residency(&b, "local_bytes"));
    let fetched = status(&b)["fetched_bytes"].as_u64().unwrap() - before;
    assert!(
        fetched >= 512 * MIB,
        "the evicted file was fetched again: {fetched}"
    );
    eprintln!(
        "cache limit 64 MiB: local bytes peaked at {:.1} MiB",
        peak as f64 / MIB as f64
    );
    assert!(peak <= 64 * MIB + 8 * MIB, "local bytes peaked at {peak}");
    unmount(&mut g);
    drop(seed);
}

/// Drops the kernel's page cache, so reads reach the mount again.
fn drop_caches() {
    let _ = std::process::Command::new("sync").status();
    std::fs::write("/proc/sys/vm/drop_caches", "3").expect("drop caches (root)");
}
