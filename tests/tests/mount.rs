//! Real FUSE mounts of shares: lazy reads on a follower, the owner writing through its mount, POSIX
//! cases, a crash with dirty data, stale mount points.

use ccbt_tests::*;
use serde_json::Value;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn status(data: &Path) -> Value {
    ccbt_json(&["--data-dir", s(data), "status"])
}

fn fetched(data: &Path) -> u64 {
    status(data)["shares"][0]["fetched_bytes"]
        .as_u64()
        .unwrap_or(0)
}

#[test]
fn follower_mount_reads_lazily_and_exactly() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    make_tree(
        &src,
        &[
            ("big.bin", 256 << 20),
            ("docs/a.txt", 1000),
            ("docs/deeper/b.bin", 3 << 20),
            ("c.bin", 70_000),
        ],
    );
    std::fs::write(src.join("empty"), b"").unwrap();
    let (id, alisten, _a) = publish_and_seed(t.path(), &src);
    let mb = t.path().join("mB");
    let bdata = t.path().join("B");
    let (_b, _) = mount(
        &bdata,
        &id,
        &mb,
        &["--peer", &alisten],
        &t.path().join("B.log"),
    );
    // Metadata without fetching file data.
    let names: Vec<String> = std::fs::read_dir(&mb)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        names.contains(&"big.bin".to_string()) && names.contains(&"docs".to_string()),
        "{names:?}"
    );
    assert_eq!(
        std::fs::metadata(mb.join("big.bin")).unwrap().len(),
        256 << 20
    );
    // One 1 MiB range of the 256 MiB file.
    let before = fetched(&bdata);
    let mut buf = vec![0u8; 1 << 20];
    std::fs::File::open(mb.join("big.bin"))
        .unwrap()
        .read_exact_at(&mut buf, 100 << 20)
        .unwrap();
    let mut want = vec![0u8; 1 << 20];
    std::fs::File::open(src.join("big.bin"))
        .unwrap()
        .read_exact_at(&mut want, 100 << 20)
        .unwrap();
    assert!(buf == want, "the range read through the mount differs");
    std::thread::sleep(Duration::from_millis(300)); // let read-ahead settle before counting
    let moved = fetched(&bdata) - before;
    eprintln!("reading 1 MiB of a 256 MiB file fetched {moved} bytes");
    assert!(moved < 2 << 20, "fetched {moved} bytes for a 1 MiB read");
    // Every file, checked with sha256sum -c through the mount.
    let sums = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cd {} && find . -type f -print0 | xargs -0 sha256sum",
            s(&src)
        ))
        .output()
        .unwrap();
    std::fs::write(t.path().join("SUMS"), &sums.stdout).unwrap();
    let o = Command::new("sha256sum")
        .args(["-c", s(&t.path().join("SUMS"))])
        .current_dir(&mb)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    // Writing on a follower's mount: EROFS.
    let e = std::fs::write(mb.join("new.txt"), b"x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc_erofs()), "{e}");
}

fn libc_erofs() -> i32 {
    30
}

