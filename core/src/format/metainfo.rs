//! Torrent metainfo: v1 (BEP 3, single and multi-file), v2 (BEP 52) and hybrid (BEP 47 pad files).
//!
//! Parsing is strict: every field is type-checked, lengths are bounded, every path component is
//! checked for traversal, and v2 piece layers are verified against their `pieces root`.

use crate::bencode::{self, BencodeError, Dict, OwnedValue, Value};
use crate::merkle::{self, Hash32, BLOCK};
use sha1::{Digest, Sha1};
use std::collections::BTreeMap;

/// Largest file size accepted (1 PiB): anything beyond is an attack on preallocation.
pub const MAX_FILE_LENGTH: u64 = 1 << 50;
/// Largest piece length accepted (256 MiB).
pub const MAX_PIECE_LENGTH: u64 = 1 << 28;
/// Most files accepted in one torrent.
pub const MAX_FILES: usize = 1_000_000;

#[derive(Debug, thiserror::Error)]
pub enum MetainfoError {
    /// Not `#[from]`: that would make the cause a `source` too and print it twice.
    #[error("not a valid torrent: {0}")]
    Bencode(BencodeError),
    #[error("not a valid torrent: {0}")]
    Invalid(String),
    #[error("unsafe file path in torrent: {0}")]
    UnsafePath(String),
}

impl From<BencodeError> for MetainfoError {
    fn from(e: BencodeError) -> Self {
        MetainfoError::Bencode(e)
    }
}

/// Refuses a v1 file list over [`MAX_FILES`] before it is decoded (counted in O(1) memory).
fn too_many_files(count: Option<usize>) -> Result<(), MetainfoError> {
    match count {
        Some(n) if n > MAX_FILES => Err(invalid(format!("{n} files: more than {MAX_FILES} files"))),
        _ => Ok(()),
    }
}

fn invalid(msg: impl Into<String>) -> MetainfoError {
    MetainfoError::Invalid(msg.into())
}

/// One file of a torrent, in v1 order (pad files included and flagged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// Path components under the torrent's root directory (for a single-file torrent, `[name]`).
    pub path: Vec<String>,
    pub length: u64,
    /// Byte offset of the file in the torrent's piece space.
    pub offset: u64,
    /// A BEP 47 pad file (never written to disk).
    pub pad: bool,
    pub executable: bool,
    /// v2 `pieces root` (absent for empty files and v1-only torrents).
    pub pieces_root: Option<Hash32>,
}

impl FileEntry {
    pub fn path_string(&self) -> String {
        self.path.join("/")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metainfo {
    pub name: String,
    /// The original bytes of the `info` dictionary: hashes are always taken over these.
    pub info_bytes: Vec<u8>,
    pub v1_hash: Option<[u8; 20]>,
    pub v2_hash: Option<[u8; 32]>,
    pub piece_length: u64,
    /// True when the torrent is a directory (v1 `files` list or a v2 tree with more than a name).
    pub multi_file: bool,
    pub files: Vec<FileEntry>,
    /// v1 piece hashes (concatenated 20-byte SHA-1s).
    pub pieces: Vec<[u8; 20]>,
    /// v2 piece layers by `pieces root`.
    pub piece_layers: BTreeMap<Hash32, Vec<Hash32>>,
    /// Announce tiers (BEP 12); `announce` alone becomes one tier.
    pub trackers: Vec<Vec<String>>,
    /// Web seeds, BEP 19 (`url-list`, GetRight style: plain file URLs).
    pub url_list: Vec<String>,
    /// HTTP seeds, BEP 17 (`httpseeds`, Hoffman style: a script that serves pieces).
    pub http_seeds: Vec<String>,
    pub private: bool,
    pub comment: Option<String>,
    pub created_by: Option<String>,
    pub creation_date: Option<i64>,
}

impl Metainfo {
    pub fn is_v1(&self) -> bool {
        self.v1_hash.is_some()
    }
    pub fn is_v2(&self) -> bool {
        self.v2_hash.is_some()
    }
    pub fn kind(&self) -> &'static str {
        match (self.is_v1(), self.is_v2()) {
            (true, true) => "hybrid",
            (false, true) => "v2",
            _ => "v1",
        }
    }
    /// Total bytes in piece space (including pad files).
    pub fn total_length(&self) -> u64 {
        self.files.last().map(|f| f.offset + f.length).unwrap_or(0)
    }
    /// Total bytes of real (non-pad) files.
    pub fn content_length(&self) -> u64 {
        self.files.iter().filter(|f| !f.pad).map(|f| f.length).sum()
    }
    pub fn piece_count(&self) -> u64 {
        if self.is_v1() {
            self.pieces.len() as u64
        } else {
            self.files
                .iter()
                .map(|f| f.length.div_ceil(self.piece_length))
                .sum()
        }
    }

    /// Parses a `.torrent` file's bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Metainfo, MetainfoError> {
        too_many_files(bencode::count_list_at(bytes, &[b"info", b"files"]))?;
        let root = bencode::decode(bytes)?;
        let root = root
            .as_dict()
            .ok_or_else(|| invalid("top level is not a dictionary"))?;
        let info = root
            .get(b"info")
            .ok_or_else(|| invalid("missing 'info' dictionary"))?
            .as_dict()
            .ok_or_else(|| invalid("'info' is not a dictionary"))?;
        let mut m = parse_info(info)?;
        parse_top_level(root, &mut m)?;
        Ok(m)
    }

