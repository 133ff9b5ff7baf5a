//! The local half of shares: keys in the data dir, `publish` (folder → signed version), versions,
//! `export` (version → folder), and the share-aware parts of `verify` and `gc`.

use crate::file::FileDigest;
use crate::hash::{node_text, XetHash};
use crate::head::{share_id, share_id_hex, Head, HeadError, HeadValue, ShareId};
use crate::listing::{self, Entry, Kind, ListingError};
use crate::tree::{self, NodeList, TreeError};
use ccbt_cas::{CasError, GcReport, Store, VersionBatch};
use ccbt_core::bencode::{self, OwnedValue};
use ed25519_dalek::SigningKey;
use rayon::prelude::*;
use std::collections::HashSet;
use std::fs::File;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// Files at least this big are chunked with all cores, one at a time; smaller ones in parallel.
const BIG_FILE: u64 = 8 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ShareError {
    #[error(transparent)]
    Cas(#[from] CasError),
    #[error(transparent)]
    Tree(#[from] TreeError),
    #[error(transparent)]
    Listing(#[from] ListingError),
    #[error(transparent)]
    Head(#[from] HeadError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("unknown share {0}: it is not in this data dir")]
    UnknownShare(String),
    #[error("share {0} has no version {1}")]
    NoVersion(String, u64),
    #[error(
        "this data dir does not hold the private key of share {0}; only its owner can publish"
    )]
    NotOwner(String),
}

pub type Result<T> = std::result::Result<T, ShareError>;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ShareError + '_ {
    move |source| ShareError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What the store remembers about a share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareRecord {
    pub public_key: [u8; 32],
    /// Newest version held locally.
    pub seq: u64,
    pub owner: bool,
    /// A writer's feed of another share (its versions, kept under the feed id), not a share.
    pub of: Option<ShareId>,
}

impl ShareRecord {
    pub fn encode(&self) -> Vec<u8> {
        let mut d = vec![
            ("owner", OwnedValue::Int(self.owner as i64)),
            ("pk", OwnedValue::bytes(self.public_key.to_vec())),
            ("seq", OwnedValue::Int(self.seq as i64)),
        ];
        if let Some(of) = self.of {
            d.push(("of", OwnedValue::bytes(of.to_vec())));
        }
        OwnedValue::dict(d).encode()
    }

    pub fn decode(b: &[u8]) -> Result<ShareRecord> {
        let bad = || ShareError::Cas(CasError::Corrupt("share record".into()));
        let v = bencode::decode(b).map_err(|_| bad())?;
        let d = v.as_dict().ok_or_else(bad)?;
        Ok(ShareRecord {
            public_key: d
                .get(b"pk")
                .and_then(|x| x.as_bytes())
                .and_then(|x| x.try_into().ok())
                .ok_or_else(bad)?,
            seq: d.get(b"seq").and_then(|x| x.as_int()).ok_or_else(bad)? as u64,
            owner: d.get(b"owner").and_then(|x| x.as_int()).ok_or_else(bad)? != 0,
            of: match d.get(b"of") {
                None => None,
                Some(x) => Some(
                    x.as_bytes()
                        .and_then(|b| b.try_into().ok())
                        .ok_or_else(bad)?,
                ),
            },
        })
    }
}

/// How `publish` picks the share.
#[derive(Debug, Clone, Default)]
pub enum ShareChoice {
    /// The share this folder was last published as, or a new one.
    #[default]
    Auto,
    New,
    Existing(ShareId),
}

#[derive(Debug, Clone)]
pub struct PublishReport {
    pub share: ShareId,
    pub seq: u64,
    pub files: u64,
    pub dirs: u64,
    pub links: u64,
    pub logical_bytes: u64,
    pub new_chunk_bytes: u64,
    pub new_node_bytes: u64,
    pub new_chunks: u64,
    pub created_share: bool,
    pub listing_root: XetHash,
    pub warnings: Vec<String>,
}

/// One version as listed by `versions`.
#[derive(Debug, Clone)]
pub struct VersionInfo {
    pub seq: u64,
    pub time: i64,
    pub size: u64,
    pub root: XetHash,
    /// The signed head record (BEP 44 item) as stored.
    pub head: Vec<u8>,
}

/// Local shares on top of a store and a keys directory.
pub struct Shares {
    pub store: Store,
    keys_dir: PathBuf,
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn mtime_of(m: &std::fs::Metadata) -> i64 {
    m.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Size of a stored tree from its root (node: sum of children; chunk: its length).
fn stored_tree_size(store: &Store, root: XetHash) -> Result<u64> {
    if let Some(text) = store.get_node(&root.0)? {
        return Ok(tree::parse_node(root, &text)?.iter().map(|c| c.size).sum());
    }
    store
        .chunk_len(&root.0)?
        .map(u64::from)
        .ok_or_else(|| TreeError::Missing(root).into())
}

impl Shares {
    /// Opens `<data_dir>/cas` and `<data_dir>/keys`.
    pub fn open(data_dir: &Path) -> Result<Shares> {
        std::fs::create_dir_all(data_dir).map_err(io(data_dir))?;
        let store = Store::open(&data_dir.join("cas"))?;
        let keys_dir = data_dir.join("keys");
        std::fs::create_dir_all(&keys_dir).map_err(io(&keys_dir))?;
        std::fs::set_permissions(&keys_dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io(&keys_dir))?;
        Ok(Shares { store, keys_dir })
    }

    /// Opens the data dir for reading, also while a node holds it (see
    /// [`Store::open_read_only`]).
    pub fn open_read_only(data_dir: &Path) -> Result<Shares> {
        let store = Store::open_read_only(&data_dir.join("cas"))?;
        Ok(Shares {
            store,
            keys_dir: data_dir.join("keys"),
        })
    }

    fn key_path(&self, id: &ShareId) -> PathBuf {
        self.keys_dir.join(format!("{}.key", share_id_hex(id)))
    }

    /// The share's private key, if this data dir owns it.
    pub fn signing_key(&self, id: &ShareId) -> Result<Option<SigningKey>> {
        let p = self.key_path(id);
        let text = match std::fs::read_to_string(&p) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&p)(e)),
        };
        let seed: [u8; 32] = ccbt_core::encoding::hex_array(text.trim())
            .ok_or_else(|| ShareError::Invalid(format!("key file {} is damaged", p.display())))?;
        let k = SigningKey::from_bytes(&seed);
        if share_id(&k.verifying_key().to_bytes()) != *id {
            return Err(ShareError::Invalid(format!(
                "key file {} holds another share's key",
                p.display()
            )));
        }
        Ok(Some(k))
    }

    fn new_key(&self) -> Result<(SigningKey, ShareId)> {
        let k = new_key_file(&|k| self.key_path(&share_id(&k.verifying_key().to_bytes())))?;
        let id = share_id(&k.verifying_key().to_bytes());
        Ok((k, id))
    }

    pub fn record(&self, id: &ShareId) -> Result<Option<ShareRecord>> {
        self.store
            .get_share(id)?
            .map(|b| ShareRecord::decode(&b))
            .transpose()
    }

    /// The shares held here (writers' feeds left out).
    pub fn list(&self) -> Result<Vec<(ShareId, ShareRecord)>> {
        let mut v = self.all_records()?;
        v.retain(|(_, r)| r.of.is_none());
        Ok(v)
    }

    /// Shares and writers' feeds.
    pub fn all_records(&self) -> Result<Vec<(ShareId, ShareRecord)>> {
        self.store
            .shares()?
            .into_iter()
            .map(|(id, b)| Ok((id, ShareRecord::decode(&b)?)))
            .collect()
    }

    /// The writers' feeds of `share` held here: newest head of each.
    pub fn feeds(&self, share: &ShareId) -> Result<Vec<Head>> {
        let mut out = Vec::new();
        for (id, r) in self.all_records()? {
            if r.of == Some(*share) {
                out.push(self.head(&id, None)?);
            }
        }
        Ok(out)
    }

    /// This data dir's writer key (`ccbt keygen`), made when `create` and absent.
    pub fn writer_key(&self, create: bool) -> Result<Option<SigningKey>> {
        let p = self.keys_dir.join("writer.key");
        match std::fs::read_to_string(&p) {
            Ok(t) => {
                let seed: [u8; 32] = ccbt_core::encoding::hex_array(t.trim()).ok_or_else(|| {
                    ShareError::Invalid(format!("{} is not a hex ed25519 seed", p.display()))
                })?;
                Ok(Some(SigningKey::from_bytes(&seed)))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                Ok(Some(new_key_file(&|_| p.clone())?))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&p)(e)),
        }
    }

    pub fn head(&self, id: &ShareId, seq: Option<u64>) -> Result<Head> {
        let rec = self
            .record(id)?
            .ok_or_else(|| ShareError::UnknownShare(share_id_hex(id)))?;
        let seq = seq.unwrap_or(rec.seq);
        let b = self
            .store
            .get_head(id, seq)?
            .ok_or_else(|| ShareError::NoVersion(share_id_hex(id), seq))?;
        let h = Head::decode(&b)?;
        match rec.of {
            None => h.verify_for(id)?,
            // A writer's feed: its key and salt make the id.
            Some(share) if h.writer_of() == Some(share) && &h.feed_id() == id => h.verify()?,
            Some(_) => return Err(HeadError::WrongKey.into()),
        }
        Ok(h)
    }

    pub fn versions(&self, id: &ShareId) -> Result<Vec<VersionInfo>> {
        if self.record(id)?.is_none() {
            return Err(ShareError::UnknownShare(share_id_hex(id)));
        }
        self.store
            .heads(id)?
            .into_iter()
            .map(|(_, b)| {
                let h = Head::decode(&b)?;
                Ok(VersionInfo {
                    seq: h.seq,
                    time: h.value.time,
                    size: h.value.size,
                    root: XetHash(h.value.root),
                    head: b.clone(),
                })
            })
            .collect()
    }

    /// Whether every node and chunk of the file `root` is in the store (it can be served whole).
    pub fn file_is_whole(&self, root: [u8; 32]) -> bool {
        let mut stack = vec![XetHash(root)];
        while let Some(h) = stack.pop() {
            match self.store.get_node(&h.0) {
                Ok(Some(text)) => match tree::parse_node(h, &text) {
                    Ok(kids) => stack.extend(kids.iter().map(|k| k.hash)),
                    Err(_) => return false,
                },
                Ok(None) => {
                    if !matches!(self.store.chunk_len(&h.0), Ok(Some(_))) {
                        return false;
                    }
                }
                Err(_) => return false,
            }
        }
        true
    }

    /// The entries of a version.
    pub(crate) fn listing_size(&self, head: &Head) -> Result<u64> {
        stored_tree_size(&self.store, XetHash(head.value.root))
    }

    pub fn listing(&self, head: &Head) -> Result<Vec<Entry>> {
        let root = XetHash(head.value.root);
        let size = stored_tree_size(&self.store, root)?;
        let bytes = tree::read_to_vec(&self.store, root, size)?;
        Ok(listing::decode(&bytes)?)
    }

    /// Commits a verified head with the Merkle nodes of its version in one batch (docs/invariants.md: a
    /// crash never leaves a head pointing at missing data), and moves the share's record to it when
    /// it is newer. The one place a version enters the store: `publish`, the owner's mount and the
    /// sync engine all come through here.
    pub fn commit_head(
        &self,
        id: &ShareId,
        head: &Head,
        nodes: NodeList,
        binding: Option<Vec<u8>>,
    ) -> Result<()> {
        let mut batch = VersionBatch::default();
        for (h, text) in nodes {
            batch.node(h, text);
        }
        batch.head(*id, head.seq, head.encode());
        let prev = self.record(id)?;
        if prev.as_ref().is_none_or(|r| r.seq < head.seq) {
            // Ownership is this node's key file, not the head's.
            let owner = self.signing_key(id)?.is_some();
            batch.share(
                *id,
                ShareRecord {
                    public_key: head.public_key,
                    seq: head.seq,
                    owner,
                    of: head.writer_of(),
                }
                .encode(),
            );
        }
        if let Some(b) = binding {
            batch.binding(b, *id);
        }
        self.store.commit_version(batch)?;
        Ok(())
    }

    /// Signs the next version of an owned share (its listing is stored, its nodes are in `nodes`)
    /// and commits it.
    pub fn commit_next(
        &self,
        key: &SigningKey,
        id: &ShareId,
        value: HeadValue,
        nodes: NodeList,
    ) -> Result<Head> {
        let seq = self.record(id)?.map_or(0, |r| r.seq) + 1;
        let head = Head::sign(key, seq, value);
        self.commit_head(id, &head, nodes, None)?;
        Ok(head)
    }

    /// Publishes `dir` as the next version of a share.
    pub fn publish(
        &self,
        dir: &Path,
        choice: ShareChoice,
        progress: &AtomicU64,
    ) -> Result<PublishReport> {
        self.publish_with_ih(dir, choice, progress, None)
    }

    /// As [`Shares::publish`], with the v1 info-hash of the same folder as a classic torrent in
    /// the head (BEP 46 `ih`).
    pub fn publish_with_ih(
        &self,
        dir: &Path,
        choice: ShareChoice,
        progress: &AtomicU64,
        ih: Option<[u8; 20]>,
    ) -> Result<PublishReport> {
        let canon = std::fs::canonicalize(dir).map_err(io(dir))?;
        if !std::fs::metadata(&canon).map_err(io(&canon))?.is_dir() {
            return Err(ShareError::Invalid(format!(
                "{} is not a directory",
                dir.display()
            )));
        }
        let binding_key = canon.as_os_str().as_bytes().to_vec();
        let existing = match &choice {
            ShareChoice::New => None,
            ShareChoice::Existing(id) => Some(*id),
            ShareChoice::Auto => self.store.binding(&binding_key)?,
        };
        // Walk and store everything before touching keys, so a failed walk leaves no new share.
        let stats_before = self.store.stats()?;
        let mut warnings = Vec::new();
        let mut scanned = Vec::new();
        walk(&canon, &canon, &mut scanned, &mut warnings)?;
        let mut nodes: NodeList = Vec::new();
        let entries = self.store_entries(&canon, scanned, progress, &mut nodes)?;

        let (key, id, created, prev_seq) = match existing {
            Some(id) => {
                let key = self
                    .signing_key(&id)?
                    .ok_or_else(|| ShareError::NotOwner(share_id_hex(&id)))?;
                let prev = self.record(&id)?.map(|r| r.seq).unwrap_or(0);
                (key, id, false, prev)
            }
            None => {
                let (k, id) = self.new_key()?;
                (k, id, true, 0)
            }
        };
        let logical: u64 = entries.iter().map(|e| e.size).sum();
        let seq = prev_seq + 1;
        let time = now();
        let (stamped, writers, base) = self.owner_next(&id, entries.clone(), time)?;
        let (listing_root, _) = tree::store_listing(&self.store, &stamped, &mut nodes)?;
        let head = Head::sign(
            &key,
            seq,
            HeadValue {
                ih,
                writers,
                base,
                ..HeadValue::new(listing_root.0, logical, time)
            },
        );
        self.commit_head(&id, &head, nodes, Some(binding_key))?;
        let after = self.store.stats()?;
        let count = |k: Kind| entries.iter().filter(|e| e.kind == k).count() as u64;
        Ok(PublishReport {
            share: id,
            seq,
            files: count(Kind::File),
            dirs: count(Kind::Dir),
            links: count(Kind::Link),
            logical_bytes: logical,
            new_chunk_bytes: after.chunk_bytes - stats_before.chunk_bytes,
            new_node_bytes: after.node_bytes - stats_before.node_bytes,
            new_chunks: after.chunk_count - stats_before.chunk_count,
            created_share: created,
            listing_root,
            warnings,
        })
    }

    /// Stores file contents (big files one by one on all cores, small ones in parallel) and
    /// returns the listing entries in path-byte order.
    fn store_entries(
        &self,
        root: &Path,
        scanned: Vec<Scanned>,
        progress: &AtomicU64,
        nodes: &mut NodeList,
    ) -> Result<Vec<Entry>> {
        let mut entries: Vec<Entry> = Vec::with_capacity(scanned.len());
        let mut jobs_big = Vec::new();
        let mut jobs_small = Vec::new();
        for (i, s) in scanned.into_iter().enumerate() {
            if s.entry.kind == Kind::File && s.entry.size > 0 {
                if s.entry.size >= BIG_FILE {
                    jobs_big.push(i);
                } else {
                    jobs_small.push(i);
                }
            }
            entries.push(s.entry);
        }
        let store_one = |e: &Entry, parallel: bool, nodes: &mut NodeList| -> Result<FileDigest> {
            let p = root.join(&e.path);
            let f = File::open(&p).map_err(io(&p))?;
            let d = if parallel {
                tree::store_file(&self.store, &f, progress, nodes)?
            } else {
                tree::store_reader(&self.store, f, progress, nodes)?
            };
            let m = std::fs::symlink_metadata(&p).map_err(io(&p))?;
            if d.size != e.size || m.len() != e.size || mtime_of(&m) != e.mtime {
                return Err(ShareError::Invalid(format!(
                    "{} changed while it was being read; publish again when it is quiet",
                    p.display()
                )));
            }
            Ok(d)
        };
        for i in jobs_big {
            let d = store_one(&entries[i], true, nodes)?;
            entries[i].root = d.merkle_root.0;
        }
        let shared_nodes = Mutex::new(std::mem::take(nodes));
        let results: Vec<(usize, Result<FileDigest>)> = jobs_small
            .par_iter()
            .map(|&i| {
                let mut local = Vec::new();
                let r = store_one(&entries[i], false, &mut local);
                shared_nodes.lock().unwrap().extend(local);
                (i, r)
            })
            .collect();
        *nodes = shared_nodes.into_inner().unwrap();
        for (i, r) in results {
            entries[i].root = r?.merkle_root.0;
        }
        entries.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
        Ok(entries)
    }

    /// Writes version `seq` (default: newest) of a share into `dest`, which must not exist or be
    /// an empty directory. Works through a temporary directory renamed into place at the end.
    pub fn export(&self, id: &ShareId, seq: Option<u64>, dest: &Path) -> Result<(Head, u64)> {
        let head = self.head(id, seq)?;
        // The newest of a share with writers: the merged view of what is held here.
        let entries = match seq {
            None if !head.value.writers.is_empty() => self.view(id)?,
            _ => self.listing(&head)?,
        };
        if dest.exists() {
            let empty = std::fs::read_dir(dest).map_err(io(dest))?.next().is_none();
            if !empty {
                return Err(ShareError::Invalid(format!(
                    "{} exists and is not empty; choose a new directory",
                    dest.display()
                )));
            }
        }
        let parent = dest
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let tmp = parent.join(format!(
            ".{}.ccbt-export-{}",
            dest.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
        let res = self.write_entries(&entries, &tmp);
        if let Err(e) = res {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        if dest.exists() {
            std::fs::remove_dir(dest).map_err(io(dest))?;
        }
        std::fs::rename(&tmp, dest).map_err(io(dest))?;
        let bytes = entries.iter().map(|e| e.size).sum();
        Ok((head, bytes))
    }

    fn write_entries(&self, entries: &[Entry], base: &Path) -> Result<()> {
        let links: HashSet<&str> = entries
            .iter()
            .filter(|e| e.kind == Kind::Link)
            .map(|e| e.path.as_str())
            .collect();
        let mut dir_times = Vec::new();
        for e in entries {
            // Never write through a symlink the listing itself created.
            let mut anc = e.path.as_str();
            while let Some((parent, _)) = anc.rsplit_once('/') {
                if links.contains(parent) {
                    return Err(ListingError::UnsafePath(e.path.clone()).into());
                }
                anc = parent;
            }
            let p = base.join(&e.path);
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent).map_err(io(parent))?;
            }
            match e.kind {
                Kind::Dir => {
                    std::fs::create_dir_all(&p).map_err(io(&p))?;
                    dir_times.push((p, e.mtime));
                }
                Kind::Link => {
                    std::os::unix::fs::symlink(e.target.as_deref().unwrap_or(""), &p)
                        .map_err(io(&p))?;
                }
                Kind::File => {
                    let mut f = std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .custom_flags(libc::O_NOFOLLOW)
                        .mode(0o600)
                        .open(&p)
                        .map_err(io(&p))?;
                    tree::read_into(&self.store, XetHash(e.root), e.size, &mut f, true)?;
                    f.set_len(e.size).map_err(io(&p))?;
                    f.set_permissions(std::fs::Permissions::from_mode(e.perm()))
                        .map_err(io(&p))?;
                    set_mtime(&f, e.mtime).map_err(io(&p))?;
                }
            }
        }
        // Directory mtimes last: writing their contents changed them.
        for (p, t) in dir_times.into_iter().rev() {
            if let Ok(f) = File::open(&p) {
                let _ = set_mtime(&f, t);
            }
        }
        Ok(())
    }

    /// Pins a version so gc keeps it.
    pub fn pin(&self, id: &ShareId, seq: u64) -> Result<()> {
        self.head(id, Some(seq))?;
        Ok(self.store.pin(id, seq)?)
    }

    pub fn unpin(&self, id: &ShareId, seq: u64) -> Result<bool> {
        Ok(self.store.unpin(id, seq)?)
    }

    /// Marks everything a version reaches.
    fn mark_version(&self, head: &Head, reach: &mut HashSet<[u8; 32]>) -> Result<()> {
        let root = XetHash(head.value.root);
        let size = stored_tree_size(&self.store, root)?;
        let mark_tree = |r: XetHash, s: u64, reach: &mut HashSet<[u8; 32]>| {
            let mut leaves = Vec::new();
            let mut nodes = Vec::new();
            let res = tree::walk_tree(
                &self.store,
                r,
                s,
                &mut |h, _| {
                    leaves.push(h.0);
                    Ok(())
                },
                &mut |h| nodes.push(h.0),
            );
            reach.extend(leaves);
            reach.extend(nodes);
            res
        };
        mark_tree(root, size, reach)?;
        for e in self.listing(head)? {
            if e.kind == Kind::File && e.size > 0 {
                mark_tree(XetHash(e.root), e.size, reach)?;
            }
        }
        Ok(())
    }

    /// Keeps the newest `keep_versions` versions of each share plus pinned ones; removes the rest
    /// and every chunk and node nothing kept reaches.
    pub fn gc(&self, keep_versions: u64) -> Result<GcReport> {
        let pins: HashSet<(ShareId, u64)> = self.store.pins()?.into_iter().collect();
        let mut keep = HashSet::new();
        let mut reach = HashSet::new();
        for (id, rec) in self.all_records()? {
            let heads = self.store.heads(&id)?;
            let n = heads.len();
            for (i, (seq, b)) in heads.into_iter().enumerate() {
                if i + (keep_versions as usize) >= n || pins.contains(&(id, seq)) {
                    keep.insert((id, seq));
                    match self.mark_version(&Head::decode(&b)?, &mut reach) {
                        // Another writer's version is kept as far as its data is here (a
                        // mount reads on demand).
                        Err(e) if rec.of.is_some() => {
                            tracing::debug!("writer feed {}: {e}", share_id_hex(&id))
                        }
                        r => r?,
                    }
                }
            }
        }
        Ok(self.store.sweep(&keep, &reach)?)
    }

    /// Re-hashes every chunk and node, and checks every stored version is complete.
    pub fn verify(&self, progress: &dyn Fn(u64)) -> Result<ccbt_cas::VerifyReport> {
        let mut report = self.store.verify(
            &|d| crate::hash::chunk_hash(d).0,
            &|text| {
                // A node's hash is over its text; reuse the parser's exact rule.
                let s = std::str::from_utf8(text).unwrap_or("");
                let children: Vec<crate::hash::MerkleEntry> = s
                    .split_terminator('\n')
                    .filter_map(|l| {
                        let (h, z) = l.split_once(" : ")?;
                        Some(crate::hash::MerkleEntry {
                            hash: XetHash::from_hex(h)?,
                            size: z.parse().ok()?,
                        })
                    })
                    .collect();
                if node_text(&children).as_bytes() != text {
                    return [0xff; 32]; // unparseable text can never match its key
                }
                crate::hash::internal_node(&children).hash.0
            },
            progress,
        )?;
        for (id, rec) in self.list()? {
            for (seq, b) in self.store.heads(&id)? {
                let check = Head::decode(&b).map_err(ShareError::from).and_then(|h| {
                    match rec.of {
                        None => h.verify_for(&id)?,
                        Some(_) => h.verify()?,
                    }
                    let mut reach = HashSet::new();
                    self.mark_version(&h, &mut reach)?;
                    for h in reach {
                        if !self.store.has_node(&h)? && !self.store.has_chunk(&h)? {
                            return Err(TreeError::Missing(XetHash(h)).into());
                        }
                    }
                    Ok(())
                });
                if let Err(e) = check {
                    report
                        .damage
                        .push(format!("share {} version {seq}: {e}", share_id_hex(&id)));
                }
            }
        }
        Ok(report)
    }

    /// Bytes a full copy of every stored version would take (for the dedup ratio).
    pub fn logical_bytes(&self) -> Result<u64> {
        let mut total = 0;
        for (id, _) in self.list()? {
            for (_, b) in self.store.heads(&id)? {
                total += Head::decode(&b)?.value.size;
            }
        }
        Ok(total)
    }
}

/// A new random ed25519 key, its seed written (hex, mode 0600, durably) at `path(key)`.
fn new_key_file(path: &dyn Fn(&SigningKey) -> PathBuf) -> Result<SigningKey> {
    let mut seed = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut seed);
    let k = SigningKey::from_bytes(&seed);
    let p = path(&k);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&p)
        .map_err(io(&p))?;
    writeln!(f, "{}", ccbt_core::encoding::to_hex(&seed)).map_err(io(&p))?;
    f.sync_all().map_err(io(&p))?;
    Ok(k)
}

