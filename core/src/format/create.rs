//! Creating torrents (v1, v2, hybrid) from files on disk, hashing pieces on all cores.
//!
//! One read per piece feeds both SHA-1 (v1) and the SHA-256 leaves (v2): in v2 and hybrid layouts every
//! file starts on a piece boundary, so a piece never spans two files and both hashes come from the same
//! buffer while it is hot in cache.

use crate::bencode::OwnedValue;
use crate::merkle::{self, Hash32, BLOCK};
use crate::metainfo::{check_component, Metainfo, MetainfoError};
use rayon::prelude::*;
use sha1::{Digest, Sha1};
use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TorrentKind {
    V1,
    V2,
    #[default]
    Hybrid,
}

#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    pub kind: TorrentKind,
    /// Piece length in bytes; `None` picks one from the total size.
    pub piece_length: Option<u64>,
    /// One tracker per tier, in order.
    pub trackers: Vec<String>,
    pub web_seeds: Vec<String>,
    /// BEP 17 HTTP seed scripts (`httpseeds`).
    pub http_seeds: Vec<String>,
    pub private: bool,
    pub comment: Option<String>,
    pub created_by: Option<String>,
    pub creation_date: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Metainfo(#[from] MetainfoError),
}

struct InputFile {
    disk: PathBuf,
    path: Vec<String>,
    length: u64,
}

/// A run of the piece space: bytes of a file, or zeros (a pad).
#[derive(Clone, Copy)]
struct Extent {
    start: u64,
    len: u64,
    file: Option<usize>,
}

/// Picks a power-of-two piece length giving roughly 1000–2000 pieces, between 16 KiB and 16 MiB.
pub fn auto_piece_length(total: u64) -> u64 {
    let target = (total / 1500).clamp(BLOCK, 16 << 20);
    target.next_power_of_two().min(16 << 20)
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CreateError + '_ {
    move |source| CreateError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Lists regular files under `root` in canonical (component-wise byte) order.
fn collect_files(root: &Path) -> Result<(String, bool, Vec<InputFile>), CreateError> {
    let meta = std::fs::metadata(root).map_err(io_err(root))?;
    let name = root
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .or_else(|| {
            std::fs::canonicalize(root)
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        })
        .ok_or_else(|| CreateError::Invalid(format!("{} has no usable name", root.display())))?;
    check_component(name.as_bytes())?;
    if meta.is_file() {
        return Ok((
            name.clone(),
            false,
            vec![InputFile {
                disk: root.to_path_buf(),
                path: vec![name],
                length: meta.len(),
            }],
        ));
    }
    if !meta.is_dir() {
        return Err(CreateError::Invalid(format!(
            "{} is neither a file nor a directory",
            root.display()
        )));
    }
    let mut out = Vec::new();
    walk(root, &mut Vec::new(), &mut out)?;
    if out.is_empty() {
        return Err(CreateError::Invalid(format!(
            "{} contains no files",
            root.display()
        )));
    }
    Ok((name, true, out))
}

fn walk(dir: &Path, prefix: &mut Vec<String>, out: &mut Vec<InputFile>) -> Result<(), CreateError> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(io_err(dir))?
        .collect::<Result<_, _>>()
        .map_err(io_err(dir))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let p = e.path();
        let ft = e.file_type().map_err(io_err(&p))?;
        let name = e.file_name().into_string().map_err(|n| {
            CreateError::Invalid(format!(
                "file name {:?} in {} is not UTF-8; rename it",
                n,
                dir.display()
            ))
        })?;
        if ft.is_dir() {
            prefix.push(name);
            walk(&p, prefix, out)?;
            prefix.pop();
        } else if ft.is_file() {
            let length = e.metadata().map_err(io_err(&p))?.len();
            let mut path = prefix.clone();
            path.push(name);
            out.push(InputFile {
                disk: p,
                path,
                length,
            });
        } else {
            tracing::warn!("skipping {} (not a regular file or directory)", p.display());
        }
    }
    Ok(())
}