    /// Parses a bare `info` dictionary (as received over ut_metadata).
    pub fn from_info_bytes(info_bytes: &[u8]) -> Result<Metainfo, MetainfoError> {
        too_many_files(bencode::count_list_at(info_bytes, &[b"files"]))?;
        let v = bencode::decode(info_bytes)?;
        let info = v
            .as_dict()
            .ok_or_else(|| invalid("'info' is not a dictionary"))?;
        parse_info(info)
    }

    /// Encodes a `.torrent` file around the original info bytes.
    pub fn to_torrent_bytes(&self) -> Vec<u8> {
        let mut top: BTreeMap<Vec<u8>, OwnedValue> = BTreeMap::new();
        if let Some(first) = self.trackers.first().and_then(|t| t.first()) {
            top.insert(b"announce".to_vec(), OwnedValue::bytes(first.as_bytes()));
        }
        if self.trackers.len() > 1 || self.trackers.first().is_some_and(|t| t.len() > 1) {
            top.insert(
                b"announce-list".to_vec(),
                OwnedValue::List(
                    self.trackers
                        .iter()
                        .map(|t| {
                            OwnedValue::List(
                                t.iter().map(|u| OwnedValue::bytes(u.as_bytes())).collect(),
                            )
                        })
                        .collect(),
                ),
            );
        }
        if let Some(c) = &self.comment {
            top.insert(b"comment".to_vec(), OwnedValue::bytes(c.as_bytes()));
        }
        if let Some(c) = &self.created_by {
            top.insert(b"created by".to_vec(), OwnedValue::bytes(c.as_bytes()));
        }
        if let Some(d) = self.creation_date {
            top.insert(b"creation date".to_vec(), OwnedValue::Int(d));
        }
        if !self.url_list.is_empty() {
            top.insert(
                b"url-list".to_vec(),
                OwnedValue::List(
                    self.url_list
                        .iter()
                        .map(|u| OwnedValue::bytes(u.as_bytes()))
                        .collect(),
                ),
            );
        }
        if !self.http_seeds.is_empty() {
            top.insert(
                b"httpseeds".to_vec(),
                OwnedValue::List(
                    self.http_seeds
                        .iter()
                        .map(|u| OwnedValue::bytes(u.as_bytes()))
                        .collect(),
                ),
            );
        }
        if !self.piece_layers.is_empty() {
            top.insert(
                b"piece layers".to_vec(),
                OwnedValue::Dict(
                    self.piece_layers
                        .iter()
                        .map(|(k, v)| (k.to_vec(), OwnedValue::Bytes(v.concat())))
                        .collect(),
                ),
            );
        }
        // Splice the info bytes in verbatim so the info-hash can never drift.
        let mut out = vec![b'd'];
        let mut info_written = false;
        for (k, v) in &top {
            if !info_written && k.as_slice() > b"info".as_slice() {
                out.extend_from_slice(b"4:info");
                out.extend_from_slice(&self.info_bytes);
                info_written = true;
            }
            OwnedValue::Bytes(k.clone()).encode_into(&mut out);
            v.encode_into(&mut out);
        }
        if !info_written {
            out.extend_from_slice(b"4:info");
            out.extend_from_slice(&self.info_bytes);
        }
        out.push(b'e');
        out
    }
}

