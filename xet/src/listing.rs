//! Version listings (docs/formats.md): a canonical bencoded list of entries sorted by path bytes.
//! A received listing that breaks any rule is rejected whole.

use ccbt_core::bencode::{self, OwnedValue, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Link,
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
}

impl Entry {
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

pub fn encode(entries: &[Entry]) -> Vec<u8> {
    OwnedValue::List(
        entries
            .iter()
            .map(|e| {
                let mut d = vec![
                    ("p", OwnedValue::bytes(e.path.as_bytes())),
                    (
                        "t",
                        OwnedValue::bytes(match e.kind {
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
                OwnedValue::dict(d)
            })
            .collect(),
    )
    .encode()
}

pub fn decode(bytes: &[u8]) -> Result<Vec<Entry>, ListingError> {
    let bad = |m: String| ListingError::Malformed(m);
    let v = bencode::decode(bytes).map_err(|e| bad(e.to_string()))?;
    let list = v.as_list().ok_or_else(|| bad("not a list".into()))?;
    let mut out: Vec<Entry> = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
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
        if let Some(prev) = out.last() {
            if prev.path.as_bytes() >= path.as_bytes() {
                return Err(bad(format!("entries not strictly sorted at {path:?}")));
            }
        }
        let kind = match get("t").and_then(Value::as_bytes) {
            Some(b"f") => Kind::File,
            Some(b"d") => Kind::Dir,
            Some(b"l") => Kind::Link,
            _ => return Err(bad(format!("entry {path:?}: bad type"))),
        };
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
        out.push(Entry {
            path,
            kind,
            size: size as u64,
            root,
            executable: int("x")? != 0,
            mtime: int("m")?,
            target,
            mode: get("o").and_then(Value::as_int).map(|m| (m & 0o777) as u32),
        });
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
        let unsorted = vec![e("b", Kind::File), e("a", Kind::File)];
        assert!(decode(&encode(&unsorted)).is_err());
        let dup = vec![e("a", Kind::File), e("a", Kind::File)];
        assert!(decode(&encode(&dup)).is_err());
        assert!(decode(b"i1e").is_err());
    }
}