fn set_mtime(f: &File, secs: i64) -> std::io::Result<()> {
    let t = if secs >= 0 {
        UNIX_EPOCH + std::time::Duration::from_secs(secs as u64)
    } else {
        UNIX_EPOCH - std::time::Duration::from_secs(secs.unsigned_abs())
    };
    f.set_times(std::fs::FileTimes::new().set_modified(t))
}

/// An entry found by the walk, before its content is stored.
struct Scanned {
    entry: Entry,
}

fn walk(base: &Path, dir: &Path, out: &mut Vec<Scanned>, warnings: &mut Vec<String>) -> Result<()> {
    let rd = std::fs::read_dir(dir).map_err(io(dir))?;
    for item in rd {
        let item = item.map_err(io(dir))?;
        let p = item.path();
        let rel = p.strip_prefix(base).expect("under base");
        let rel = rel.to_str().ok_or_else(|| {
            ShareError::Invalid(format!(
                "file name {:?} is not UTF-8; rename it (shares use UTF-8 paths)",
                p.display()
            ))
        })?;
        let m = std::fs::symlink_metadata(&p).map_err(io(&p))?;
        let ft = m.file_type();
        let mut entry = Entry {
            path: rel.to_string(),
            kind: Kind::File,
            size: 0,
            root: [0; 32],
            executable: false,
            mtime: mtime_of(&m),
            target: None,
            mode: None,
            stamp: None,
        };
        if ft.is_dir() {
            entry.kind = Kind::Dir;
            out.push(Scanned { entry });
            walk(base, &p, out, warnings)?;
        } else if ft.is_symlink() {
            let t = std::fs::read_link(&p).map_err(io(&p))?;
            let t = t.to_str().ok_or_else(|| {
                ShareError::Invalid(format!("symlink {} has a non-UTF-8 target", p.display()))
            })?;
            entry.kind = Kind::Link;
            entry.target = Some(t.to_string());
            out.push(Scanned { entry });
        } else if ft.is_file() {
            entry.size = m.len();
            entry.executable = m.permissions().mode() & 0o111 != 0;
            out.push(Scanned { entry });
        } else {
            let w = format!(
                "skipping {} (not a file, directory or symlink)",
                p.display()
            );
            tracing::warn!("{w}");
            warnings.push(w);
        }
    }
    Ok(())
}