fn get_int(d: &Dict, key: &str) -> Result<Option<i64>, MetainfoError> {
    match d.get(key.as_bytes()) {
        None => Ok(None),
        Some(v) => v
            .as_int()
            .map(Some)
            .ok_or_else(|| invalid(format!("'{key}' is not an integer"))),
    }
}

fn get_str(d: &Dict, key: &str) -> Result<Option<String>, MetainfoError> {
    match d.get(key.as_bytes()) {
        None => Ok(None),
        Some(v) => {
            let b = v
                .as_bytes()
                .ok_or_else(|| invalid(format!("'{key}' is not a string")))?;
            Ok(Some(String::from_utf8_lossy(b).into_owned()))
        }
    }
}

fn length_field(d: &Dict, key: &str, what: &str) -> Result<u64, MetainfoError> {
    let l = get_int(d, key)?.ok_or_else(|| invalid(format!("{what} has no '{key}'")))?;
    if l < 0 {
        return Err(invalid(format!("{what} has negative {key} {l}")));
    }
    if l as u64 > MAX_FILE_LENGTH {
        return Err(invalid(format!("{what} has absurd {key} {l}")));
    }
    Ok(l as u64)
}

/// Checks one path component: no traversal, no separators, no NUL, not empty.
pub fn check_component(c: &[u8]) -> Result<String, MetainfoError> {
    let shown = String::from_utf8_lossy(c);
    if c.is_empty() {
        return Err(MetainfoError::UnsafePath("empty path component".into()));
    }
    if c == b"." || c == b".." {
        return Err(MetainfoError::UnsafePath(format!(
            "'{shown}' component (directory traversal)"
        )));
    }
    if c.contains(&b'/') || c.contains(&b'\\') {
        return Err(MetainfoError::UnsafePath(format!(
            "'{shown}' contains a path separator"
        )));
    }
    if c.contains(&0) {
        return Err(MetainfoError::UnsafePath(format!(
            "'{}' contains a NUL byte",
            shown.replace('\0', "\\0")
        )));
    }
    String::from_utf8(c.to_vec())
        .map_err(|_| MetainfoError::UnsafePath(format!("'{shown}' is not valid UTF-8")))
}

fn parse_attr(d: &Dict) -> Result<(bool, bool), MetainfoError> {
    let attr = match d.get(b"attr") {
        None => return Ok((false, false)),
        Some(v) => v
            .as_bytes()
            .ok_or_else(|| invalid("'attr' is not a string"))?,
    };
    Ok((attr.contains(&b'p'), attr.contains(&b'x')))
}