#[test]
fn owner_writes_show_up_on_the_follower() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    make_tree(
        &src,
        &[
            ("big.bin", 32 << 20),
            ("keep.txt", 100),
            ("old/name.txt", 50),
            ("gone.txt", 10),
        ],
    );
    let adata = t.path().join("A");
    let id = publish(&adata, &src);
    let ma = t.path().join("mA");
    let (_a, alisten) = mount(&adata, &id, &ma, &[], &t.path().join("A.log"));
    let mb = t.path().join("mB");
    let (_b, _) = mount(
        &t.path().join("B"),
        &id,
        &mb,
        &["--peer", &alisten],
        &t.path().join("B.log"),
    );
    // A tarball of many small files, extracted through the owner's mount.
    let tree = t.path().join("tarsrc");
    for i in 0..300 {
        std::fs::create_dir_all(tree.join(format!("d{}", i % 7))).unwrap();
        std::fs::write(
            tree.join(format!("d{}/f{i}.txt", i % 7)),
            format!("file {i}\n").repeat(i % 13 + 1),
        )
        .unwrap();
    }
    let tarball = t.path().join("t.tar");
    assert!(Command::new("tar")
        .args(["-cf", s(&tarball), "-C", s(&tree), "."])
        .status()
        .unwrap()
        .success());
    assert!(Command::new("tar")
        .args(["-xf", s(&tarball), "-C", s(&ma.join("old"))])
        .status()
        .unwrap()
        .success());
    // dd into the middle of the big file, mv, rm, ln -s.
    assert!(Command::new("dd")
        .args([
            "if=/dev/urandom",
            &format!("of={}", s(&ma.join("big.bin"))),
            "bs=4096",
            "count=4",
            "seek=4000",
            "conv=notrunc"
        ])
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
        .success());
    std::fs::rename(ma.join("old"), ma.join("new")).unwrap();
    std::fs::remove_file(ma.join("gone.txt")).unwrap();
    std::os::unix::fs::symlink("new/name.txt", ma.join("link")).unwrap();
    std::fs::write(ma.join("marker"), b"last change").unwrap();
    let took = wait_until(10.0, "B's mount to show the marker", || {
        std::fs::read(mb.join("marker"))
            .map(|b| b == b"last change")
            .unwrap_or(false)
    });
    eprintln!(
        "B's mount showed the new version {:.3}s after the last write",
        took.as_secs_f64()
    );
    assert!(took < Duration::from_secs(2), "took {took:?}");
    let o = Command::new("diff")
        .args(["-r", "--no-dereference", s(&ma), s(&mb)])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "mounts differ: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert_eq!(
        std::fs::read_link(mb.join("link")).unwrap(),
        Path::new("new/name.txt")
    );
    assert!(!mb.join("gone.txt").exists() && !mb.join("old").exists());
    assert_eq!(std::fs::read_dir(mb.join("new/d3")).unwrap().count(), 43);
    // The 16 KiB dd into the 32 MiB file was re-chunked around the edit, not read whole.
    let alog = std::fs::read_to_string(t.path().join("A.log")).unwrap();
    let line = alog
        .lines()
        .find(|l| l.contains("big.bin: re-chunked"))
        .unwrap_or_else(|| panic!("no incremental re-chunk of big.bin in A's log:\n{alog}"));
    let read: u64 = line
        .split("re-chunked ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(read < 1 << 20, "{line}");
}

