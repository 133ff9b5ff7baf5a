//! Version listings (docs/formats.md): a canonical bencoded list of entries sorted by path bytes.
//! A received listing that breaks any rule is rejected whole.

use ccbt_core::bencode::{self, OwnedValue, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Link,
}

/// Who changed an entry last, in a share with several writers (docs/formats.md): the writer
/// (first 8 bytes of its key), its version that made the change, that version's time; `gone`
/// marks a deletion (a tombstone, kept so the deletion merges like any change). Optional keys
/// `w`, `q`, `c` of an entry; a tombstone has type `x`. Entries of single-writer versions carry
/// none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Stamp {
    pub c: i64,
    pub w: [u8; 8],
    pub q: u64,
    pub gone: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Relative, `/`-separated, UTF-8.
    pub path: String,
    pub kind: Kind,
    pub size: u64,
    /// Merkle root of the file's chunks (all zero for empty files, dirs and links).
    pub root: [u8; 32],
    pub executable: bool,
    /// Modification time, unix seconds.
    pub mtime: i64,
    /// Symlink target.
    pub target: Option<String>,
    /// Permission bits (`0o777` at most) when they differ from the default that `executable`
    /// implies (0644 or 0755 for files, 0755 for dirs). Optional key `o`: readers that do not know
    /// it ignore it. Set-id and sticky bits and owners are never published (docs/architecture.md).
    pub mode: Option<u32>,
    /// The last change (several writers only).
    pub stamp: Option<Stamp>,
}

impl Entry {
    /// A deletion marker, not a file.
    pub fn is_gone(&self) -> bool {
        self.stamp.is_some_and(|s| s.gone)
    }

    /// A tombstone for `path`.
    pub fn tombstone(path: String, mut stamp: Stamp) -> Entry {
        stamp.gone = true;
        Entry {
            path,
            kind: Kind::File,
            size: 0,
            root: [0; 32],
            executable: false,
            mtime: stamp.c,
            target: None,
            mode: None,
            stamp: Some(stamp),
        }
    }

    /// Same content and metadata (the stamp aside).
    pub fn same_as(&self, o: &Entry) -> bool {
        self.path == o.path
            && self.kind == o.kind
            && self.size == o.size
            && self.root == o.root
            && self.executable == o.executable
            && self.mtime == o.mtime
            && self.target == o.target
            && self.mode == o.mode
            && self.is_gone() == o.is_gone()
    }