fn parse_info(info: &Dict) -> Result<Metainfo, MetainfoError> {
    let name_raw = info
        .get(b"name")
        .ok_or_else(|| invalid("info has no 'name'"))?
        .as_bytes()
        .ok_or_else(|| invalid("'name' is not a string"))?;
    let name = check_component(name_raw)?;
    let piece_length =
        get_int(info, "piece length")?.ok_or_else(|| invalid("info has no 'piece length'"))?;
    if piece_length <= 0 || piece_length as u64 > MAX_PIECE_LENGTH {
        return Err(invalid(format!("absurd piece length {piece_length}")));
    }
    let piece_length = piece_length as u64;
    let meta_version = get_int(info, "meta version")?;
    let has_v2 = match meta_version {
        None => false,
        Some(2) => true,
        Some(v) => return Err(invalid(format!("unsupported meta version {v}"))),
    };
    let has_v1 = info.get(b"pieces").is_some();
    if !has_v1 && !has_v2 {
        return Err(invalid(
            "info has neither 'pieces' (v1) nor 'meta version' 2",
        ));
    }
    let private = matches!(get_int(info, "private")?, Some(1));

    let mut m = Metainfo {
        name: name.clone(),
        info_bytes: info.raw.to_vec(),
        v1_hash: has_v1.then(|| Sha1::digest(info.raw).into()),
        v2_hash: has_v2.then(|| merkle::sha256(info.raw)),
        piece_length,
        multi_file: false,
        files: Vec::new(),
        pieces: Vec::new(),
        piece_layers: BTreeMap::new(),
        trackers: Vec::new(),
        url_list: Vec::new(),
        http_seeds: Vec::new(),
        private,
        comment: None,
        created_by: None,
        creation_date: None,
    };

    let v2_files = if has_v2 {
        if !piece_length.is_power_of_two() || piece_length < BLOCK {
            return Err(invalid(format!(
                "v2 piece length {piece_length} is not a power of two of at least 16 KiB"
            )));
        }
        let tree = info
            .get(b"file tree")
            .ok_or_else(|| invalid("v2 info has no 'file tree'"))?
            .as_dict()
            .ok_or_else(|| invalid("'file tree' is not a dictionary"))?;
        let mut out = Vec::new();
        walk_file_tree(tree, &mut Vec::new(), &mut out, 0)?;
        if out.is_empty() {
            return Err(invalid("v2 'file tree' is empty"));
        }
        Some(out)
    } else {
        None
    };

    if has_v1 {
        let pieces = info
            .get(b"pieces")
            .and_then(Value::as_bytes)
            .ok_or_else(|| invalid("'pieces' is not a string"))?;
        if pieces.len() % 20 != 0 {
            return Err(invalid(format!(
                "'pieces' length {} is not a multiple of 20",
                pieces.len()
            )));
        }
        m.pieces = pieces
            .chunks_exact(20)
            .map(|c| c.try_into().unwrap())
            .collect();
        m.files = v1_files(info, &name, &mut m.multi_file)?;
        let total = m.total_length();
        let want = total.div_ceil(piece_length);
        if m.pieces.len() as u64 != want {
            return Err(invalid(format!(
                "{} piece hashes for {} bytes at piece length {} (expected {})",
                m.pieces.len(),
                total,
                piece_length,
                want
            )));
        }
        if let Some(v2) = &v2_files {
            check_hybrid_consistency(&m.files, v2, piece_length)?;
            // Carry the v2 roots onto the v1 entries.
            let mut it = v2.iter();
            for f in m.files.iter_mut().filter(|f| !f.pad) {
                let (_, _, _, root) = it.next().expect("checked above");
                f.pieces_root = *root;
            }
        }
    } else if let Some(v2) = v2_files {
        // v2-only: files are laid out piece-aligned.
        m.multi_file = !(v2.len() == 1 && v2[0].0 == [name.clone()]);
        let mut offset = 0;
        for (path, length, exec, root) in v2 {
            m.files.push(FileEntry {
                path,
                length,
                offset,
                pad: false,
                executable: exec,
                pieces_root: root,
            });
            offset += length.div_ceil(piece_length) * piece_length;
        }
    }
    if m.files.len() > MAX_FILES {
        return Err(invalid(format!("more than {MAX_FILES} files")));
    }
    check_paths(&m.files)?;
    Ok(m)
}

/// Rejects a file list where two files share a path, or a path is both a file and a directory
/// (`a` and `a/b`): writing it would overwrite one file with another. Pad files (BEP 47) are
/// never written, and may repeat.
fn check_paths(files: &[FileEntry]) -> Result<(), MetainfoError> {
    let mut paths: Vec<&[String]> = files
        .iter()
        .filter(|f| !f.pad)
        .map(|f| f.path.as_slice())
        .collect();
    paths.sort_unstable();
    for w in paths.windows(2) {
        let (a, b) = (w[0], w[1]);
        if a == b {
            return Err(MetainfoError::UnsafePath(format!(
                "two files have the path {:?}",
                a.join("/")
            )));
        }
        // Sorted by components, a directory's first entry comes right after a file of its name.
        if b.starts_with(a) {
            return Err(MetainfoError::UnsafePath(format!(
                "{:?} is both a file and a directory",
                a.join("/")
            )));
        }
    }
    Ok(())
}

type V2File = (Vec<String>, u64, bool, Option<Hash32>);