#[test]
fn posix_cases_on_the_owner_mount() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    make_tree(&src, &[("a.bin", 1 << 20), ("b.txt", 64)]);
    let adata = t.path().join("A");
    let id = publish(&adata, &src);
    let m = t.path().join("m");
    let (mut guard, _) = mount(&adata, &id, &m, &[], &t.path().join("A.log"));
    use std::io::{Read, Seek, SeekFrom, Write};
    // O_APPEND.
    {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(m.join("b.txt"))
            .unwrap();
        f.write_all(b"one").unwrap();
        f.write_all(b"two").unwrap();
    }
    let b = std::fs::read(m.join("b.txt")).unwrap();
    assert_eq!(b.len(), 70);
    assert!(b.ends_with(b"onetwo"));
    // Truncate up and down.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(m.join("a.bin"))
        .unwrap();
    f.set_len(3 << 20).unwrap();
    assert_eq!(std::fs::metadata(m.join("a.bin")).unwrap().len(), 3 << 20);
    let mut tail = vec![1u8; 4096];
    std::fs::File::open(m.join("a.bin"))
        .unwrap()
        .read_exact_at(&mut tail, (3 << 20) - 4096)
        .unwrap();
    assert!(tail.iter().all(|&x| x == 0), "truncate up must read zeros");
    f.set_len(1000).unwrap();
    drop(f);
    let a = std::fs::read(m.join("a.bin")).unwrap();
    assert_eq!(a, std::fs::read(src.join("a.bin")).unwrap()[..1000]);
    // Sparse write into a new file.
    let f = std::fs::File::create(m.join("sparse")).unwrap();
    f.write_all_at(b"end", 10 << 20).unwrap();
    drop(f);
    let sp = std::fs::read(m.join("sparse")).unwrap();
    assert_eq!(sp.len(), (10 << 20) + 3);
    assert!(sp[..10 << 20].iter().all(|&x| x == 0) && sp.ends_with(b"end"));
    // Rename over an open file: the open handle keeps the old content.
    std::fs::write(m.join("target"), b"old target").unwrap();
    std::fs::write(m.join("replacement"), b"new content").unwrap();
    let mut open_old = std::fs::File::open(m.join("target")).unwrap();
    std::fs::rename(m.join("replacement"), m.join("target")).unwrap();
    let mut s1 = String::new();
    open_old.read_to_string(&mut s1).unwrap();
    assert_eq!(s1, "old target");
    assert_eq!(std::fs::read(m.join("target")).unwrap(), b"new content");
    // Unlink of an open file: still readable through the handle.
    std::fs::write(m.join("doomed"), b"still here").unwrap();
    let mut h = std::fs::File::open(m.join("doomed")).unwrap();
    std::fs::remove_file(m.join("doomed")).unwrap();
    assert!(!m.join("doomed").exists());
    let mut s2 = String::new();
    h.seek(SeekFrom::Start(0)).unwrap();
    h.read_to_string(&mut s2).unwrap();
    assert_eq!(s2, "still here");
    // mmap read.
    let o = Command::new("/usr/bin/python3")
        .args(["-c", &format!("import mmap; f=open('{}','rb'); m=mmap.mmap(f.fileno(),0,access=mmap.ACCESS_READ); print(m[-3:].decode())", s(&m.join("sparse")))])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "end",
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // chmod +x, mkdir/rmdir, utimens.
    assert!(Command::new("chmod")
        .args(["+x", s(&m.join("b.txt"))])
        .status()
        .unwrap()
        .success());
    assert!(
        std::fs::metadata(m.join("b.txt"))
            .unwrap()
            .permissions()
            .mode()
            & 0o111
            != 0
    );
    std::fs::create_dir(m.join("dir")).unwrap();
    std::fs::create_dir(m.join("dir2")).unwrap();
    std::fs::remove_dir(m.join("dir2")).unwrap();
    assert!(Command::new("touch")
        .args(["-d", "2001-02-03 04:05:06Z", s(&m.join("b.txt"))])
        .status()
        .unwrap()
        .success());
    // Everything lands in a published version: unmount (publishes what is pending), export, compare.
    unmount(&mut guard);
    let out = t.path().join("export");
    ccbt_ok(&["--data-dir", s(&adata), "export", &id, s(&out)]);
    let log = std::fs::read_to_string(t.path().join("A.log")).unwrap_or_default();
    assert_eq!(
        std::fs::read(out.join("b.txt")).unwrap(),
        b,
        "mount log:\n{log}"
    );
    assert_eq!(std::fs::read(out.join("a.bin")).unwrap(), a);
    assert_eq!(std::fs::read(out.join("target")).unwrap(), b"new content");
    assert!(out.join("dir").is_dir() && !out.join("dir2").exists() && !out.join("doomed").exists());
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let bm = std::fs::metadata(out.join("b.txt")).unwrap();
    assert!(bm.permissions().mode() & 0o111 != 0);
    assert_eq!(bm.mtime(), 981173106);
    assert_eq!(
        std::fs::metadata(out.join("sparse")).unwrap().len(),
        (10 << 20) + 3
    );
}