/// Creates a torrent for `root`. `progress` counts bytes hashed.
pub fn create_torrent(
    root: &Path,
    opts: &CreateOptions,
    progress: &AtomicU64,
) -> Result<Metainfo, CreateError> {
    let (name, multi, files) = collect_files(root)?;
    let total: u64 = files.iter().map(|f| f.length).sum();
    if total == 0 {
        return Err(CreateError::Invalid(
            "nothing to hash: every file is empty".into(),
        ));
    }
    let piece_length = opts
        .piece_length
        .unwrap_or_else(|| auto_piece_length(total));
    if !piece_length.is_power_of_two() || !(BLOCK..=1 << 28).contains(&piece_length) {
        return Err(CreateError::Invalid(format!(
            "piece length {piece_length} must be a power of two between 16 KiB and 256 MiB"
        )));
    }
    let v1 = opts.kind != TorrentKind::V2;
    let v2 = opts.kind != TorrentKind::V1;

    // Lay out the piece space: contiguous for v1, piece-aligned (pads) for v2 and hybrid.
    let mut extents = Vec::new();
    let mut pads = Vec::new(); // (after file index, pad length) for the v1 file list
    let mut pos = 0u64;
    let mut file_start = Vec::with_capacity(files.len());
    for (i, f) in files.iter().enumerate() {
        file_start.push(pos);
        if f.length > 0 {
            extents.push(Extent {
                start: pos,
                len: f.length,
                file: Some(i),
            });
            pos += f.length;
        }
        let rem = pos % piece_length;
        if v2 && rem != 0 && i + 1 < files.len() {
            let pad = piece_length - rem;
            extents.push(Extent {
                start: pos,
                len: pad,
                file: None,
            });
            pads.push((i, pad));
            pos += pad;
        }
    }
    let space = pos;
    let n_pieces = space.div_ceil(piece_length) as usize;

    let handles: Vec<File> = files
        .iter()
        .map(|f| File::open(&f.disk).map_err(io_err(&f.disk)))
        .collect::<Result<_, _>>()?;

    // Hash every piece; each worker reuses one piece-sized buffer.
    let results: Vec<([u8; 20], Hash32)> = (0..n_pieces)
        .into_par_iter()
        .map_init(
            || vec![0u8; piece_length as usize],
            |buf, p| -> Result<([u8; 20], Hash32), CreateError> {
                let start = p as u64 * piece_length;
                let end = (start + piece_length).min(space);
                let len = (end - start) as usize;
                let buf = &mut buf[..len];
                let mut first_file = None;
                let mut data_len = 0usize;
                let mut i = extents.partition_point(|e| e.start + e.len <= start);
                while i < extents.len() && extents[i].start < end {
                    let e = extents[i];
                    let s = e.start.max(start);
                    let t = (e.start + e.len).min(end);
                    let dst = &mut buf[(s - start) as usize..(t - start) as usize];
                    match e.file {
                        Some(fi) => {
                            let f = &files[fi];
                            handles[fi].read_exact_at(dst, s - e.start).map_err(|err| {
                                CreateError::Io {
                                    path: f.disk.clone(),
                                    source: if err.kind() == std::io::ErrorKind::UnexpectedEof {
                                        std::io::Error::other("file shrank while being hashed")
                                    } else {
                                        err
                                    },
                                }
                            })?;
                            first_file.get_or_insert(fi);
                            data_len = (t - start) as usize;
                        }
                        None => dst.fill(0),
                    }
                    i += 1;
                }
                progress.fetch_add(len as u64, Ordering::Relaxed);
                let sha1 = if v1 {
                    Sha1::digest(&buf[..]).into()
                } else {
                    [0u8; 20]
                };
                let sub = match (v2, first_file) {
                    (true, Some(fi)) => {
                        let leaves: Vec<Hash32> = buf[..data_len]
                            .chunks(BLOCK as usize)
                            .map(merkle::sha256)
                            .collect();
                        merkle::piece_subtree(
                            &leaves,
                            piece_length,
                            files[fi].length > piece_length,
                        )
                    }
                    _ => [0u8; 32],
                };
                Ok((sha1, sub))
            },
        )
        .collect::<Result<_, _>>()?;

    // A file that changed size while we read it would make a torrent that matches nothing.
    for f in &files {
        let now = std::fs::metadata(&f.disk).map_err(io_err(&f.disk))?.len();
        if now != f.length {
            return Err(CreateError::Invalid(format!(
                "{} changed size while being hashed; try again when it is complete",
                f.disk.display()
            )));
        }
    }

    let mut info: BTreeMap<Vec<u8>, OwnedValue> = BTreeMap::new();
    info.insert(b"name".to_vec(), OwnedValue::bytes(name.as_bytes()));
    info.insert(
        b"piece length".to_vec(),
        OwnedValue::Int(piece_length as i64),
    );
    if opts.private {
        info.insert(b"private".to_vec(), OwnedValue::Int(1));
    }
    let mut piece_layers = BTreeMap::new();
    if v1 {
        let pieces: Vec<u8> = results.iter().flat_map(|r| r.0).collect();
        info.insert(b"pieces".to_vec(), OwnedValue::Bytes(pieces));
        if multi {
            let mut list = Vec::new();
            let mut pad_iter = pads.iter().peekable();
            for (i, f) in files.iter().enumerate() {
                list.push(OwnedValue::dict([
                    ("length", OwnedValue::Int(f.length as i64)),
                    (
                        "path",
                        OwnedValue::List(
                            f.path
                                .iter()
                                .map(|c| OwnedValue::bytes(c.as_bytes()))
                                .collect(),
                        ),
                    ),
                ]));
                if let Some(&(_, pad)) = pad_iter.next_if(|(fi, _)| *fi == i) {
                    list.push(OwnedValue::dict([
                        ("attr", OwnedValue::bytes("p")),
                        ("length", OwnedValue::Int(pad as i64)),
                        (
                            "path",
                            OwnedValue::List(vec![
                                OwnedValue::bytes(".pad"),
                                OwnedValue::bytes(pad.to_string()),
                            ]),
                        ),
                    ]));
                }
            }
            info.insert(b"files".to_vec(), OwnedValue::List(list));
        } else {
            info.insert(b"length".to_vec(), OwnedValue::Int(total as i64));
        }
    }
    if v2 {
        info.insert(b"meta version".to_vec(), OwnedValue::Int(2));
        let mut tree = OwnedValue::Dict(BTreeMap::new());
        for (i, f) in files.iter().enumerate() {
            let mut leaf = BTreeMap::new();
            leaf.insert(b"length".to_vec(), OwnedValue::Int(f.length as i64));
            if f.length > 0 {
                let first = (file_start[i] / piece_length) as usize;
                let count = f.length.div_ceil(piece_length) as usize;
                let layer: Vec<Hash32> =
                    results[first..first + count].iter().map(|r| r.1).collect();
                let root = if count == 1 {
                    layer[0]
                } else {
                    let r = merkle::root_from_piece_layer(&layer, piece_length);
                    piece_layers.insert(r, layer);
                    r
                };
                leaf.insert(b"pieces root".to_vec(), OwnedValue::bytes(root.to_vec()));
            }
            let path: Vec<&str> = if multi {
                f.path.iter().map(String::as_str).collect()
            } else {
                vec![name.as_str()]
            };
            insert_tree(&mut tree, &path, OwnedValue::Dict(leaf));
        }
        info.insert(b"file tree".to_vec(), tree);
    }
    let info_bytes = OwnedValue::Dict(info).encode();

    let mut m = Metainfo::from_info_bytes(&info_bytes)?;
    m.piece_layers = piece_layers;
    m.trackers = opts.trackers.iter().map(|t| vec![t.clone()]).collect();
    m.url_list = opts.web_seeds.clone();
    m.http_seeds = opts.http_seeds.clone();
    m.comment = opts.comment.clone();
    m.created_by = opts.created_by.clone();
    m.creation_date = opts.creation_date;
    // Re-parse the finished file so what we write is exactly what a reader will accept.
    Ok(Metainfo::from_bytes(&m.to_torrent_bytes())?)
}

fn insert_tree(tree: &mut OwnedValue, path: &[&str], leaf: OwnedValue) {
    let OwnedValue::Dict(d) = tree else {
        unreachable!("file tree nodes are dictionaries")
    };
    let node = d
        .entry(path[0].as_bytes().to_vec())
        .or_insert_with(|| OwnedValue::Dict(BTreeMap::new()));
    if path.len() == 1 {
        if let OwnedValue::Dict(n) = node {
            n.insert(Vec::new(), leaf);
        }
    } else {
        insert_tree(node, &path[1..], leaf);
    }
}