fn walk_file_tree(
    d: &Dict,
    prefix: &mut Vec<String>,
    out: &mut Vec<V2File>,
    depth: usize,
) -> Result<(), MetainfoError> {
    if depth > 128 {
        return Err(invalid("'file tree' nested too deeply"));
    }
    for (k, v) in &d.entries {
        let sub = v
            .as_dict()
            .ok_or_else(|| invalid("'file tree' node is not a dictionary"))?;
        if k.is_empty() {
            // A file: only valid below at least one name component.
            if prefix.is_empty() {
                return Err(MetainfoError::UnsafePath("file with an empty name".into()));
            }
            if d.entries.len() != 1 {
                return Err(invalid(format!(
                    "'{}' is both a file and a directory",
                    prefix.join("/")
                )));
            }
            let what = format!("file '{}'", prefix.join("/"));
            let length = length_field(sub, "length", &what)?;
            let (_, exec) = parse_attr(sub)?;
            let root = match sub.get(b"pieces root") {
                None if length == 0 => None,
                None => return Err(invalid(format!("{what} has no 'pieces root'"))),
                Some(r) => {
                    let r = r
                        .as_bytes()
                        .filter(|r| r.len() == 32)
                        .ok_or_else(|| invalid(format!("{what}: 'pieces root' is not 32 bytes")))?;
                    Some(r.try_into().unwrap())
                }
            };
            if out.len() >= MAX_FILES {
                return Err(invalid(format!("more than {MAX_FILES} files")));
            }
            out.push((prefix.clone(), length, exec, root));
        } else {
            prefix.push(check_component(k)?);
            walk_file_tree(sub, prefix, out, depth + 1)?;
            prefix.pop();
        }
    }
    Ok(())
}

