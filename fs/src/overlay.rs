//! The owner's overlay: files being edited, and the state file that survives a crash.
//!
//! A file that is written becomes an overlay file under `<data dir>/overlay/<share>/`, opened
//! once and kept open for as long as the inode is (so a write costs one `pwrite`). The state file
//! `state` names every inode of the working tree with its local attributes and, for edited files,
//! its overlay file. It is written (to `state.tmp`, then renamed) when a file is closed and on
//! fsync (then with the data synced first), and by the publisher when metadata changed, so:
//! - after a crash, dirty data that was closed or synced is published at the next mount;
//! - data written but neither closed nor synced may be lost, as POSIX allows; an overlay file's
//!   length on disk is trusted over the size in the state, so a crash mid-write never shows bytes
//!   that are not there.

use crate::inode::{from_secs, secs, Content, InoMap, Inode, Special, Tree, ROOT};
use ccbt_core::bencode::{self, OwnedValue as V, Value};
use ccbt_xet::hash::XetHash;
use ccbt_xet::listing::{self, Entry, Kind};
use fuser::FileType;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// An edited file's bytes.
#[derive(Debug, Clone)]
pub(crate) struct Overlay {
    pub path: PathBuf,
    pub file: Arc<File>,
    /// Its last published root, while it has not been written since.
    pub root: Option<XetHash>,
    /// Changes with every write, so a publish keeps a root only for files untouched meanwhile.
    pub gen: u64,
    /// The published version it began as and the byte ranges rewritten since, so publishing
    /// re-chunks only around them. Not persisted: after a crash the whole file is re-chunked.
    pub edits: Option<Edits>,
}

#[derive(Debug, Clone)]
pub(crate) struct Edits {
    pub base: (XetHash, u64),
    pub ranges: Vec<(u64, u64)>,
}

impl Overlay {
    pub fn new(path: PathBuf, file: File, base: Option<(XetHash, u64)>) -> Overlay {
        Overlay {
            path,
            file: Arc::new(file),
            root: None,
            gen: 0,
            edits: base.map(|base| Edits {
                base,
                ranges: Vec::new(),
            }),
        }
    }

    /// Bytes `[a, b)` were rewritten.
    pub fn note_edit(&mut self, a: u64, b: u64) {
        self.root = None;
        self.gen += 1;
        let Some(e) = &mut self.edits else { return };
        // Adjacent small writes (a sequential writer) merge, keeping the list short.
        match e.ranges.last_mut() {
            Some(last) if last.0 <= b && a <= last.1 => *last = (last.0.min(a), last.1.max(b)),
            _ => e.ranges.push((a, b)),
        }
        if e.ranges.len() > 4096 {
            let lo = e.ranges.iter().map(|r| r.0).min().unwrap_or(0);
            let hi = e.ranges.iter().map(|r| r.1).max().unwrap_or(0);
            e.ranges = vec![(lo, hi)];
        }
    }
}

/// Opens an overlay file for reading and writing.
pub(crate) fn open_rw(p: &Path, create: bool) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .truncate(false)
        .open(p)
}

/// A new overlay file's name in `dir`.
pub(crate) fn new_path(dir: &Path, ino: u64) -> PathBuf {
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    dir.join(format!("f{ino}-{n}"))
}