#[test]
fn dirty_data_survives_a_crash_and_stale_mounts_are_reported() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    make_tree(&src, &[("a.txt", 100)]);
    let adata = t.path().join("A");
    let id = publish(&adata, &src);
    let m = t.path().join("m");
    let (mut guard, _) = mount(
        &adata,
        &id,
        &m,
        &["--log-level", "info"],
        &t.path().join("A.log"),
    );
    // A long debounce would also do; kill right after the fsync, before any publish can run.
    let o = Command::new("/usr/bin/python3")
        .args(["-c", &format!("import os; fd=os.open('{}', os.O_WRONLY|os.O_CREAT, 0o644); os.write(fd, b'precious'); os.fsync(fd); os.close(fd)", s(&m.join("saved.txt")))])
        .status()
        .unwrap();
    assert!(o.success());
    let mut c = guard.child.take().unwrap();
    c.0.kill().unwrap();
    c.0.wait().unwrap();
    // The dead FUSE process left a stale mount point: reported with the command that clears it.
    let o = ccbt(&["--data-dir", s(&adata), "mount", &id, s(&m)]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("stale mount") && err.contains("ccbt unmount"),
        "{err}"
    );
    ccbt_ok(&["unmount", s(&m)]);
    // The next mount publishes what was left dirty.
    let before = ccbt_json(&["--data-dir", s(&adata), "versions", &id])
        .as_array()
        .unwrap()
        .len();
    let (mut g2, _) = mount(&adata, &id, &m, &[], &t.path().join("A2.log"));
    let log = std::fs::read_to_string(t.path().join("A.log")).unwrap_or_default();
    assert_eq!(
        std::fs::read(m.join("saved.txt")).unwrap_or_default(),
        b"precious",
        "first mount's log:\n{log}"
    );
    unmount(&mut g2);
    let vs = ccbt_json(&["--data-dir", s(&adata), "versions", &id]);
    assert!(
        vs.as_array().unwrap().len() > before,
        "no new version after the crash: {vs}"
    );
    let out = t.path().join("export");
    ccbt_ok(&["--data-dir", s(&adata), "export", &id, s(&out)]);
    assert_eq!(std::fs::read(out.join("saved.txt")).unwrap(), b"precious");
    guard.dir = t.path().join("none");
}

#[test]
fn torrent_mount_streams_the_end_of_a_file_before_the_download_finishes() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("seed/data");
    make_tree(&data, &[("video.mkv", 64 << 20), ("sub.srt", 12_345)]);
    let torrent = t.path().join("t.torrent");
    ccbt_ok(&[
        "-q",
        "create",
        s(&data),
        "--v1",
        "--piece-length",
        "256K",
        "-o",
        s(&torrent),
    ]);
    // A libtorrent seeder limited to 1 MiB/s: the whole torrent takes over a minute.
    let lport = free_port();
    let _seed = spawn_lt_seed_limited(&torrent, &t.path().join("seed"), lport, &[], 1 << 20);
    let m = t.path().join("m");
    let d = t.path().join("D");
    let (_g, _) = mount(
        &d,
        s(&torrent),
        &m,
        &["--peer", &format!("127.0.0.1:{lport}")],
        &t.path().join("M.log"),
    );
    assert_eq!(
        std::fs::metadata(m.join("video.mkv")).unwrap().len(),
        64 << 20
    );
    let t0 = Instant::now();
    let mut tail = vec![0u8; 65536];
    std::fs::File::open(m.join("video.mkv"))
        .unwrap()
        .read_exact_at(&mut tail, (64 << 20) - 65536)
        .unwrap();
    let took = t0.elapsed();
    let mut want = vec![0u8; 65536];
    std::fs::File::open(data.join("video.mkv"))
        .unwrap()
        .read_exact_at(&mut want, (64 << 20) - 65536)
        .unwrap();
    assert!(
        tail == want,
        "the last 64 KiB read through the mount differ"
    );
    eprintln!(
        "last 64 KiB of a 64 MiB file read through the torrent mount in {:.2}s",
        took.as_secs_f64()
    );
    // The download is still far from done.
    std::thread::sleep(Duration::from_millis(1500));
    let cks = ccbt_json(&["--data-dir", s(&d), "checkpoints", "list"]);
    let c = &cks[0];
    assert!(
        c["pieces_have"].as_u64().unwrap() < c["pieces_total"].as_u64().unwrap() / 2,
        "{c}"
    );
    // Writes are refused.
    assert!(std::fs::OpenOptions::new()
        .write(true)
        .open(m.join("sub.srt"))
        .is_err());
}