fn v1_files(info: &Dict, name: &str, multi: &mut bool) -> Result<Vec<FileEntry>, MetainfoError> {
    let mut files = Vec::new();
    match (info.get(b"length"), info.get(b"files")) {
        (Some(_), Some(_)) => return Err(invalid("info has both 'length' and 'files'")),
        (None, None) => return Err(invalid("info has neither 'length' nor 'files'")),
        (Some(_), None) => {
            let length = length_field(info, "length", "the torrent")?;
            let (_, exec) = parse_attr(info)?;
            files.push(FileEntry {
                path: vec![name.to_string()],
                length,
                offset: 0,
                pad: false,
                executable: exec,
                pieces_root: None,
            });
        }
        (None, Some(list)) => {
            *multi = true;
            let list = list
                .as_list()
                .ok_or_else(|| invalid("'files' is not a list"))?;
            if list.is_empty() {
                return Err(invalid("'files' is empty"));
            }
            if list.len() > MAX_FILES {
                return Err(invalid(format!("more than {MAX_FILES} files")));
            }
            let mut offset: u64 = 0;
            for (i, f) in list.iter().enumerate() {
                let f = f
                    .as_dict()
                    .ok_or_else(|| invalid(format!("files[{i}] is not a dictionary")))?;
                let length = length_field(f, "length", &format!("files[{i}]"))?;
                let path = f
                    .get(b"path")
                    .ok_or_else(|| invalid(format!("files[{i}] has no 'path'")))?
                    .as_list()
                    .ok_or_else(|| invalid(format!("files[{i}].path is not a list")))?;
                if path.is_empty() {
                    return Err(MetainfoError::UnsafePath(format!(
                        "files[{i}] has an empty path"
                    )));
                }
                let path = path
                    .iter()
                    .map(|c| {
                        c.as_bytes()
                            .ok_or_else(|| invalid(format!("files[{i}].path has a non-string")))
                            .and_then(check_component)
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let (pad, exec) = parse_attr(f)?;
                files.push(FileEntry {
                    path,
                    length,
                    offset,
                    pad,
                    executable: exec,
                    pieces_root: None,
                });
                offset = offset
                    .checked_add(length)
                    .filter(|o| *o <= MAX_FILE_LENGTH)
                    .ok_or_else(|| invalid("total length is absurd"))?;
            }
        }
    }
    Ok(files)
}

fn check_hybrid_consistency(
    v1: &[FileEntry],
    v2: &[V2File],
    piece_length: u64,
) -> Result<(), MetainfoError> {
    let real: Vec<&FileEntry> = v1.iter().filter(|f| !f.pad).collect();
    if real.len() != v2.len() {
        return Err(invalid(format!(
            "hybrid torrent: v1 lists {} files, v2 file tree {}",
            real.len(),
            v2.len()
        )));
    }
    for (a, b) in real.iter().zip(v2) {
        // Single-file v1 names the file `name`; the v2 tree does too.
        if a.path != b.0 || a.length != b.1 {
            return Err(invalid(format!(
                "hybrid torrent: v1 file '{}' ({} bytes) does not match v2 file '{}' ({} bytes)",
                a.path_string(),
                a.length,
                b.0.join("/"),
                b.1
            )));
        }
        if a.length > 0 && a.offset % piece_length != 0 {
            return Err(invalid(format!(
                "hybrid torrent: file '{}' is not piece-aligned (missing pad file)",
                a.path_string()
            )));
        }
    }
    Ok(())
}

fn parse_top_level(root: &Dict, m: &mut Metainfo) -> Result<(), MetainfoError> {
    if let Some(list) = root.get(b"announce-list") {
        let list = list
            .as_list()
            .ok_or_else(|| invalid("'announce-list' is not a list"))?;
        for tier in list {
            let tier = tier
                .as_list()
                .ok_or_else(|| invalid("'announce-list' tier is not a list"))?;
            let urls: Vec<String> = tier
                .iter()
                .filter_map(|u| u.as_str().map(str::to_string))
                .collect();
            if !urls.is_empty() {
                m.trackers.push(urls);
            }
        }
    }
    if m.trackers.is_empty() {
        if let Some(a) = get_str(root, "announce")? {
            if !a.is_empty() {
                m.trackers.push(vec![a]);
            }
        }
    }
    match root.get(b"url-list") {
        Some(Value::Bytes(b)) if !b.is_empty() => {
            m.url_list.push(String::from_utf8_lossy(b).into_owned())
        }
        Some(Value::List(l)) => {
            m.url_list = l
                .iter()
                .filter_map(|u| u.as_str().map(str::to_string))
                .collect()
        }
        _ => {}
    }
    if let Some(Value::List(l)) = root.get(b"httpseeds") {
        m.http_seeds = l
            .iter()
            .filter_map(|u| u.as_str().map(str::to_string))
            .collect()
    }
    m.comment = get_str(root, "comment")?;
    m.created_by = get_str(root, "created by")?;
    m.creation_date = get_int(root, "creation date")?;

    if m.is_v2() {
        let layers = match root.get(b"piece layers") {
            Some(l) => Some(
                l.as_dict()
                    .ok_or_else(|| invalid("'piece layers' is not a dictionary"))?,
            ),
            None => None,
        };
        for f in m
            .files
            .iter()
            .filter(|f| !f.pad && f.length > m.piece_length)
        {
            let root_hash = f.pieces_root.expect("checked in walk_file_tree");
            let Some(layers) = layers else {
                if m.is_v1() {
                    // A hybrid fetched from a magnet (BEP 9 carries only `info`): the v1 piece
                    // hashes still verify every byte.
                    break;
                }
                return Err(invalid("v2 torrent has no 'piece layers'"));
            };
            let layer = layers
                .get(&root_hash)
                .and_then(Value::as_bytes)
                .ok_or_else(|| invalid(format!("no piece layer for file '{}'", f.path_string())))?;
            let want = f.length.div_ceil(m.piece_length) as usize * 32;
            if layer.len() != want {
                return Err(invalid(format!(
                    "piece layer of '{}' is {} bytes, expected {}",
                    f.path_string(),
                    layer.len(),
                    want
                )));
            }
            let hashes: Vec<Hash32> = layer
                .chunks_exact(32)
                .map(|c| c.try_into().unwrap())
                .collect();
            if merkle::root_from_piece_layer(&hashes, m.piece_length) != root_hash {
                return Err(invalid(format!(
                    "piece layer of '{}' does not hash to its pieces root",
                    f.path_string()
                )));
            }
            m.piece_layers.insert(root_hash, hashes);
        }
    }
    Ok(())
}