    /// The permission bits a mount shows for this entry.
    pub fn perm(&self) -> u32 {
        match (self.mode, self.kind) {
            (Some(m), _) => m & 0o777,
            (None, Kind::File) if !self.executable => 0o644,
            (None, Kind::Link) => 0o777,
            (None, _) => 0o755,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ListingError {
    #[error("listing is malformed: {0}")]
    Malformed(String),
    #[error("listing has an unsafe path {0:?}")]
    UnsafePath(String),
}

/// Checks a listing path: relative, `/`-separated, no empty, `.` or `..` component, no NUL.
pub fn check_path(p: &str) -> Result<(), ListingError> {
    if p.is_empty()
        || p.contains('\0')
        || p.split('/').any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(ListingError::UnsafePath(p.to_string()));
    }
    Ok(())
}

fn entry_value(e: &Entry) -> OwnedValue {
    let mut d = vec![
        ("p", OwnedValue::bytes(e.path.as_bytes())),
        (
            "t",
            OwnedValue::bytes(match e.kind {
                _ if e.is_gone() => "x",
                Kind::File => "f",
                Kind::Dir => "d",
                Kind::Link => "l",
            }),
        ),
        ("s", OwnedValue::Int(e.size as i64)),
        ("r", OwnedValue::bytes(e.root.to_vec())),
        ("x", OwnedValue::Int(e.executable as i64)),
        ("m", OwnedValue::Int(e.mtime)),
    ];
    if let Some(t) = &e.target {
        d.push(("l", OwnedValue::bytes(t.as_bytes())));
    }
    if let Some(m) = e.mode {
        d.push(("o", OwnedValue::Int((m & 0o777) as i64)));
    }
    if let Some(st) = e.stamp {
        d.push(("c", OwnedValue::Int(st.c)));
        d.push(("q", OwnedValue::Int(st.q as i64)));
        d.push(("w", OwnedValue::bytes(st.w.to_vec())));
    }
    OwnedValue::dict(d)
}

pub fn encode(entries: &[Entry]) -> Vec<u8> {
    encode_pieces(entries).concat()
}

/// About one entry in this many ends a piece.
const PIECE_ENTRIES: u64 = 32;
/// A piece is cut here at the latest (well under a chunk reply's bound).
const PIECE_MAX: usize = 64 * 1024;

/// The canonical listing bytes cut into pieces at entry boundaries, content-defined (an entry
/// whose path hashes to 0 mod [`PIECE_ENTRIES`] ends its piece): each piece is stored as one
/// chunk, so an edited entry changes one small chunk (about 3 KiB) and a diff reads only the
/// pieces that differ, each parseable alone ([`decode_piece`]). The concatenation is exactly
/// the canonical bencode, so readers need not know how it was cut.
pub fn encode_pieces(entries: &[Entry]) -> Vec<Vec<u8>> {
    let mut pieces = Vec::new();
    let mut cur = b"l".to_vec();
    for e in entries {
        cur.extend_from_slice(&entry_value(e).encode());
        if fnv1a(e.path.as_bytes()).is_multiple_of(PIECE_ENTRIES) || cur.len() >= PIECE_MAX {
            pieces.push(std::mem::take(&mut cur));
        }
    }
    cur.push(b'e');
    pieces.push(cur);
    pieces
}

fn fnv1a(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, x| {
        (h ^ *x as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The entries of one stored piece of a listing (`first`: it starts the listing, so it opens
/// the list; `last`: it ends it). Fails when the bytes are not whole entries (a listing cut
/// elsewhere, as before pieces existed): the caller then reads the listing whole.
pub fn decode_piece(bytes: &[u8], first: bool, last: bool) -> Result<Vec<Entry>, ListingError> {
    let bad = |m: String| ListingError::Malformed(m);
    let mut b = bytes;
    if first {
        b = b
            .strip_prefix(b"l")
            .ok_or_else(|| bad("no list start".into()))?;
    }
    if last {
        b = b
            .strip_suffix(b"e")
            .ok_or_else(|| bad("no list end".into()))?;
    }
    let mut out = Vec::new();
    while !b.is_empty() {
        let (v, used) = bencode::decode_prefix(b).map_err(|e| bad(e.to_string()))?;
        out.push(entry_from(out.len(), &v)?);
        b = &b[used..];
    }
    out.retain(|e| !e.is_gone());
    Ok(out)
}

fn entry_from(i: usize, item: &Value) -> Result<Entry, ListingError> {
    let bad = |m: String| ListingError::Malformed(m);
    let d = item
        .as_dict()
        .ok_or_else(|| bad(format!("entry {i} is not a dictionary")))?;
    let get = |k: &str| d.get(k.as_bytes());
    let int = |k: &str| {
        get(k)
            .and_then(Value::as_int)
            .ok_or_else(|| bad(format!("entry {i}: '{k}' missing or not an integer")))
    };
    let path = get("p")
        .and_then(Value::as_str)
        .ok_or_else(|| bad(format!("entry {i}: 'p' missing or not UTF-8")))?
        .to_string();
    check_path(&path)?;
    let (kind, gone) = match get("t").and_then(Value::as_bytes) {
        Some(b"f") => (Kind::File, false),
        Some(b"d") => (Kind::Dir, false),
        Some(b"l") => (Kind::Link, false),
        Some(b"x") => (Kind::File, true),
        _ => return Err(bad(format!("entry {path:?}: bad type"))),
    };
    let stamp = match (get("c"), get("q"), get("w")) {
        (None, None, None) => None,
        (Some(c), Some(q), Some(w)) => Some(Stamp {
            c: c.as_int()
                .ok_or_else(|| bad(format!("entry {path:?}: bad 'c'")))?,
            q: q.as_int()
                .filter(|q| *q >= 0)
                .ok_or_else(|| bad(format!("entry {path:?}: bad 'q'")))? as u64,
            w: w.as_bytes()
                .and_then(|w| w.try_into().ok())
                .ok_or_else(|| bad(format!("entry {path:?}: 'w' is not 8 bytes")))?,
            gone,
        }),
        _ => return Err(bad(format!("entry {path:?}: partial stamp"))),
    };
    if gone && stamp.is_none() {
        return Err(bad(format!("tombstone {path:?} has no stamp")));
    }
    let size = int("s")?;
    if size < 0 {
        return Err(bad(format!("entry {path:?}: negative size")));
    }
    let root: [u8; 32] = get("r")
        .and_then(Value::as_bytes)
        .and_then(|r| r.try_into().ok())
        .ok_or_else(|| bad(format!("entry {path:?}: 'r' is not 32 bytes")))?;
    let target = match (kind, get("l")) {
        (Kind::Link, Some(t)) => Some(
            t.as_str()
                .ok_or_else(|| bad(format!("entry {path:?}: link target not UTF-8")))?
                .to_string(),
        ),
        (Kind::Link, None) => return Err(bad(format!("link {path:?} has no target"))),
        (_, Some(_)) => return Err(bad(format!("{path:?} has a target but is not a link"))),
        (_, None) => None,
    };
    Ok(Entry {
        path,
        kind,
        size: size as u64,
        root,
        executable: int("x")? != 0,
        mtime: int("m")?,
        target,
        mode: get("o").and_then(Value::as_int).map(|m| (m & 0o777) as u32),
        stamp,
    })
}

/// The entries at `path` in a listing: the entry itself and, for a directory, everything under
/// it ("" is the whole listing).
pub fn under<'a>(entries: &'a [Entry], path: &str) -> impl Iterator<Item = &'a Entry> + 'a {
    let path = path.trim_matches('/').to_string();
    let prefix = format!("{path}/");
    entries
        .iter()
        .filter(move |e| path.is_empty() || e.path == path || e.path.starts_with(&prefix))
}

/// A listing's files, directories and links (tombstones left out).
pub fn decode(bytes: &[u8]) -> Result<Vec<Entry>, ListingError> {
    let mut v = decode_all(bytes)?;
    v.retain(|e| !e.is_gone());
    Ok(v)
}

/// Every entry, tombstones included (for merging writers).
pub fn decode_all(bytes: &[u8]) -> Result<Vec<Entry>, ListingError> {
    let bad = |m: String| ListingError::Malformed(m);
    let v = bencode::decode(bytes).map_err(|e| bad(e.to_string()))?;
    let list = v.as_list().ok_or_else(|| bad("not a list".into()))?;
    let mut out: Vec<Entry> = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        let e = entry_from(i, item)?;
        if let Some(prev) = out.last() {
            if prev.path.as_bytes() >= e.path.as_bytes() {
                return Err(bad(format!("entries not strictly sorted at {:?}", e.path)));
            }
        }
        out.push(e);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(p: &str, kind: Kind) -> Entry {
        Entry {
            path: p.into(),
            kind,
            size: 0,
            root: [0; 32],
            executable: false,
            mtime: 1,
            target: (kind == Kind::Link).then(|| "x".into()),
            mode: None,
            stamp: None,
        }
    }

    #[test]
    fn roundtrip_and_rules() {
        let l = vec![e("a", Kind::Dir), e("a/b", Kind::File), e("c", Kind::Link)];
        assert_eq!(decode(&encode(&l)).unwrap(), l);
        let mut m = vec![e("a", Kind::File)];
        m[0].mode = Some(0o600);
        assert_eq!(decode(&encode(&m)).unwrap()[0].perm(), 0o600);
        assert_eq!(e("a", Kind::File).perm(), 0o644);
        for bad in ["../x", "/abs", "a//b", "a/./b", "", "a/.."] {
            let l = vec![e(bad, Kind::File)];
            assert!(decode(&encode(&l)).is_err(), "{bad}");
        }
        // Stamps and tombstones (several writers): `decode` leaves tombstones out.
        let st = Stamp {
            c: 5,
            w: [1; 8],
            q: 2,
            gone: false,
        };
        let mut s = vec![e("a", Kind::File), Entry::tombstone("b".into(), st)];
        s[0].stamp = Some(st);
        let enc = encode(&s);
        assert_eq!(decode_all(&enc).unwrap(), s);
        assert_eq!(decode(&enc).unwrap(), s[..1]);
        let no_stamp = format!("ld1:md1:p1:a1:r32:{}1:si0e1:t1:x1:xi0eee", "0".repeat(32));
        assert!(decode_all(no_stamp.replace("d1:md", "d1:mi1e").as_bytes()).is_err());
        let unsorted = vec![e("b", Kind::File), e("a", Kind::File)];
        assert!(decode(&encode(&unsorted)).is_err());
        let dup = vec![e("a", Kind::File), e("a", Kind::File)];
        assert!(decode(&encode(&dup)).is_err());
        assert!(decode(b"i1e").is_err());
    }

    #[test]
    fn pieces_are_canonical_and_parse_alone() {
        let l: Vec<Entry> = (0..500)
            .map(|i| e(&format!("f{i:04}"), Kind::File))
            .collect();
        let pieces = encode_pieces(&l);
        assert!(pieces.len() > 4, "{}", pieces.len());
        let whole = pieces.concat();
        assert_eq!(decode(&whole).unwrap(), l);
        // The canonical form: the same bytes as encoding the list in one go.
        let canon = OwnedValue::List(l.iter().map(entry_value).collect()).encode();
        assert_eq!(whole, canon);
        let n = pieces.len();
        let back: Vec<Entry> = pieces
            .iter()
            .enumerate()
            .flat_map(|(i, p)| decode_piece(p, i == 0, i == n - 1).unwrap())
            .collect();
        assert_eq!(back, l);
        // A piece cut mid-entry does not parse.
        assert!(decode_piece(&whole[..pieces[0].len() + 5], true, false).is_err());
        assert_eq!(decode_piece(b"le", true, true).unwrap(), vec![]);
    }
}