#[test]
fn magnet_mount_fetches_metadata_then_streams() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("seed/data");
    make_tree(&data, &[("song.flac", 9_000_001), ("cover.jpg", 54_321)]);
    let torrent = t.path().join("t.torrent");
    ccbt_ok(&[
        "-q",
        "create",
        s(&data),
        "--piece-length",
        "64K",
        "-o",
        s(&torrent),
    ]);
    let info = ccbt_json(&["info", s(&torrent)]);
    let ih = info["info_hash_v1"].as_str().unwrap().to_string();
    let lport = free_port();
    let _seed = spawn_lt_seed(&torrent, &t.path().join("seed"), lport, &[]);
    // Only a magnet (hybrid torrent, v1 hash) with the seeder in x.pe; the data dir is empty.
    let m = t.path().join("m");
    let d = t.path().join("D");
    let uri = format!("magnet:?xt=urn:btih:{ih}&dn=data&x.pe=127.0.0.1:{lport}");
    let (mut g, _) = mount(&d, &uri, &m, &[], &t.path().join("M.log"));
    for (name, _) in [("song.flac", 0), ("cover.jpg", 0)] {
        assert!(
            same_file(&data.join(name), &m.join(name)),
            "{name} read through the magnet mount differs"
        );
    }
    unmount(&mut g);
    // A bare info-hash in a fresh data dir: the peer is asked for the metadata (a 40-hex id the
    // peers know as a torrent is not taken for a share).
    let (mut g, _) = mount(
        &t.path().join("D2"),
        &ih,
        &m,
        &["--peer", &format!("127.0.0.1:{lport}")],
        &t.path().join("M2.log"),
    );
    assert!(same_file(&data.join("cover.jpg"), &m.join("cover.jpg")));
    unmount(&mut g);
    // The 64-hex v2 info-hash of the same (hybrid) torrent: metadata checked with SHA-256.
    let v2 = info["info_hash_v2"].as_str().unwrap().to_string();
    let (mut g, _) = mount(
        &t.path().join("D3"),
        &v2,
        &m,
        &["--peer", &format!("127.0.0.1:{lport}")],
        &t.path().join("M3.log"),
    );
    assert!(same_file(&data.join("song.flac"), &m.join("song.flac")));
    unmount(&mut g);
}

/// On a read-only mount, files of 1 MiB or more whose chunks are all local get a copy in
/// `<data dir>/fscache`; later opens hand it to the kernel (FUSE passthrough). A new version, files
/// held open across it and the owner's writes must never see the wrong bytes.
#[test]
fn large_local_files_pass_through_to_a_local_copy() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    make_tree(&src, &[("big.bin", 3 << 20), ("small.txt", 100)]);
    let adata = t.path().join("A");
    let id = publish(&adata, &src);
    let ma = t.path().join("mA");
    let (_a, alisten) = mount(
        &adata,
        &id,
        &ma,
        &["--log-level", "info"],
        &t.path().join("A.log"),
    );
    let bdata = t.path().join("B");
    let mb = t.path().join("mB");
    let log = t.path().join("B.log");
    let (mut guard, _) = mount(
        &bdata,
        &id,
        &mb,
        &["--peer", &alisten, "--log-level", "info"],
        &log,
    );
    let cache = bdata.join("fscache");
    let copies = || -> usize {
        std::fs::read_dir(&cache)
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.metadata().map(|m| m.len() == 3 << 20).unwrap_or(false))
                    .filter(|e| !e.file_name().to_string_lossy().ends_with(".tmp"))
                    .count()
            })
            .unwrap_or(0)
    };
    let passes = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .matches("big.bin: reads pass through to its local copy")
            .count()
    };
    let mut want = std::fs::read(src.join("big.bin")).unwrap();
    // The first open reads (and fetches) through ccbt; once every chunk is here, a copy follows.
    assert_eq!(std::fs::read(mb.join("big.bin")).unwrap(), want);
    wait_until(30.0, "the local copy", || copies() == 1);
    // The next open passes through and reads the same bytes.
    let held = std::fs::File::open(mb.join("big.bin")).unwrap();
    let mut buf = vec![0u8; 65536];
    held.read_exact_at(&mut buf, 1_500_000).unwrap();
    assert_eq!(buf, want[1_500_000..1_500_000 + 65536]);
    wait_until(10.0, "the passthrough log line", || passes() == 1);
    // The owner edits the file while the follower holds it open through passthrough.
    std::fs::OpenOptions::new()
        .write(true)
        .open(ma.join("big.bin"))
        .unwrap()
        .write_all_at(b"EDITED", 2 << 20)
        .unwrap();
    let old = want[2 << 20..(2 << 20) + 6].to_vec();
    want[2 << 20..(2 << 20) + 6].copy_from_slice(b"EDITED");
    wait_until(30.0, "the follower to show the edit", || {
        std::fs::read(mb.join("big.bin")).ok().as_deref() == Some(&want[..])
    });
    let mut six = [0u8; 6];
    held.read_exact_at(&mut six, 2 << 20).unwrap();
    assert_eq!(
        &six[..],
        &old[..],
        "an open reader keeps the version it opened"
    );
    drop(held);
    // The new version gets its own copy and passes through too.
    wait_until(30.0, "the new version's copy", || copies() == 2);
    assert_eq!(std::fs::read(mb.join("big.bin")).unwrap(), want);
    wait_until(10.0, "the second passthrough log line", || passes() == 2);
    // Small files never get a copy.
    assert_eq!(
        std::fs::read(mb.join("small.txt")).unwrap(),
        std::fs::read(src.join("small.txt")).unwrap()
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 2);
    unmount(&mut guard);
    // The owner's writable mount never copies, and with the cache off a follower does not either.
    assert!(
        !adata.join("fscache").exists(),
        "the owner's mount made copies"
    );
    let conf = t.path().join("ccbt.toml");
    std::fs::write(&conf, "[fs]\nfile_cache_mib = 0\n").unwrap();
    std::fs::remove_dir_all(&cache).unwrap();
    let (mut g2, _) = mount(
        &bdata,
        &id,
        &mb,
        &["--peer", &alisten, "--config", s(&conf)],
        &t.path().join("B2.log"),
    );
    assert_eq!(std::fs::read(mb.join("big.bin")).unwrap(), want);
    std::thread::sleep(Duration::from_millis(500));
    assert!(!cache.exists(), "no copies with file_cache_mib = 0");
    unmount(&mut g2);
}

