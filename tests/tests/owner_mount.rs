//! The owner's writable mount under load and against POSIX: concurrent writers, readers and
//! renames on the same files (bounded: a deadlock fails the test instead of hanging it), fio with
//! checksums, stress-ng's filesystem stressors, and the attribute semantics pjdfstest checks.

use ccbt_tests::*;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Publishes a small tree from data dir `<t>/A` and mounts it writable: (share id, guard, mount).
fn owner_mount(t: &Path, files: &[(&str, usize)]) -> (String, MountGuard, std::path::PathBuf) {
    let src = t.join("src");
    make_tree(&src, files);
    let adata = t.join("A");
    let id = publish(&adata, &src);
    let m = t.join("m");
    let (guard, _) = mount(&adata, &id, &m, &[], &t.join("A.log"));
    (id, guard, m)
}

/// Every regular file under `dir` with its bytes, by relative path.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                stack.push(p);
            } else if m.is_file() {
                let rel = p.strip_prefix(dir).unwrap().to_str().unwrap().to_string();
                out.push((rel, std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn concurrent_writers_readers_and_renames_finish_and_publish_exactly() {
    let t = tempfile::tempdir().unwrap();
    let (id, mut guard, m) = owner_mount(
        t.path(),
        &[("d/f0", 1 << 20), ("d/f1", 300_000), ("d/f2", 5000)],
    );
    let stop = Arc::new(AtomicBool::new(false));
    let names = ["d/f0", "d/f1", "d/f2"];
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let mut workers = Vec::new();
    // Every handle is opened before any worker starts: handles survive the renames below, while
    // opening by path during them may miss.
    let open = |write: bool| -> Vec<std::fs::File> {
        names
            .iter()
            .map(|n| {
                std::fs::OpenOptions::new()
                    .read(true)
                    .write(write)
                    .open(m.join(n))
                    .unwrap()
            })
            .collect()
    };
    let mut handles: Vec<Vec<std::fs::File>> = (0..4).map(|i| open(i < 2)).collect();
    for w in 0..2u64 {
        let (stop, m, tx) = (stop.clone(), m.clone(), tx.clone());
        let files = handles.remove(0);
        workers.push(std::thread::spawn(move || {
            let mut r = Rng(0x9e37_79b9 + w);
            let mut ops = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let f = &files[r.below(3) as usize];
                match r.below(10) {
                    0..=5 => {
                        let len = 1 + r.below(64 << 10) as usize;
                        let buf = vec![(r.next() & 0xff) as u8; len];
                        f.write_all_at(&buf, r.below(2 << 20)).unwrap();
                    }
                    6..=7 => {
                        let n = names[r.below(3) as usize];
                        if let Ok(mut a) = std::fs::OpenOptions::new().append(true).open(m.join(n))
                        {
                            use std::io::Write;
                            a.write_all(&vec![b'A' + w as u8; 1 + r.below(9000) as usize])
                                .unwrap();
                        }
                    }
                    _ => f.set_len(r.below(3 << 20)).unwrap(),
                }
                ops += 1;
            }
            tx.send(format!("writer {w}: {ops} ops")).unwrap();
        }));
    }
    for rd in 0..2u64 {
        let (stop, m, tx) = (stop.clone(), m.clone(), tx.clone());
        let files = handles.remove(0);
        workers.push(std::thread::spawn(move || {
            let mut r = Rng(0x1234_5678 + rd);
            let mut ops = 0u64;
            let mut buf = vec![0u8; 128 << 10];
            while !stop.load(Ordering::Relaxed) {
                let f = &files[r.below(3) as usize];
                let _ = f.read_at(&mut buf, r.below(3 << 20)).unwrap();
                f.metadata().unwrap();
                let _ = std::fs::metadata(m.join(names[r.below(3) as usize]));
                ops += 1;
            }
            tx.send(format!("reader {rd}: {ops} ops")).unwrap();
        }));
    }
    {
        let (stop, m, tx) = (stop.clone(), m.clone(), tx.clone());
        workers.push(std::thread::spawn(move || {
            let mut ops = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for (a, b) in [
                    ("d/f2", "d/f2.moved"),
                    ("d/f2.moved", "d/f2"),
                    ("d", "e"),
                    ("e", "d"),
                ] {
                    let st = Command::new("mv")
                        .arg(m.join(a))
                        .arg(m.join(b))
                        .status()
                        .unwrap();
                    assert!(st.success(), "mv {a} {b}");
                }
                let o = Command::new("ls").arg("-lR").arg(&m).output().unwrap();
                assert!(o.status.success(), "ls -lR");
                ops += 1;
            }
            tx.send(format!("mv/ls: {ops} rounds")).unwrap();
        }));
    }
    drop(tx);
    std::thread::sleep(Duration::from_secs(8));
    stop.store(true, Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(22);
    let mut done = Vec::new();
    while done.len() < 5 {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(msg) => done.push(msg),
            Err(_) => {
                // A worker that failed (rather than hung) reports its own error.
                for w in workers.drain(..).filter(|w| w.is_finished()) {
                    if let Err(e) = w.join() {
                        std::panic::resume_unwind(e);
                    }
                }
                panic!(
                "the mount stopped answering (a deadlock?): only {done:?} finished within 30 s\n{}",
                std::fs::read_to_string(t.path().join("A.log")).unwrap_or_default()
                );
            }
        }
    }
    for w in workers {
        w.join().expect("a worker failed");
    }
    eprintln!("{done:?}");
    let seen = snapshot(&m);
    assert_eq!(seen.len(), 3);
    unmount(&mut guard);
    let out = t.path().join("export");
    ccbt_ok(&["--data-dir", s(&t.path().join("A")), "export", &id, s(&out)]);
    let published = snapshot(&out);
    assert_eq!(published.len(), seen.len());
    for ((pa, a), (pb, b)) in seen.iter().zip(&published) {
        assert_eq!(pa, pb);
        assert!(a == b, "{pa}: the published bytes differ from the mount's");
    }
}

#[test]
fn fio_with_checksums_and_stress_ng_through_the_owner_mount() {
    require("fio", "fio");
    require("stress-ng", "stress-ng");
    let t = tempfile::tempdir().unwrap();
    let (_id, mut guard, m) = owner_mount(t.path(), &[("seed.bin", 4096)]);
    for rw in ["randwrite", "write"] {
        let o = Command::new("fio")
            .args([
                "--name=verify",
                &format!("--directory={}", s(&m)),
                &format!("--rw={rw}"),
                "--bs=4k",
                "--size=16m",
                "--ioengine=psync",
                "--verify=crc32c",
                "--do_verify=1",
                "--end_fsync=1",
                "--output-format=terse",
            ])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "fio {rw} --verify=crc32c failed: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let sdir = m.join("stress");
    std::fs::create_dir(&sdir).unwrap();
    let o = Command::new("timeout")
        .args(["-k", "5", "60", "stress-ng"])
        .args([
            "--temp-path",
            s(&sdir),
            "--hdd",
            "1",
            "--hdd-bytes",
            "8m",
            "--dir",
            "1",
            "--rename",
            "1",
            "--fstat",
            "1",
            "--symlink",
            "1",
            "--verify",
            "--timeout",
            "8s",
            "--metrics-brief",
        ])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "stress-ng failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    unmount(&mut guard);
}

#[test]
fn attributes_and_errnos_follow_posix() {
    let t = tempfile::tempdir().unwrap();
    let (id, mut guard, m) = owner_mount(t.path(), &[("a.txt", 100)]);
    let mode = |p: &Path| std::fs::symlink_metadata(p).unwrap().mode() & 0o7777;
    let errno = |r: std::io::Result<()>| r.unwrap_err().raw_os_error().unwrap();
    let f = m.join("f");
    std::fs::write(&f, b"x").unwrap();
    // Every permission bit survives, set-id and sticky included.
    for want in [0o111, 0o620, 0o4755, 0o2711, 0o1777, 0o600] {
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(want)).unwrap();
        assert_eq!(mode(&f), want);
    }
    let o = Command::new("chown")
        .args(["123:456", s(&f)])
        .status()
        .unwrap();
    assert!(o.success());
    let md = std::fs::metadata(&f).unwrap();
    assert_eq!((md.uid(), md.gid()), (123, 456));
    // Times: nanoseconds kept, atime apart from mtime, ctime moves on its own.
    let o = Command::new("touch")
        .args(["-a", "-d", "2001-02-03 04:05:06.123456789Z", s(&f)])
        .status()
        .unwrap();
    assert!(o.success());
    let md = std::fs::metadata(&f).unwrap();
    assert_eq!((md.atime(), md.atime_nsec()), (981173106, 123456789));
    assert_ne!(md.atime(), md.mtime());
    assert!(md.ctime() >= md.mtime());
    // A directory's mtime and link count follow its entries.
    let d = m.join("dir");
    std::fs::create_dir(&d).unwrap();
    let before = std::fs::metadata(&d).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    std::fs::create_dir(d.join("sub")).unwrap();
    let after = std::fs::metadata(&d).unwrap();
    assert_eq!(after.nlink(), 3);
    assert!(
        (after.mtime(), after.mtime_nsec()) > (before.mtime(), before.mtime_nsec()),
        "a new entry moves the directory's mtime"
    );
    // Names over 255 bytes, huge truncates, hard links: the errnos a user expects.
    assert_eq!(
        errno(std::fs::write(m.join("n".repeat(256)), b"")),
        libc_errno("ENAMETOOLONG")
    );
    std::fs::write(m.join("n".repeat(255)), b"ok").unwrap();
    let h = std::fs::OpenOptions::new().write(true).open(&f).unwrap();
    assert_eq!(errno(h.set_len(999_999_999_999_999)), libc_errno("EFBIG"));
    assert_eq!(
        errno(std::fs::hard_link(&f, m.join("hard"))),
        libc_errno("EPERM")
    );
    // fstat of an open, unlinked file.
    std::fs::remove_file(&f).unwrap();
    let md = h.metadata().unwrap();
    assert_eq!((md.nlink(), md.uid()), (0, 123));
    drop(h);
    // A FIFO works locally and is not published.
    assert!(Command::new("mkfifo")
        .arg(m.join("pipe"))
        .status()
        .unwrap()
        .success());
    assert!(std::fs::symlink_metadata(m.join("pipe"))
        .unwrap()
        .file_type()
        .is_fifo());
    // A mode other than the default is published; owners and set-id bits are not.
    let g = m.join("g");
    std::fs::write(&g, b"y").unwrap();
    std::fs::set_permissions(&g, std::fs::Permissions::from_mode(0o4750)).unwrap();
    unmount(&mut guard);
    let out = t.path().join("export");
    ccbt_ok(&["--data-dir", s(&t.path().join("A")), "export", &id, s(&out)]);
    assert!(!out.join("pipe").exists() && !out.join("f").exists());
    assert_eq!(std::fs::read(out.join("g")).unwrap(), b"y");
    assert_eq!(mode(&out.join("g")), 0o750);
    // Remounted, the owner's local attributes are back.
    let (g2, _) = mount(
        &t.path().join("A"),
        &id,
        &t.path().join("m2"),
        &[],
        &t.path().join("A2.log"),
    );
    let m2 = t.path().join("m2");
    assert_eq!(mode(&m2.join("g")), 0o4750);
    assert!(std::fs::symlink_metadata(m2.join("pipe")).is_ok());
    drop(g2);
}

fn libc_errno(name: &str) -> i32 {
    match name {
        "EPERM" => 1,
        "EFBIG" => 27,
        "ENAMETOOLONG" => 36,
        _ => unreachable!(),
    }
}