fn time(d: &mut Vec<(&'static str, V)>, (s, n): (&'static str, &'static str), t: SystemTime) {
    d.push((s, V::Int(secs(t))));
    let ns = match t.duration_since(UNIX_EPOCH) {
        Ok(x) => x.subsec_nanos(),
        Err(e) => (1_000_000_000 - e.duration().subsec_nanos()) % 1_000_000_000,
    };
    d.push((n, V::Int(ns as i64)));
}

fn time_of(d: &bencode::Dict, s: &[u8], n: &[u8]) -> Option<SystemTime> {
    let base = from_secs(d.get(s)?.as_int()?);
    let ns = d
        .get(n)
        .and_then(Value::as_int)
        .unwrap_or(0)
        .clamp(0, 999_999_999);
    Some(base + Duration::from_nanos(ns as u64))
}

/// The working tree as bencode (any byte in a name survives): one dictionary per inode with its
/// CAS root or its overlay file, and its local attributes.
pub(crate) fn encode_state(t: &Tree) -> Vec<u8> {
    let mut nodes: Vec<&Inode> = t.nodes.values().collect();
    nodes.sort_by(|a, b| a.path.cmp(&b.path));
    V::List(
        nodes
            .into_iter()
            .map(|n| {
                let (root, ovl) = match &n.content {
                    Content::Cas(r) => (r.0.to_vec(), None),
                    Content::Overlay(o) => (
                        [0u8; 32].to_vec(),
                        Some(o.path.to_string_lossy().into_owned()),
                    ),
                };
                let kind = match (n.kind, n.special) {
                    (_, Some(_)) => "s",
                    (Kind::File, _) => "f",
                    (Kind::Dir, _) => "d",
                    (Kind::Link, _) => "l",
                };
                let mut d = vec![
                    ("g", V::Int(n.gid as i64)),
                    ("k", V::bytes(kind)),
                    ("o", V::Int(n.perm as i64)),
                    ("p", V::bytes(n.path.as_bytes())),
                    ("r", V::bytes(root)),
                    ("s", V::Int(n.size as i64)),
                    ("u", V::Int(n.uid as i64)),
                    ("x", V::Int((n.perm & 0o111 != 0) as i64)),
                ];
                time(&mut d, ("a", "an"), n.atime);
                time(&mut d, ("c", "cn"), n.ctime);
                time(&mut d, ("m", "mn"), n.mtime);
                if let Some(o) = ovl {
                    d.push(("ov", V::bytes(o.as_bytes())));
                }
                if let Some(tg) = &n.target {
                    d.push(("t", V::bytes(tg.as_bytes())));
                }
                if let Some(sp) = n.special {
                    let k = match sp.kind {
                        FileType::NamedPipe => "p",
                        FileType::Socket => "s",
                        FileType::CharDevice => "c",
                        _ => "b",
                    };
                    d.push(("sk", V::bytes(k)));
                    d.push(("rd", V::Int(sp.rdev as i64)));
                }
                V::dict(d)
            })
            .collect(),
    )
    .encode()
}

/// One inode read back from the state file.
#[derive(Debug)]
pub(crate) struct Saved {
    pub entry: Entry,
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    pub times: [SystemTime; 3],
    pub overlay: Option<PathBuf>,
    pub special: Option<Special>,
}

/// Reads a state file; `None` if it is not one (a crash cannot leave half a file: it is renamed
/// into place).
pub(crate) fn decode_state(b: &[u8]) -> Option<Vec<Saved>> {
    let v = bencode::decode(b).ok()?;
    let mut out = Vec::new();
    for item in v.as_list()? {
        let d = item.as_dict()?;
        let mut special = None;
        let kind = match d.get(b"k")?.as_bytes()? {
            b"f" => Kind::File,
            b"d" => Kind::Dir,
            b"l" => Kind::Link,
            b"s" => {
                let kind = match d.get(b"sk")?.as_bytes()? {
                    b"p" => FileType::NamedPipe,
                    b"s" => FileType::Socket,
                    b"c" => FileType::CharDevice,
                    _ => FileType::BlockDevice,
                };
                let rdev = d.get(b"rd").and_then(Value::as_int).unwrap_or(0) as u32;
                special = Some(Special { kind, rdev });
                Kind::File
            }
            _ => return None,
        };
        let path = d.get(b"p")?.as_str()?.to_string();
        let int = |k: &[u8]| d.get(k).and_then(Value::as_int);
        let exec = int(b"x")? != 0;
        let mtime = time_of(d, b"m", b"mn")?;
        let entry = Entry {
            path,
            kind,
            size: int(b"s")?.max(0) as u64,
            root: d.get(b"r")?.as_bytes()?.try_into().ok()?,
            executable: exec,
            mtime: secs(mtime),
            target: d.get(b"t").and_then(Value::as_str).map(str::to_string),
            mode: None,
            stamp: None,
        };
        if !entry.path.is_empty() {
            listing::check_path(&entry.path).ok()?;
        }
        let perm = int(b"o").map_or(entry.perm() as u16, |o| (o & 0o7777) as u16);
        out.push(Saved {
            perm,
            uid: int(b"u").unwrap_or(0).clamp(0, u32::MAX as i64) as u32,
            gid: int(b"g").unwrap_or(0).clamp(0, u32::MAX as i64) as u32,
            times: [
                time_of(d, b"a", b"an").unwrap_or(mtime),
                mtime,
                time_of(d, b"c", b"cn").unwrap_or(mtime),
            ],
            overlay: d
                .get(b"ov")
                .or(d.get(b"o").filter(|v| v.as_bytes().is_some()))
                .and_then(Value::as_str)
                .map(PathBuf::from),
            special,
            entry,
        });
    }
    Some(out)
}

/// Rebuilds the working tree from a state file's inodes. Overlay files are reopened; one that is
/// gone leaves its file as it was last published (or empty), with a warning.
pub(crate) fn restore(inos: &mut InoMap, seq: u64, saved: Vec<Saved>, now: SystemTime) -> Tree {
    let entries: Vec<Entry> = saved
        .iter()
        .filter(|s| !s.entry.path.is_empty())
        .map(|s| s.entry.clone())
        .collect();
    let mut t = Tree::build(inos, seq, &entries, false, now);
    for s in saved {
        let ino = if s.entry.path.is_empty() {
            ROOT
        } else {
            inos.get(&s.entry.path)
        };
        let Some(n) = t.nodes.get_mut(&ino) else {
            continue;
        };
        n.perm = s.perm;
        n.special = s.special;
        n.uid = s.uid;
        n.gid = s.gid;
        [n.atime, n.mtime, n.ctime] = s.times;
        if let Some(p) = s.overlay {
            match open_rw(&p, false) {
                Ok(f) => {
                    // The bytes on disk are the truth (see the module's notes).
                    n.size = f.metadata().map(|m| m.len()).unwrap_or(n.size);
                    n.content = Content::Overlay(Overlay::new(p, f, None));
                }
                Err(e) => tracing::warn!(
                    "{}: its edited copy {} is gone ({e}); it stays as last published",
                    n.path,
                    p.display()
                ),
            }
        }
    }
    t
}

/// Writes the state file (atomically: a temporary file renamed into place); `sync` also makes it
/// durable.
pub(crate) fn write_state(dir: &Path, state: &[u8], sync: bool) -> std::io::Result<()> {
    use std::io::Write;
    std::fs::create_dir_all(dir)?;
    let p = dir.join("state");
    let tmp = p.with_extension("tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(state)?;
    if sync {
        f.sync_data()?;
    }
    std::fs::rename(&tmp, &p)?;
    if sync {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// For the fuzzer: decodes a state file (no file is opened).
#[doc(hidden)]
pub fn fuzz_decode_state(b: &[u8]) {
    if let Some(saved) = decode_state(b) {
        for s in &saved {
            let _ = s.entry.perm();
        }
    }
}

pub(crate) fn load_state(dir: &Path) -> Option<Vec<Saved>> {
    decode_state(&std::fs::read(dir.join("state")).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_roundtrips_any_name_and_local_attributes() {
        let dir = std::env::temp_dir().join(format!("ccbt-ovl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let now = UNIX_EPOCH + Duration::new(1_800_000_000, 5);
        let mut inos = InoMap::default();
        let mut t = Tree::build(&mut inos, 3, &[], false, now);
        let mut d = Inode::new(Kind::Dir, 0o1777, 7, 8, now);
        d.atime = UNIX_EPOCH + Duration::new(1, 999_999_999);
        let dino = t.insert(&mut inos, ROOT, "dir\twith tab", d, now).unwrap();
        let mut f = Inode::new(Kind::File, 0o4755, 1, 2, now);
        f.content = Content::Cas(XetHash([9; 32]));
        f.size = 7;
        t.insert(&mut inos, dino, "ünï\nline.bin", f, now).unwrap();
        let op = dir.join("f x");
        std::fs::write(&op, b"dirty!!!!").unwrap();
        let mut g = Inode::new(Kind::File, 0o600, 0, 0, now);
        g.content = Content::Overlay(Overlay::new(op.clone(), open_rw(&op, false).unwrap(), None));
        g.size = 3; // the file on disk is longer: it wins
        t.insert(&mut inos, ROOT, "dirty.txt", g, now).unwrap();
        let mut fifo = Inode::new(Kind::File, 0o640, 0, 0, now);
        fifo.special = Some(Special {
            kind: FileType::CharDevice,
            rdev: 0x102,
        });
        t.insert(&mut inos, ROOT, "dev", fifo, now).unwrap();
        let mut l = Inode::new(Kind::Link, 0o777, 0, 0, now);
        l.target = Some("target\twith tab".into());
        t.insert(&mut inos, ROOT, "link", l, now).unwrap();

        write_state(&dir, &encode_state(&t), true).unwrap();
        let saved = load_state(&dir).expect("decodes");
        assert_eq!(saved.len(), 6);
        let mut inos2 = InoMap::default();
        let back = restore(&mut inos2, 3, saved, now);
        let get = |p: &str| back.nodes.values().find(|n| n.path == p).unwrap();
        let d = get("dir\twith tab");
        assert_eq!((d.perm, d.uid, d.gid), (0o1777, 7, 8));
        assert_eq!(d.atime, UNIX_EPOCH + Duration::new(1, 999_999_999));
        let f = get("dir\twith tab/ünï\nline.bin");
        assert!(matches!(f.content, Content::Cas(XetHash(r)) if r == [9; 32]));
        assert_eq!(f.perm, 0o4755);
        let g = get("dirty.txt");
        assert_eq!(g.size, 9);
        assert!(matches!(&g.content, Content::Overlay(o) if o.path == op));
        assert_eq!(get("link").target.as_deref(), Some("target\twith tab"));
        let dev = get("dev").attr(9, true);
        assert_eq!(
            (dev.kind, dev.rdev, dev.perm),
            (FileType::CharDevice, 0x102, 0o640)
        );
        assert!(decode_state(b"garbage").is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn edits_merge_and_stay_bounded() {
        let p = std::env::temp_dir().join(format!("ccbt-ovl-e-{}", std::process::id()));
        let mut o = Overlay::new(
            p.clone(),
            File::create(&p).unwrap(),
            Some((XetHash::ZERO, 10)),
        );
        o.note_edit(0, 4);
        o.note_edit(4, 8);
        o.note_edit(100, 101);
        assert_eq!(o.edits.as_ref().unwrap().ranges, vec![(0, 8), (100, 101)]);
        for i in 0..5000u64 {
            o.note_edit(i * 10, i * 10 + 1);
        }
        assert!(o.edits.as_ref().unwrap().ranges.len() <= 4097);
        assert_eq!(o.gen, 5003);
        let _ = std::fs::remove_file(p);
    }
}