/// Chunks a follower fetched for reads are cached without the WAL and indexed every few seconds
/// (bytes flushed first). After `kill -9` the cache holds what was indexed, and reads are exact
/// whether or not the crash came before the index was written.
#[test]
fn read_cache_survives_a_crash_after_its_commit() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    make_tree(&src, &[("a.bin", 6 << 20), ("b.bin", 6 << 20)]);
    let (id, alisten, _a) = publish_and_seed(t.path(), &src);
    let bdata = t.path().join("B");
    let mb = t.path().join("mB");
    let a = std::fs::read(src.join("a.bin")).unwrap();
    let b = std::fs::read(src.join("b.bin")).unwrap();
    let mount_b = |log: &str| mount(&bdata, &id, &mb, &["--peer", &alisten], &t.path().join(log));
    // Read a.bin, give the mount time to index it, crash.
    {
        let (mut g, _) = mount_b("B1.log");
        assert_eq!(std::fs::read(mb.join("a.bin")).unwrap(), a);
        std::thread::sleep(Duration::from_secs(3));
        g.child.as_mut().unwrap().0.kill().unwrap();
    }
    // a.bin is local now: reading it again fetches nothing. Then read b.bin and crash at once.
    {
        let (mut g, _) = mount_b("B2.log");
        let before = fetched(&bdata);
        assert_eq!(std::fs::read(mb.join("a.bin")).unwrap(), a);
        let moved = fetched(&bdata) - before;
        assert!(
            moved < 64 << 10,
            "re-read of an indexed file fetched {moved} bytes"
        );
        assert_eq!(std::fs::read(mb.join("b.bin")).unwrap(), b);
        g.child.as_mut().unwrap().0.kill().unwrap();
    }
    // Whatever b.bin left behind, reads are exact (missing chunks are fetched again).
    let (mut g, _) = mount_b("B3.log");
    assert_eq!(std::fs::read(mb.join("b.bin")).unwrap(), b);
    assert_eq!(std::fs::read(mb.join("a.bin")).unwrap(), a);
    unmount(&mut g);
}
